"""`invoke ci`: what the Ascend build-host workflow calls."""

from __future__ import annotations

from invoke import task


@task(
    help={
        "recipes": "comma-separated recipes (default: all)",
        "limit": "only the first N images of each dataset (pull requests); 0: all",
        "sample": "use generated samples instead of the datasets (machines without data)",
        "artifacts": "artifact folder (default: <artifacts>/ci)",
        "runner": "auto | host | docker | venv",
        "backend": "auto | torchscript | onnxruntime | aie | om",
        "devices": "NPU ids, e.g. 0 or 0,1,2,3",
    }
)
def ci(
    c, recipes=None, limit=0, sample=False, artifacts=None, runner=None, backend=None, devices=None
):
    """Run every recipe and fail when an accuracy falls below published minus tolerance."""
    from zoobox.core.errors import main_guard
    from zoobox.jobs.ci import run_ci
    from zoobox.pipeline.configure import settings_from

    main_guard(
        lambda: run_ci(
            settings_from(c.config),
            recipes=recipes,
            limit=int(limit),
            sample=sample,
            artifacts=artifacts,
            runner=runner,
            backend=backend,
            devices=devices,
        )
    )
