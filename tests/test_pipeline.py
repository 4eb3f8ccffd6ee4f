"""The pipeline on a toy recipe: skipping, reruns, atomic outputs, kills, the lock."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO
from zoobox.core.artifacts import RecipeLock
from zoobox.core.errors import UserError
from zoobox.core.fingerprint import code_fingerprint
from zoobox.core.recipe import load_recipe_file
from zoobox.pipeline.choice import Choice
from zoobox.pipeline.pipeline import Options, Pipeline
from zoobox.runners.host import HostRunner

TOY = REPO / "tests" / "toy" / "recipe.yaml"


def make_pipeline(tmp_path, force=(), dry=False, devices=(0,), **params):
    data = tmp_path / "data"
    if not data.exists():
        data.mkdir()
        (data / "file.txt").write_text("data")
    options = Options(
        artifacts=tmp_path / "art",
        cache=tmp_path / "cache",
        data=data,
        params=params,
        force=force,
        dry=dry,
    )
    return Pipeline(
        load_recipe_file(TOY),
        Choice("host", "torchscript", list(devices), "test"),
        HostRunner(),
        options,
    )


def actions(result):
    return {plan.name: plan.action for plan in result.plans}


def value(tmp_path, stage):
    return int((tmp_path / "art" / "toy" / stage / "value.txt").read_text())


def leftovers(tmp_path):
    return sorted(p.name for p in (tmp_path / "art" / "toy").glob(".*.tmp-*"))


def test_run_then_noop_rerun_skips_everything(tmp_path):
    first = make_pipeline(tmp_path).run()
    assert actions(first) == {"a": "run", "b": "run", "c": "run", "d": "run"}
    assert value(tmp_path, "c") == 111
    record = json.loads((tmp_path / "art" / "toy" / "c" / "stage.json").read_text())
    assert record["status"] == "ok" and record["stage"] == "c"
    assert record["versions"]["python"]  # the stage's env.json, folded in
    assert record["inputs"]["b"] == first.plans[1].record["output_digest"]
    assert {"start", "end", "fingerprint", "zoobox_revision", "env"} <= set(record)
    second = make_pipeline(tmp_path).run()
    assert actions(second) == {"a": "skip", "b": "skip", "c": "skip", "d": "skip"}
    assert leftovers(tmp_path) == []


def test_changed_parameter_reruns_that_stage_and_downstream(tmp_path):
    make_pipeline(tmp_path).run()
    result = make_pipeline(tmp_path, add_b=20).run()
    assert actions(result) == {"a": "skip", "b": "run", "c": "run", "d": "run"}
    assert "parameters" in result.plans[1].reason
    assert value(tmp_path, "c") == 121


def test_force_reruns_one_stage_and_what_is_downstream(tmp_path):
    make_pipeline(tmp_path).run()
    result = make_pipeline(tmp_path, force=("b",)).run()
    assert actions(result) == {"a": "skip", "b": "run", "c": "run", "d": "run"}


def test_target_runs_only_what_it_needs(tmp_path):
    result = make_pipeline(tmp_path).run("b")
    assert actions(result) == {"a": "run", "b": "run"}
    assert not (tmp_path / "art" / "toy" / "c").exists()


def test_changed_dataset_file_reruns_the_stage_that_reads_it(tmp_path):
    make_pipeline(tmp_path).run()
    (tmp_path / "data" / "new.txt").write_text("more data")
    result = make_pipeline(tmp_path).run()
    # a's output does not depend on the file's content: what is downstream stays.
    assert actions(result) == {"a": "run", "b": "skip", "c": "skip", "d": "skip"}
    assert result.plans[0].reason == "changed: input files <data>"


def test_user_error_in_a_stage_keeps_earlier_artifacts(tmp_path, capfd):
    make_pipeline(tmp_path).run()
    before = (tmp_path / "art" / "toy" / "b" / "stage.json").read_text()
    with pytest.raises(UserError, match="stage b stopped"):
        make_pipeline(tmp_path, fail_b="user").run()
    captured = capfd.readouterr()
    output = captured.out + captured.err  # the stage's stderr comes through the pipeline
    assert "error: toy stage refused its input" in output
    assert "Traceback" not in output
    assert (tmp_path / "art" / "toy" / "b" / "stage.json").read_text() == before
    assert value(tmp_path, "b") == 11
    assert leftovers(tmp_path) == []


def test_crashing_stage_is_reported_with_its_command(tmp_path):
    with pytest.raises(UserError, match=r"stage b failed \(exit 1\).*tests.toy.stage"):
        make_pipeline(tmp_path, fail_b="crash").run()
    assert not (tmp_path / "art" / "toy" / "b").exists()
    assert leftovers(tmp_path) == []


def test_dry_run_prints_the_plan_and_runs_nothing(tmp_path, capsys):
    result = make_pipeline(tmp_path, dry=True).run()
    out = capsys.readouterr().out
    assert actions(result) == {"a": "run", "b": "run", "c": "run", "d": "run"}
    assert out.count("would run") == 4
    assert "-m tests.toy.stage --add 1 --data" in out
    assert not (tmp_path / "art" / "toy").exists()


def test_dry_run_after_a_run_says_skip(tmp_path, capsys):
    make_pipeline(tmp_path).run()
    capsys.readouterr()
    make_pipeline(tmp_path, dry=True, add_c=5).run()
    out = capsys.readouterr().out
    assert "[a] skip" in out and "[b] skip" in out and "[c] would run" in out


def test_concurrent_run_is_refused_naming_the_holder(tmp_path):
    pipeline = make_pipeline(tmp_path)
    lock = RecipeLock(pipeline.store.folder)
    lock.acquire("toy all (another terminal)")
    try:
        with pytest.raises(UserError, match=r"in use by pid \d+ .*another terminal"):
            make_pipeline(tmp_path).run()
    finally:
        lock.release()
    make_pipeline(tmp_path).run()  # free again


_RUNNER = """
import sys
from tests.test_pipeline import make_pipeline
from pathlib import Path
from zoobox.core.errors import main_guard
main_guard(lambda: make_pipeline(Path(sys.argv[1]), pause=sys.argv[2]).run())
"""


def _start_paused_run(tmp_path):
    pause = tmp_path / "pause"
    process = subprocess.Popen(
        [sys.executable, "-c", _RUNNER, str(tmp_path), str(pause)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.time() + 60
    while not (pause.exists() and pause.read_text()) and time.time() < deadline:
        assert process.poll() is None, process.communicate()
        time.sleep(0.05)
    out_dir = Path(pause.read_text())
    stage_pid = int((out_dir / "pid").read_text())
    return process, pause, out_dir, stage_pid


def test_kill_9_of_a_stage_then_rerun_equals_an_uninterrupted_run(tmp_path):
    process, pause, out_dir, stage_pid = _start_paused_run(tmp_path)
    assert (out_dir / "partial.txt").exists()
    os.kill(stage_pid, signal.SIGKILL)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 2
    assert b"stage b failed (killed by SIGKILL (signal 9))" in err
    assert not (tmp_path / "art" / "toy" / "b").exists()  # nothing that looks complete
    assert leftovers(tmp_path) == []
    result = make_pipeline(tmp_path).run()
    assert actions(result) == {"a": "skip", "b": "run", "c": "run", "d": "run"}
    assert value(tmp_path, "c") == 111


def test_kill_9_of_the_whole_run_leaves_nothing_complete_and_frees_the_lock(tmp_path):
    process, pause, out_dir, stage_pid = _start_paused_run(tmp_path)
    process.kill()  # the orchestrator dies; its stage is orphaned mid-run
    process.wait()
    os.kill(stage_pid, signal.SIGKILL)
    assert out_dir.exists() and not (tmp_path / "art" / "toy" / "b").exists()
    result = make_pipeline(tmp_path).run()  # the lock died with its holder
    assert not out_dir.exists()  # the stale temporary folder was removed
    assert actions(result) == {"a": "skip", "b": "run", "c": "run", "d": "run"}
    assert value(tmp_path, "c") == 111


def test_code_fingerprint_follows_imports_inside_the_repo(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "stage.py").write_text("import numpy\nfrom pkg import helper\nfrom . import rel\n")
    (pkg / "helper.py").write_text("X = 1\n")
    (pkg / "rel.py").write_text("Y = 1\n")
    (pkg / "unrelated.py").write_text("Z = 1\n")
    before = code_fingerprint("pkg.stage", tmp_path)
    (pkg / "unrelated.py").write_text("Z = 2\n")
    assert code_fingerprint("pkg.stage", tmp_path) == before
    (pkg / "helper.py").write_text("X = 2\n")
    after_helper = code_fingerprint("pkg.stage", tmp_path)
    assert after_helper != before
    (pkg / "rel.py").write_text("Y = 2\n")
    assert code_fingerprint("pkg.stage", tmp_path) != after_helper


def test_unknown_parameter_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no parameter"):
        make_pipeline(tmp_path, add_z=1)


def _tree(folder):
    return {
        str(p.relative_to(folder)): p.read_text()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
        and p.name not in ("stage.json", "env.json", "timing.json", "detections.json")
    }


def test_sharded_stage_over_two_devices_equals_one_device(tmp_path):
    single = tmp_path / "single"
    single.mkdir()
    make_pipeline(single).run()
    sharded = tmp_path / "sharded"
    sharded.mkdir()
    result = make_pipeline(sharded, devices=(0, 1)).run()
    record = result.plans[-1].record
    assert len(record["command"]) == 3  # two shards and the merge
    assert "--shard" in record["command"][1] and "zoostage.shards" in record["command"][2]
    d_single = single / "art" / "toy" / "d"
    d_sharded = sharded / "art" / "toy" / "d"
    assert _tree(d_sharded) == _tree(d_single)
    assert sorted(
        json.loads((d_sharded / "detections.json").read_text()), key=lambda r: r["image_id"]
    ) == [{"image_id": k} for k in range(5)]
    timing = json.loads((d_sharded / "timing.json").read_text())
    assert timing["images"] == 5 and timing["shards"] == 2 and timing["throughput"] == 200.0
    assert not list(d_sharded.glob("shard-*"))
