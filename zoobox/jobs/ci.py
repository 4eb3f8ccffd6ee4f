"""`invoke ci`: every recipe end to end, gated on the published numbers.

On an Ascend build host (the self-hosted workflow in .github/workflows/) it runs each
recipe on the real dataset -- a subset for pull requests, all of it on a schedule -- and
fails when an accuracy metric falls below its published value minus the recipe's
tolerance. On a machine with no dataset (`--sample`) it runs the same pipelines on
generated samples with whatever weights are cached (a random init otherwise): that
proves the stages run and agree with each other, not the accuracy.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from zoobox.core.artifacts import write_text_atomic
from zoobox.core.errors import UserError
from zoobox.core.recipe import load_recipe, recipe_names
from zoobox.core.text import table
from zoobox.jobs.datasets import make_sample
from zoobox.jobs.run_and_summarize import run_and_summarize
from zoobox.jobs.summary import HEADER, summary_rows
from zoobox.pipeline.configure import build_pipeline, flag_path, setting_path


def _recipes(names: str | None) -> list[str]:
    if not names:
        return recipe_names()
    chosen = [n.strip() for n in names.split(",") if n.strip()]
    for name in chosen:
        load_recipe(name)  # a UserError for an unknown one
    return chosen


def run_ci(
    settings: dict,
    recipes: str | None = None,
    limit: int = 0,
    sample: bool = False,
    artifacts=None,
    runner=None,
    backend=None,
    devices=None,
) -> int:
    """Run the recipes; print one table; return the number of failing metrics."""
    root = flag_path(artifacts) or (setting_path(settings["artifacts"]) / "ci")
    rows, failures, summaries = [], [], {}
    for name in _recipes(recipes):
        try:
            recipe = load_recipe(name)
        except UserError as error:  # one broken recipe fails the job, not the others
            print(f"error: {error}", file=sys.stderr)
            failures.append(f"{name} (broken recipe file)")
            continue
        data = None
        params = {"limit": limit or None}
        if sample:
            data = Path(root) / "samples" / recipe.dataset["name"]
            if not data.exists():
                make_sample(recipe.dataset["name"], str(data))
            params["allow_random"] = True
        pipeline = build_pipeline(
            settings,
            name,
            data=str(data) if data else None,
            artifacts=str(root),
            runner=runner,
            backend=backend,
            devices=devices,
            params=params,
        )
        _, summary = run_and_summarize(pipeline, show=False)
        summaries[name] = summary
        rows += summary_rows(summary)
        failures += [f"{name}.{r['metric']}" for r in summary["rows"] if r["status"] == "fail"]
    print()
    print(table(rows, HEADER))
    write_text_atomic(Path(root) / "ci-summary.json", json.dumps(summaries, indent=2) + "\n")
    if failures:
        raise UserError(f"below the published number minus its tolerance: {', '.join(failures)}")
    return 0
