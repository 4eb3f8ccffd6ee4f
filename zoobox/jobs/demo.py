"""The demo: RetinaFace end to end on a generated sample, host runner, CPU backend."""

from __future__ import annotations

from pathlib import Path

from zoobox.jobs.run import run_and_summarize
from zoobox.run.session import build_engine, flag_path, setting_path


def run_demo(settings: dict, artifacts=None, weights=None, force=False):
    from data_scripts.widerface.sample import make_sample

    root = flag_path(artifacts) or (setting_path(settings["artifacts"]) / "demo")
    data = Path(root) / "data" / "widerface"
    if not (data / "images").is_dir():
        print(f"demo: generating a WIDER FACE-layout sample in {data}")
        make_sample(str(data))
    engine = build_engine(
        settings,
        "retinaface",
        data=str(data),
        artifacts=str(root),
        runner="host",
        backend="torchscript",
        params={"weights": weights, "allow_random": True},
        force=("*",) if force else (),
    )
    return run_and_summarize(engine)[0]
