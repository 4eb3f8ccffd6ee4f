"""Inference sharded over several devices equals a single-device run (CPU "devices")."""

import json

import pytest

from zoobox.pipeline.configure import build_pipeline, settings_from


def _run(tmp_path, data, name, devices, dry=False):
    settings = settings_from({"zoobox": {"echo": False}})
    pipeline = build_pipeline(
        settings,
        "retinaface",
        data=str(data),
        artifacts=str(tmp_path / name),
        runner="host",
        backend="torchscript",
        devices=devices,
        params={"allow_random": True, "input_size": 320},
        dry=dry,
    )
    return pipeline.run()


def _predictions(folder):
    return {
        str(p.relative_to(folder)): p.read_text()
        for p in sorted((folder / "predictions").rglob("*.txt"))
    }


def test_the_plan_shards_infer_over_the_devices_and_nothing_else(tmp_path):
    """The quick part: with two devices the infer stage plans one --shard call per device
    (the stages that do not take shards plan one call), and nothing runs."""
    data = tmp_path / "wider"
    data.mkdir()
    plans = {plan.name: plan for plan in _run(tmp_path, data, "dry", "0,1", dry=True).plans}
    infer = plans["infer"].command
    assert "--shard 0/2" in infer and "--shard 1/2" in infer
    assert all("--shard" not in plan.command for name, plan in plans.items() if name != "infer")
    assert not (tmp_path / "dry" / "retinaface" / "infer").exists()


@pytest.mark.slow
def test_two_cpu_devices_give_the_single_device_results(tmp_path):
    from data_scripts.widerface.sample import make_sample

    data = tmp_path / "wider"
    make_sample(str(data), events=2, per_event=3)
    single = _run(tmp_path, data, "single", "0")
    sharded = _run(tmp_path, data, "sharded", "0,1")
    infer_single, infer_sharded = single.stage_dir("infer"), sharded.stage_dir("infer")
    assert len(_predictions(infer_single)) == 6
    assert _predictions(infer_sharded) == _predictions(infer_single)
    timing = json.loads((infer_sharded / "timing.json").read_text())
    assert timing["shards"] == 2 and timing["images"] == 6
    metrics = [
        json.loads((r.stage_dir("evaluate") / "metrics.json").read_text())["metrics"]
        for r in (single, sharded)
    ]
    assert metrics[0] == metrics[1]
    record = json.loads((infer_sharded / "stage.json").read_text())
    shard_0, shard_1, merge = record["command"]
    assert shard_0[shard_0.index("--shard") + 1] == "0/2"
    assert shard_1[shard_1.index("--shard") + 1] == "1/2"
    assert merge[1:3] == ["-m", "zoostage.shards"]
