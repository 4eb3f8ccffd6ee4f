"""A first run on a real Ascend host (issue 20): each place where the NPU path, read against
the Ascend tools' documented behaviour, would stumble; checked against fakes that follow
the tools' interfaces (every shape the releases document). docs/first-run.md lists them."""

import sys

import numpy as np
import pytest

from tests.conftest import REPO

FAKES = REPO / "tests" / "fakes"


# -- 1. ais_bench's exec_time_list: milliseconds (older), (start, end) pairs (newer) -----------
@pytest.fixture
def fake_ais_bench(monkeypatch):
    """tests/fakes' ais_bench importable in this process (and forgotten afterwards)."""
    monkeypatch.syspath_prepend(str(FAKES))
    for name in [m for m in sys.modules if m == "ais_bench" or m.startswith("ais_bench.")]:
        monkeypatch.delitem(sys.modules, name)
    yield
    for name in [m for m in sys.modules if m == "ais_bench" or m.startswith("ais_bench.")]:
        sys.modules.pop(name, None)


def test_exec_time_entries_of_each_release_hand_computed():
    from zoostage.backends.om import exec_time_seconds

    assert exec_time_seconds(12.5) == pytest.approx(0.0125)  # milliseconds
    assert exec_time_seconds(np.float32(2.0)) == pytest.approx(0.002)
    assert exec_time_seconds((1000.0, 1012.5)) == pytest.approx(0.0125)  # (start, end)
    assert exec_time_seconds([3, 5]) == pytest.approx(0.002)
    for odd in ("12.5", (1, 2, 3), (5.0, 1.0), {"ms": 1}, None, float("nan"), -1.0, True):
        assert exec_time_seconds(odd) is None, odd


@pytest.mark.parametrize(
    "shape, source",
    [
        ("ms", "backend"),
        ("pairs", "backend"),
        ("sumary", "backend"),
        ("none", "harness"),
        ("odd", "harness"),
    ],
)
def test_the_om_backend_takes_every_exec_time_shape_or_falls_back_with_a_note(
    shape, source, tmp_path, monkeypatch, fake_ais_bench
):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from tests.fakes.ais_bench.infer.interface import EXEC_MS
    from zoostage.backends import get_backend
    from zoostage.backends.harness import infer_store
    from zoostage.smoke.atc import SHAPE, conv_onnx

    monkeypatch.setenv("FAKE_AIS_BENCH_SUMMARY", shape)
    conv_onnx(str(tmp_path / "m.onnx"))
    (tmp_path / "m.om").touch()
    backend = get_backend("om", device=0).load(str(tmp_path / "m.om"))

    class Store:  # two images of the conv's input shape
        def __len__(self):
            return 2

        def batch(self, indices):
            return np.zeros((len(indices), *SHAPE[1:]), np.float32)

        def batches(self, size, order):
            for start in range(0, len(order), size):
                chosen = order[start : start + size]
                yield chosen, self.batch(chosen)

    record = infer_store(Store(), backend, 1, lambda idx, out: None, warmup=1)
    assert record["compute"]["source"] == source
    if source == "backend":
        assert record["mean_ms"] == pytest.approx(EXEC_MS)
        assert "note" not in record["compute"]
    else:
        assert "timed instead" in record["compute"]["note"]


# -- 9. device nodes under another root appear at their /dev names ---------------------------
def test_every_device_node_is_mapped_to_its_dev_name_whatever_the_host_root(tmp_path):
    from zoobox.hosts.probe import NPU_CONTROL_NODES, NpuHost
    from zoobox.runners.npu import device_args

    root = tmp_path / "ascend-dev"  # zoobox.docker.dev_root, not /dev
    npu = NpuHost(devices=[0, 5], dev_root=root)
    args = device_args(npu, [5], ascend_runtime=False)
    mapped = [args[i + 1] for i, a in enumerate(args) if a == "--device"]
    names = ["davinci5", *NPU_CONTROL_NODES]
    assert mapped == [f"{root}/{name}:/dev/{name}" for name in names]
    # /dev itself maps onto itself, the same form
    plain = device_args(NpuHost(devices=[0], dev_root=tmp_path.anchor + "dev"), [0], False)
    assert "/dev/davinci0:/dev/davinci0" in plain


# -- 6. a compile holds one device; sharded stages one each; training all ----------------------
def test_compile_gets_the_first_device_only_and_training_gets_every_one(tmp_path):
    from zoobox.core.recipe import load_recipe
    from zoobox.hosts.probe import NpuHost
    from zoobox.run.choice import Choice
    from zoobox.run.engine import Engine, Options
    from zoobox.run.shards import shard_calls
    from zoobox.runners.docker import DockerRunner, DockerSettings

    dev = tmp_path / "dev"
    dev.mkdir()
    npu = NpuHost(devices=[2, 3, 5], dev_root=dev)
    runner = DockerRunner(DockerSettings(artifacts=tmp_path / "art", npu=npu, tty=False))
    options = Options(artifacts=tmp_path / "art", cache=tmp_path, data=tmp_path, dry=True)
    recipe = load_recipe("retinanet")
    engine = Engine(recipe, Choice("docker", "aie", [2, 3, 5], "test"), runner, options)
    compile_call = engine.call_for("compile", tmp_path / "out")
    assert compile_call.devices == [2]
    argv = runner.argv(compile_call)
    assert f"{dev}/davinci2:/dev/davinci2" in argv
    assert not any("davinci3" in a or "davinci5" in a for a in argv)
    infer = engine.call_for("infer", tmp_path / "out")
    assert [c.devices for c in shard_calls(engine, infer, tmp_path)] == [[2], [3], [5]]
    assert engine.call_for("train", tmp_path / "out").devices == [2, 3, 5]


# -- 4. torch_aie.compile: the seeds' min_block_size (torch_aie's default) ---------------------
def test_aie_compile_leaves_min_block_size_at_torch_aies_default_as_the_seeds(
    tmp_path, fake_torch_aie
):
    torch = pytest.importorskip("torch")
    from zoostage.backends import get_backend

    torch.jit.trace(torch.nn.Conv2d(3, 2, 1), torch.randn(1, 3, 4, 4)).save(str(tmp_path / "m.ts"))
    for precision in ("default", "fp16"):  # the RetinaFace and the RetinaNet seed's
        fake_torch_aie.clear()
        facts = get_backend("aie", device="npu:0").compile(
            str(tmp_path / "m.ts"), str(tmp_path / "c.ts"), [1, 3, 4, 4], precision=precision
        )
        # neither seed's inference.py passes it: torch_aie's own default (documented: 1)
        assert "min_block_size" not in fake_torch_aie
        assert "default" in facts["min_block_size"]
