"""Issue 19, items 8-11 (first three parts): hostile inputs that gave a fork storm, a
refused good checkpoint, a traceback on a full disk, a cache that poisons every run, or a
value that should have been refused. One test (or a few) per item, named after it.
"""

import multiprocessing
import os
import pickle
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from tests.conftest import REPO, run_stage
from zoostage.errors import USER_ERROR_EXIT, UserError

torch = pytest.importorskip("torch", reason="the checkpoint and export items need torch")


def error_lines(proc):
    return [line for line in proc.stderr.splitlines() if line.startswith("error:")]


def assert_one_line_error(proc, *needles, code=USER_ERROR_EXIT):
    """Exactly one `error:` line holding every needle, no traceback, exit `code`."""
    assert proc.returncode == code, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = error_lines(proc)
    assert len(errors) == 1, proc.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


# -- item 8: --param workers=100000 ----------------------------------------------------------
def _pid(task):
    return os.getpid()


class _CountedProcess:
    """Stands in for multiprocessing.Process in zoostage.pool: counts, and refuses to be a
    fork storm (the old pool made one process per requested worker)."""

    made = 0
    real = multiprocessing.Process

    def __new__(cls, *args, **kwargs):
        _CountedProcess.made += 1
        if _CountedProcess.made > 64:
            raise AssertionError("the pool made more than 64 processes")
        return _CountedProcess.real(*args, **kwargs)


def test_i19_item08_the_pool_starts_no_more_processes_than_tasks_or_cores(monkeypatch):
    from zoostage import pool

    monkeypatch.setattr(pool.multiprocessing, "Process", _CountedProcess)
    _CountedProcess.made = 0
    pids = list(pool.map_unordered(_pid, range(3), 100000, label="test"))
    assert len(pids) == 3
    assert _CountedProcess.made == min(3, pool.usable_cores())
    _CountedProcess.made = 0
    assert list(pool.map_unordered(_pid, [0], 100000)) and _CountedProcess.made == 1
    # by hand: 0 asks for every core; the tasks and the cores cap what is asked
    cores = pool.usable_cores()
    assert pool.pool_size(0, 1000) == min(cores, 1000)
    assert pool.pool_size(100000, 1) == 1
    assert pool.pool_size(100000, 10**6) == cores
    assert pool.pool_size(2, 10**6) == min(2, cores)


def test_i19_item08_the_workers_parameters_have_a_maximum():
    from zoobox.core.recipe import load_recipe, resolve_params

    for name in ("retinaface", "retinanet", "refinedet"):
        recipe = load_recipe(name)
        assert resolve_params(recipe, {"workers": 1024})["workers"] == 1024
        with pytest.raises(UserError, match=r"--param workers must be an integer from 0 to 1024"):
            resolve_params(recipe, {"workers": 100000})
    with pytest.raises(UserError, match=r"train_workers must be an integer from 0 to 32"):
        resolve_params(load_recipe("retinanet"), {"train_workers": 100000})


def test_i19_item08_training_loader_processes_are_capped_at_the_cores():
    from models.retinanet.train import worker
    from zoostage.pool import usable_cores

    assert worker.loader_workers({"workers": 100000}) == usable_cores()
    assert worker.loader_workers({"workers": 0}) == 0
    assert worker.loader_workers({"workers": 1}) == 1


@pytest.mark.slow
def test_i19_item08_the_data_stage_with_many_workers_on_one_image_ends(tmp_path):
    """The whole data stage, --workers 1024 (the declared maximum) on one image: done,
    one process; 100000 is refused by the stage's own parser, in one line."""
    from tests.test_hostile import _wider_sample  # the hostile suite's WIDER sample
    from zoostage.store import Store

    root = _wider_sample(tmp_path / "wider")
    from tests.conftest import input_args

    proc = run_stage(
        "data_scripts.widerface.prepare",
        *input_args("retinaface"),
        *("--out", tmp_path / "data", "--root", root, "--limit", 1, "--input-size", 64),
        *("--workers", 1024),
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert len(Store(str(tmp_path / "data"))) == 1
    refused = run_stage(
        "data_scripts.widerface.prepare",
        *input_args("retinaface"),
        *("--out", tmp_path / "data2", "--root", root, "--limit", 1, "--input-size", 64),
        *("--workers", 100000),
        timeout=120,
    )
    assert refused.returncode != 0
    assert "--workers must be an integer from 0 to 1024, not 100000" in refused.stderr
    assert not (tmp_path / "data2").exists()


# -- item 9: a state dict saved with pickle_protocol=4 ---------------------------------------
def _state_dict():
    return OrderedDict([("conv.weight", torch.ones(2, 3)), ("conv.bias", torch.zeros(2))])


@pytest.mark.parametrize("protocol", [4, 5])
@pytest.mark.parametrize("zip_format", [True, False])
def test_i19_item09_a_state_dict_saved_with_a_newer_pickle_protocol_loads(
    tmp_path, protocol, zip_format
):
    from models.common.checkpoint import read_torch_checkpoint

    path = tmp_path / "model.pth"
    torch.save(
        _state_dict(),
        str(path),
        pickle_protocol=protocol,
        _use_new_zipfile_serialization=zip_format,
    )
    loaded = read_torch_checkpoint(str(path))
    assert sorted(loaded) == ["conv.bias", "conv.weight"]
    assert torch.equal(loaded["conv.weight"], torch.ones(2, 3))
    # The other torch.load paths: RetinaNet's read_checkpoint (numpy allowed), and the
    # training checkpoints (numpy random state inside).
    from models.retinanet.checkpoint import read_checkpoint
    from models.retinanet.train import checkpoints

    assert sorted(read_checkpoint(str(path))) == ["conv.bias", "conv.weight"]
    work = tmp_path / "work"
    work.mkdir()
    saved = work / "iter_0000003.pth"
    state = {"model": _state_dict(), "iteration": 3, "rng": np.arange(3)}
    torch.save(
        state, str(saved), pickle_protocol=protocol, _use_new_zipfile_serialization=zip_format
    )
    found, loaded = checkpoints.load_latest(str(work))
    assert found == str(saved) and loaded["iteration"] == 3


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, ("touch %s" % self.marker,))


def test_i19_item09_a_crafted_protocol_4_checkpoint_is_refused_naming_what_it_asked_for(
    tmp_path,
):
    from models.common.checkpoint import read_torch_checkpoint

    marker = tmp_path / "payload-ran"
    path = tmp_path / "evil.pth"
    torch.save({"conv.weight": _Payload(marker)}, str(path), pickle_protocol=4)
    with pytest.raises(UserError) as raised:
        read_torch_checkpoint(str(path))
    message = str(raised.value)
    assert message.startswith("refusing checkpoint") and "system" in message, message
    assert "weights_only" not in message and "trusted source" not in message, message
    assert not marker.exists()


def test_i19_item09_a_damaged_file_never_relays_the_advice_to_turn_the_guard_off(tmp_path):
    from models.common.checkpoint import read_torch_checkpoint

    path = tmp_path / "model.pth"
    torch.save(_state_dict(), str(path), pickle_protocol=4, _use_new_zipfile_serialization=False)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="cannot read checkpoint") as raised:
        read_torch_checkpoint(str(path))
    assert "weights_only" not in str(raised.value) and "trusted" not in str(raised.value)


# -- item 10: a full disk while a stage writes; a crafted records cache ----------------------
_SMALL_FULL_DISK = """
set -e
mount -t tmpfs -o size=1m tmpfs "$1"
# fill it: the stage's first write meets a full disk
dd if=/dev/zero of="$1/filler" bs=4k 2>/dev/null || true
shift
exec "$@"
"""


def _on_a_full_disk(folder, *argv, timeout=180):
    """Run argv with `folder` a fresh 1 MiB tmpfs already full, in a private mount
    namespace (as tests/test_hostile.py's full-disk tests do)."""
    folder.mkdir(parents=True, exist_ok=True)
    probe = subprocess.run(
        ["unshare", "-Urm", "sh", "-c", _SMALL_FULL_DISK, "sh", str(folder), "true"],
        capture_output=True,
        text=True,
    )
    if probe.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (unshare -Urm): {probe.stderr.strip()}")
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    return subprocess.run(
        ["unshare", "-Urm", "sh", "-c", _SMALL_FULL_DISK, "sh", str(folder), *map(str, argv)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


_WRITE_JSON_STAGE = """
import os, sys
from zoostage import cli

def main(args):
    cli.write_json(os.path.join(args.out, "result.json"), {"values": list(range(1000))})

cli.run(main, cli.parser("a stage that writes JSON"), sys.argv[1:])
"""


def test_i19_item10_a_full_disk_under_the_stage_kits_json_write_is_one_line(tmp_path):
    disk = tmp_path / "disk"
    proc = _on_a_full_disk(disk, sys.executable, "-c", _WRITE_JSON_STAGE, "--out", disk / "out")
    line = assert_one_line_error(proc, "no space left on", "result.json", "free")
    assert "--artifacts" in line


_NUMPY_WRITE_STAGE = """
import os, sys
import numpy as np
from zoostage import cli

def main(args):
    np.save(os.path.join(args.out, "big.npy"), np.zeros(1 << 20, np.uint8))

cli.run(main, cli.parser("a stage that writes with numpy"), sys.argv[1:])
"""


def test_i19_item10_any_write_of_a_stage_meeting_a_full_disk_is_one_line(tmp_path):
    """Not only write_json: every write under cli.run (numpy's here) gives the line."""
    disk = tmp_path / "disk"
    proc = _on_a_full_disk(disk, sys.executable, "-c", _NUMPY_WRITE_STAGE, "--out", disk / "out")
    assert_one_line_error(proc, "no space left on", "free", "--artifacts")


def _retinaface_weights(folder, state):
    """A weights stage's folder holding `state` as the RetinaFace checkpoint."""
    from zoostage.cli import write_json

    folder.mkdir()
    torch.save(state, str(folder / "mobilenet0.25_Final.pth"))
    write_json(
        str(folder / "weights.json"),
        {"source": "cache", "file": "mobilenet0.25_Final.pth", "sha256": None, "seed": None},
    )
    return folder


@pytest.fixture(scope="module")
def retinaface_export(tmp_path_factory):
    """A RetinaFace export at 64 x 64 from a seeded random init, and a 2-image store."""
    from models.retinaface import MEAN_BGR
    from models.retinaface.net import build_model
    from zoostage.store import feed_spec, write_store

    base = tmp_path_factory.mktemp("retinaface")
    weights = _retinaface_weights(base / "weights", build_model(None, seed=3).state_dict())
    proc = run_stage(
        "models.retinaface.export",
        *("--out", base / "export", "--weights", weights, "--input-size", 64),
    )
    assert proc.returncode == 0, proc.stderr
    (base / "data").mkdir()
    write_store(
        str(base / "data"),
        [("0--Parade/a", 1), ("1--Handshaking/b", 2)],
        (64, 64),
        _random_image,
        feed_spec(MEAN_BGR),
        workers=1,
    )
    return base


def _random_image(item):
    image_id, seed = item
    pixels = np.random.RandomState(seed).randint(0, 256, (64, 48, 3)).astype(np.uint8)
    return pixels, {"id": image_id, "scale": 1.0, "orig_hw": [64, 48]}


@pytest.mark.slow
def test_i19_item10_infer_on_a_full_disk_is_one_no_space_line(retinaface_export, tmp_path):
    base = retinaface_export
    disk = tmp_path / "disk"
    proc = _on_a_full_disk(
        disk,
        *(sys.executable, "-m", "models.retinaface.infer", "--out", disk / "infer"),
        *("--model", base / "export", "--data", base / "data"),
        *("--backend", "torchscript", "--batch-size", 1, "--device", "cpu"),
    )
    assert_one_line_error(proc, "no space left on", "free", "--artifacts")


@pytest.mark.slow
def test_i19_item10_export_on_a_full_disk_is_one_line_not_an_abort(retinaface_export, tmp_path):
    """TorchScript's save aborts the process (SIGABRT) on a full disk: checked before."""
    disk = tmp_path / "disk"
    proc = _on_a_full_disk(
        disk,
        *(sys.executable, "-m", "models.retinaface.export", "--out", disk / "export"),
        *("--weights", retinaface_export / "weights", "--input-size", 64),
    )
    assert_one_line_error(proc, "no space left on", "model.ts", "needed", "free")


def test_i19_item10_a_full_disk_in_training_is_one_line(tmp_path, monkeypatch, capsys):
    """The training worker is not under cli.run: a checkpoint write meeting a full disk
    (torch.save to an open file raises ENOSPC) is its one line, for the launcher too."""
    import errno
    import json

    from models.retinanet.train import worker

    def full_disk(config):
        raise OSError(errno.ENOSPC, "No space left on device")

    config = {"out": str(tmp_path / "out"), "work_dir": str(tmp_path / "work")}
    os.makedirs(config["out"])
    os.makedirs(config["work_dir"])
    (tmp_path / "config.json").write_text(json.dumps(config))
    monkeypatch.setattr(worker, "train", full_disk)
    monkeypatch.delenv(worker.LAUNCHED_ENV, raising=False)
    with pytest.raises(SystemExit) as stopped:
        worker.main(["--config", str(tmp_path / "config.json")])
    assert stopped.value.code == USER_ERROR_EXIT
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("error: no space left on") and str(tmp_path / "work") in line
    assert (tmp_path / "out" / worker.ERROR_FILE).read_text() == line[len("error: ") :]


def _records_args(sample):
    return SimpleNamespace(data=str(sample), split="val2017", limit=0)


@pytest.mark.parametrize("content", ["payload", "garbage", "not records"])
def test_i19_item10_a_crafted_records_cache_is_discarded_and_rebuilt(tmp_path, capsys, content):
    from data_scripts.coco.sample import make_sample
    from models.retinanet.train import launch

    sample = tmp_path / "coco"
    make_sample(str(sample), images=2, seed=0)
    work = tmp_path / "work"
    work.mkdir()
    path, stats = launch.records_file(_records_args(sample), str(work))
    assert Path(path).name.startswith("records-val2017-")
    marker = tmp_path / "payload-ran"
    crafted = {
        "payload": pickle.dumps({"records": _Payload(marker), "stats": {}}, protocol=4),
        "garbage": b"\x80\x04not a pickle at all",
        "not records": pickle.dumps([1, 2, 3]),
    }[content]
    Path(path).write_bytes(crafted)
    capsys.readouterr()
    again, stats_again = launch.records_file(_records_args(sample), str(work))
    notes = capsys.readouterr().err.splitlines()
    assert again == path and stats_again == stats
    assert len(notes) == 1 and notes[0].startswith("note: discarding the records cache"), notes
    assert "rebuilding" in notes[0]
    assert not marker.exists()
    with open(path, "rb") as handle:  # rebuilt: the workers read it
        from zoostage.unpickle import load_pickle

        assert len(load_pickle(handle)["records"]) == 2
    # and the next run takes it as it is, silently
    launch.records_file(_records_args(sample), str(work))
    assert capsys.readouterr().err == ""


# -- item 11: nan weights, a device listed twice, nan and inf parameters ---------------------
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_i19_item11_non_finite_weights_are_one_line_at_load_naming_the_first_key(tmp_path, bad):
    from models.retinaface.net import build_model

    state = build_model(None, seed=3).state_dict()
    keys = [k for k, v in state.items() if v.is_floating_point()]
    first, later = keys[3], keys[7]
    state[first].view(-1)[1] = bad
    state[later].view(-1)[0] = bad
    weights = _retinaface_weights(tmp_path / "weights", state)
    proc = run_stage(
        "models.retinaface.export",
        *("--out", tmp_path / "export", "--weights", weights, "--input-size", 64),
    )
    line = assert_one_line_error(proc, first, "not finite", "1 nan or inf values")
    assert later not in line and "trac" not in line


def test_i19_item11_non_finite_weights_by_hand():
    from models.common.checkpoint import check_finite

    check_finite({"a": torch.zeros(2), "n": torch.tensor([1, 2]), "s": np.ones(3)})
    with pytest.raises(UserError, match=r"b has 2 nan or inf values \(of 4\)"):
        check_finite(
            OrderedDict(
                [
                    ("a", torch.ones(2)),
                    ("b", torch.tensor([0.0, float("nan"), float("-inf"), 1.0])),
                    ("c", torch.tensor([float("nan")])),
                ]
            )
        )
    with pytest.raises(UserError, match=r"w has 1 nan or inf values \(of 2\)"):
        check_finite({"w": np.array([1.0, np.inf], np.float32)})


def test_i19_item11_a_device_listed_twice_is_refused():
    from zoobox.pipeline.choice import parse_devices

    assert parse_devices("0,1") == [0, 1]
    with pytest.raises(UserError, match=r"--devices lists device 0 twice \('0,0'\)"):
        parse_devices("0,0")
    with pytest.raises(UserError, match="lists device 1, 2 twice"):
        parse_devices("1,2,1,2,3")
    with pytest.raises(UserError, match="none negative"):
        parse_devices("-1")


def test_i19_item11_devices_0_0_is_one_line_before_any_stage(tmp_path):
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "invoke", "retinaface.all", "--runner", "host"),
            *("--artifacts", str(tmp_path), "--devices", "0,0"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines() == [
        "error: --devices lists device 0 twice ('0,0'): name each device once"
    ]
    assert not (tmp_path / "retinaface").exists()


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "NaN", float("nan"), float("inf")])
def test_i19_item11_a_float_parameter_refuses_nan_and_inf(value):
    from zoobox.core.recipe import load_recipe, resolve_params
    from zoostage.recipe import ParamSpec

    with pytest.raises(UserError, match="must be a number"):
        ParamSpec("x", 1.0, "float").check(value, "--param x")
    with pytest.raises(UserError, match="--param clip_grad must be a number >= 0"):
        resolve_params(load_recipe("retinanet"), {"clip_grad": value})
    assert ParamSpec("x", 1.0, "float").check("1e3", "--param x") == 1000.0


@pytest.mark.parametrize("text", ["nan", "inf", "-inf"])
def test_i19_item11_the_training_lr_refuses_nan_and_inf(text):
    from models.retinanet.train import launch

    with pytest.raises(UserError, match="--lr must be a positive number"):
        launch.parse_lr(text)
    assert launch.parse_lr("0.02") == 0.02
