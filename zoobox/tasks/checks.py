"""Top-level tasks: `doctor` and `demo`."""

from __future__ import annotations

from invoke import task


@task
def doctor(c):
    """Show what this machine offers (Docker, NPUs, driver) and what each recipe would use."""
    from zoobox.jobs.doctor import report
    from zoobox.run.session import settings_from

    print(report(settings_from(c.config)))


@task(
    help={
        "artifacts": "artifact folder (default: <artifacts>/demo)",
        "weights": "the official mobilenet0.25_Final.pth, if you have it",
        "force": "rerun every stage",
    }
)
def demo(c, artifacts=None, weights=None, force=False):
    """Run the whole RetinaFace pipeline on a generated WIDER FACE sample, on the CPU.

    Needs no dataset, no network and no NPU. Uses the official weights when cached or
    given, a seeded random initialisation otherwise (the report then says accuracy is
    not meaningful).
    """
    from zoobox.core.errors import main_guard
    from zoobox.jobs.demo import run_demo
    from zoobox.run.session import settings_from

    main_guard(
        lambda: run_demo(settings_from(c.config), artifacts=artifacts, weights=weights, force=force)
    )
