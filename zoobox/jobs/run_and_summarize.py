"""Run a recipe (or one stage and what it needs) and summarize it: every task ends here."""

from __future__ import annotations

import json

from zoobox.jobs.summary import render_summary
from zoobox.pipeline.configure import check_backend, check_dataset
from zoobox.pipeline.pipeline import Pipeline, RunResult


def run_and_summarize(
    pipeline: Pipeline, target: str | None = None, show: bool = True
) -> tuple[RunResult, dict | None]:
    """Check the backend's envs and the dataset, run, and print the report's table when the
    report stage ran.

    Returns the run's result and the report's summary.json (None when no report was made).
    """
    check_backend(pipeline, target)  # --dry too: a plan that cannot run is refused
    if not pipeline.options.dry:
        check_dataset(pipeline, target)
    result = pipeline.run(target)
    report = result.stage_dir("report")
    summary = None
    wanted = target in (None, "report") and "report" in pipeline.recipe.stage_names
    if wanted and not pipeline.options.dry and (report / "summary.json").is_file():
        summary = json.loads((report / "summary.json").read_text())
        if show:
            print()
            print(render_summary(report))
            print(f"\nreport: {report / 'report.md'}")
    return result, summary
