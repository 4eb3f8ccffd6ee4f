"""The inference harness, the image store and the backends that need no NPU."""

import os
import sys

import numpy as np
import pytest

from zoostage.backends import get_backend
from zoostage.backends.harness import infer_store, summarize
from zoostage.errors import UserError
from zoostage.store import Store, feed_spec, to_input, write_store


def test_summarize_hand_computed():
    record = summarize([0.010, 0.020, 0.030, 0.040], batch_size=2, images=8)
    assert record["mean_ms"] == pytest.approx(25.0)
    assert record["p50_ms"] == pytest.approx(25.0)
    assert record["p99_ms"] == pytest.approx(39.7)  # linear interpolation 30 + 0.97 * 10
    assert record["throughput"] == pytest.approx(80.0)  # 2 images per 25 ms
    assert summarize([], 1, 0)["calls"] == 0


def test_feed_before_and_after_norm_and_channel_order():
    pixels = np.zeros((1, 2, 3, 3), np.uint8)
    pixels[0, 0, 0] = (10, 20, 30)  # B, G, R of the one real pixel
    feed = feed_spec(mean_bgr=(1, 2, 3), pad="before_norm")
    out = to_input(pixels, [[1, 1]], feed)
    assert out.shape == (1, 3, 2, 3)
    assert out[0, :, 0, 0].tolist() == [9, 18, 27]
    assert out[0, :, 1, 2].tolist() == [-1, -2, -3]  # padding ends at minus the mean
    after = to_input(pixels, [[1, 1]], feed_spec((1, 2, 3), (2, 2, 2), pad="after_norm"))
    assert after[0, :, 0, 0].tolist() == [4.5, 9, 13.5]
    assert after[0, :, 1, 2].tolist() == [0, 0, 0]  # padding stays zero
    rgb = to_input(pixels, [[1, 1]], feed_spec((1, 2, 3), channels="rgb"))
    assert rgb[0, :, 0, 0].tolist() == [27, 18, 9]


def _prepare(item):
    if item == "bad":
        raise UserError("corrupt image bad.jpg")
    value = int(item)
    return np.full((2 + value % 2, 3, 3), value, np.uint8), {"id": item}


def _store(tmp_path, items, skip_bad=False):
    tmp_path.mkdir(exist_ok=True)
    skipped = write_store(
        str(tmp_path), items, (4, 4), _prepare, feed_spec((0, 0, 0)), workers=1, skip_bad=skip_bad
    )
    return Store(str(tmp_path)), skipped


def test_store_round_trip_and_skip_bad(tmp_path):
    store, skipped = _store(tmp_path, ["1", "bad", "2"], skip_bad=True)
    assert skipped == 1 and len(store) == 2
    assert [r["id"] for r in store.records] == ["1", "2"]
    assert store.records[0]["valid_hw"] == [3, 3]
    assert store.pixels[1, :2, :3].min() == 2 and store.pixels[1, 2:].max() == 0
    with pytest.raises(UserError, match=r"corrupt image bad.jpg \(pass --skip-bad"):
        _store(tmp_path / "again", ["1", "bad"])


class CountingBackend:
    """Echoes each image's mean; counts calls; checks every batch has the full size."""

    name = "fake"

    def __init__(self, batch_size):
        self.batch_size = batch_size
        self.calls = 0
        self.syncs = 0

    def run(self, batch):
        assert batch.shape[0] == self.batch_size
        self.calls += 1
        return (batch.reshape(batch.shape[0], -1).mean(axis=1),)

    def synchronize(self):
        self.syncs += 1

    def describe(self):
        return {"backend": "fake", "device": "cpu"}


def test_harness_pads_the_last_batch_and_drops_the_padding(tmp_path):
    store, _ = _store(tmp_path, [str(v) for v in range(5)])
    backend = CountingBackend(batch_size=2)
    seen = []
    record = infer_store(store, backend, 2, lambda idx, out: seen.append((idx, out[0])), warmup=1)
    assert [idx for idx, _ in seen] == [[0, 1], [2, 3], [4]]
    assert len(seen[-1][1]) == 1  # the padded copy's output is dropped
    assert backend.calls == 1 + 3  # warm-up + three batches
    assert record["calls"] == 2  # the padded last batch is not timed
    assert record["images"] == 5 and record["backend"] == "fake"
    assert backend.syncs >= 7  # before and after every timed call


def test_harness_on_a_subset_of_indices(tmp_path):
    store, _ = _store(tmp_path, [str(v) for v in range(4)])
    seen = []
    infer_store(
        store, CountingBackend(1), 1, lambda idx, out: seen.extend(idx), indices=[3, 1], warmup=0
    )
    assert seen == [3, 1]


def test_torchscript_and_onnxruntime_backends_agree(tmp_path):
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    module = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())
    example = torch.randn(1, 3, 8, 8)
    torch.jit.trace(module, example).save(str(tmp_path / "m.ts"))
    kwargs = {"dynamo": False} if "dynamo" in torch.onnx.export.__code__.co_varnames else {}
    torch.onnx.export(
        module, example, str(tmp_path / "m.onnx"), opset_version=11, input_names=["image"], **kwargs
    )
    batch = np.random.RandomState(0).randn(1, 3, 8, 8).astype(np.float32)
    ts = get_backend("torchscript")
    facts = ts.compile(str(tmp_path / "m.ts"), str(tmp_path / "c.ts"), (1, 3, 8, 8))
    assert facts["outputs"] == [[1, 4, 6, 6]]
    ort = get_backend("onnxruntime")
    ort.compile(str(tmp_path / "m.onnx"), str(tmp_path / "c.onnx"), (1, 3, 8, 8))
    a = ts.load(str(tmp_path / "c.ts")).run(batch)[0]
    b = ort.load(str(tmp_path / "c.onnx")).run(batch)[0]
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_npu_backends_without_their_stack_say_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch_aie", None)
    monkeypatch.setitem(sys.modules, "ais_bench", None)
    monkeypatch.setitem(sys.modules, "ais_bench.infer", None)
    monkeypatch.setitem(sys.modules, "ais_bench.infer.interface", None)
    (tmp_path / "m.ts").write_bytes(b"x")
    (tmp_path / "m.om").write_bytes(b"x")
    with pytest.raises(UserError, match=r"needs torch_aie.*--backend torchscript"):
        get_backend("aie", device="npu:0").load(str(tmp_path / "m.ts"))
    with pytest.raises(UserError, match=r"needs ais_bench.*--backend onnxruntime"):
        get_backend("om", device=0).load(str(tmp_path / "m.om"))
    with pytest.raises(UserError, match="unknown backend"):
        get_backend("tensorrt")


def test_aie_compile_asks_torch_aie_for_the_seed_settings(tmp_path, fake_torch_aie):
    torch = pytest.importorskip("torch")
    calls = fake_torch_aie
    torch.jit.trace(torch.nn.Conv2d(3, 2, 1), torch.randn(1, 3, 4, 4)).save(str(tmp_path / "m.ts"))
    facts = get_backend("aie", device="npu:1").compile(
        str(tmp_path / "m.ts"),
        str(tmp_path / "c.ts"),
        [1, 3, 4, 4],
        precision="fp16",
        soc_version="Ascend310P3",
    )
    assert calls["inputs"] == [("Input", (1, 3, 4, 4), torch.float)]  # as both seeds
    assert calls["precision_policy"] == "fp16-policy"
    assert calls["soc_version"] == "Ascend310P3"
    assert calls["device"] == 1 and calls["saved"] == str(tmp_path / "c.ts")
    assert facts["precision"] == "fp16"
    with pytest.raises(UserError, match="precision"):
        get_backend("aie", device=0).compile(
            str(tmp_path / "m.ts"), str(tmp_path / "d.ts"), [1, 3, 4, 4], precision="int8"
        )


def test_compile_makes_one_model_per_batch_size_for_static_backends(tmp_path, monkeypatch):
    import argparse
    import json

    from zoostage.backends import compile as compile_stage
    from zoostage.backends.base import Backend

    calls = []

    class Static(Backend):
        name = "static"
        suffix = ".om"
        source_suffix = ".onnx"
        dynamic_batch = False

        def compile(self, source, target, input_shape, precision=None, soc_version=None):
            calls.append((os.path.basename(source), os.path.basename(target), input_shape))
            open(target, "w").close()
            return {"input_shape": input_shape}

    monkeypatch.setattr(compile_stage, "get_backend", lambda name, device=None: Static())
    export = tmp_path / "export"
    export.mkdir()
    (export / "model.onnx").write_bytes(b"onnx")
    out = tmp_path / "out"
    out.mkdir()
    args = argparse.Namespace(
        backend="om",
        device="0",
        model=str(export),
        input_shape="4,3,8,8",
        batch_sizes="1,4,16",
        precision=None,
        soc_version="Ascend310P3",
        out=str(out),
    )
    compile_stage.main(args)
    assert calls == [
        ("model.onnx", "model_bs1.om", [1, 3, 8, 8]),
        ("model.onnx", "model.om", [4, 3, 8, 8]),
        ("model.onnx", "model_bs16.om", [16, 3, 8, 8]),
    ]
    record = json.loads((out / "compile.json").read_text())
    assert record["model"] == "model.om" and record["input_shape"] == [4, 3, 8, 8]
    assert sorted(record["by_batch"], key=int) == ["1", "4", "16"]
    Static.dynamic_batch = True  # a dynamic backend serves every batch from one file
    calls.clear()
    compile_stage.main(args)
    assert [c[1] for c in calls] == ["model.om"]
