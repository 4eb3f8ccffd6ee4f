"""Issue 19, items 8-11 (first three parts): hostile inputs that gave a fork storm, a
refused good checkpoint, a traceback on a full disk, a cache that poisons every run, or a
value that should have been refused. One test (or a few) per item, named after it.
"""

import multiprocessing
import os
from collections import OrderedDict

import numpy as np
import pytest

from tests.conftest import run_stage
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
def test_i19_item08_the_data_stage_with_100000_workers_on_one_image_ends(tmp_path):
    """The whole data stage, --workers 100000 on one image: done, one process."""
    from data_scripts.store import Store
    from tests.test_hostile import _wider_sample  # the hostile suite's WIDER sample

    root = _wider_sample(tmp_path / "wider")
    from tests.conftest import input_args

    proc = run_stage(
        "data_scripts.widerface.prepare",
        *input_args("retinaface"),
        *("--out", tmp_path / "data", "--root", root, "--limit", 1, "--input-size", 64),
        *("--workers", 100000),
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert len(Store(str(tmp_path / "data"))) == 1


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
