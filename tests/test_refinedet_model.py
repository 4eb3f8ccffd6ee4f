"""RefineDet320 model side: network, priors, export, postprocessing, ATC, ais_bench, infer.

CPU only. The exported ONNX (random weights, ~140 MB) is made once per module by the
export stage itself and shared by the tests that need it.
"""

import itertools
import json
import math
import os
import shutil
import stat
import subprocess
import sys

import numpy as np
import pytest

from models.refinedet import postprocess as post
from models.refinedet.bench import parse_ais_bench, parse_batch_sizes
from models.refinedet.priors import NUM_PRIORS, prior_boxes
from zoostage.backends import atc
from zoostage.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VARIANCES = (0.1, 0.2)


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return env


# --- priors -------------------------------------------------------------------------------


def _reference_priors():
    """The reference PriorBox loop for voc_refinedet['320'], written out plainly."""
    mean = []
    for k, f in enumerate([40, 20, 10, 5]):
        for i, j in itertools.product(range(f), repeat=2):
            f_k = 320 / [8, 16, 32, 64][k]
            cx, cy = (j + 0.5) / f_k, (i + 0.5) / f_k
            s_k = [32, 64, 128, 256][k] / 320
            mean += [cx, cy, s_k, s_k]
            for ar in [2]:
                mean += [cx, cy, s_k * math.sqrt(ar), s_k / math.sqrt(ar)]
                mean += [cx, cy, s_k / math.sqrt(ar), s_k * math.sqrt(ar)]
    return np.clip(np.asarray(mean, dtype=np.float32).reshape(-1, 4), 0, 1)


def test_prior_count_and_first_priors():
    priors = prior_boxes()
    assert priors.shape == (6375, 4) == (NUM_PRIORS, 4)
    assert priors.dtype == np.float32
    r2 = math.sqrt(2)
    # First cell of the 40x40 map (step 8, min size 32): square, then 2:1 and 1:2.
    np.testing.assert_allclose(priors[0], [0.0125, 0.0125, 0.1, 0.1], rtol=1e-6)
    np.testing.assert_allclose(priors[1], [0.0125, 0.0125, 0.1 * r2, 0.1 / r2], rtol=1e-6)
    np.testing.assert_allclose(priors[2], [0.0125, 0.0125, 0.1 / r2, 0.1 * r2], rtol=1e-6)
    # Next cell is the next column (cx moves, cy stays).
    np.testing.assert_allclose(priors[3], [0.0375, 0.0125, 0.1, 0.1], rtol=1e-6)
    # First cell of the 5x5 map (step 64, min size 256): 0.8 * sqrt(2) is clipped to 1.
    np.testing.assert_allclose(priors[6300], [0.1, 0.1, 0.8, 0.8], rtol=1e-6)
    np.testing.assert_allclose(priors[6301], [0.1, 0.1, 1.0, 0.8 / r2], rtol=1e-6)


def test_priors_equal_reference_loop():
    np.testing.assert_array_equal(prior_boxes(), _reference_priors())


# --- network ------------------------------------------------------------------------------


def _reference_keys():
    """Key names of RefineDet320_VOC_final.pth (luuuyi/RefineDet.PyTorch, VOC, 21 classes)."""
    modules = ["vgg.%d" % i for i in (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28, 31, 33)]
    modules += ["extras.0", "extras.1"]
    for head in ("arm_loc", "arm_conf", "odm_loc", "odm_conf"):
        modules += ["%s.%d" % (head, i) for i in range(4)]
    modules += ["tcb0.%d" % i for i in (0, 2, 3, 5, 6, 8, 9, 11)]
    modules += ["tcb1.%d" % i for i in range(3)]
    modules += ["tcb2.%d" % i for i in (1, 4, 7, 10)]
    keys = set()
    for name in modules:
        keys.update([name + ".weight", name + ".bias"])
    keys.update(["conv4_3_L2Norm.weight", "conv5_3_L2Norm.weight"])
    return keys


def _conv(cin, cout, k):
    return cin * cout * k * k + cout


def _reference_param_count():
    """Parameters of the reference RefineDet320 VOC, layer by layer."""
    vgg = [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 256)]
    vgg += [(256, 512)] + [(512, 512)] * 5
    total = sum(_conv(a, b, 3) for a, b in vgg)
    total += _conv(512, 1024, 3) + _conv(1024, 1024, 1)  # fc6 (dilated), fc7
    total += 2 * 512  # L2Norm scales
    total += _conv(1024, 256, 1) + _conv(256, 512, 3)  # extras
    sources = (512, 512, 1024, 512)
    total += sum(_conv(c, 3 * 4, 3) + _conv(c, 3 * 2, 3) for c in sources)  # ARM
    total += 4 * (_conv(256, 3 * 4, 3) + _conv(256, 3 * 21, 3))  # ODM
    total += sum(_conv(c, 256, 3) + _conv(256, 256, 3) for c in sources)  # tcb0
    total += 3 * (256 * 256 * 2 * 2 + 256)  # tcb1 deconvolutions
    total += 4 * _conv(256, 256, 3)  # tcb2
    return total


@pytest.fixture(scope="module")
def model():
    pytest.importorskip("torch")
    from models.refinedet.net import build_model

    return build_model(None, seed=0)


def test_state_dict_keys_match_reference(model):
    keys = set(model.state_dict())
    assert keys == _reference_keys()
    assert len(keys) == 98


def test_param_count_matches_reference(model):
    count = sum(p.numel() for p in model.state_dict().values())
    assert count == _reference_param_count() == 34440884


def test_l2norm_scales_and_checkpoint_round_trip(model, tmp_path):
    import torch

    from models.common.checkpoint import load_strict
    from models.refinedet.net import RefineDet, build_model

    state = model.state_dict()
    assert torch.all(state["conv4_3_L2Norm.weight"] == 10)
    assert torch.all(state["conv5_3_L2Norm.weight"] == 8)
    # A DataParallel checkpoint ("module." prefix) loads into the same tensors.
    path = str(tmp_path / "ckpt.pth")
    torch.save(dict(("module." + k, v) for k, v in state.items()), path)
    loaded = build_model(path)
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in state.items())
    del state["odm_conf.0.bias"]
    with pytest.raises(UserError, match=r"odm_conf\.0\.bias"):
        load_strict(RefineDet(), state)


# --- export -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(export folder, export.json) from the export stage, random weights, seed 0."""
    pytest.importorskip("torch")
    pytest.importorskip("onnx", reason="onnx is not installed: export graph checks skipped")
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
    weights = tmp_path_factory.mktemp("weights")
    (weights / "weights.json").write_text(json.dumps({"source": "random", "seed": 0}))
    out = tmp_path_factory.mktemp("export")
    subprocess.check_call(
        [
            sys.executable,
            "-m",
            "models.refinedet.export",
            "--out",
            str(out),
            "--weights",
            str(weights),
        ],
        cwd=ROOT,
        env=_env(),
    )
    with open(str(out / "export.json")) as handle:
        return str(out), json.load(handle)


@pytest.mark.slow
def test_export_manifest(exported):
    _, record = exported
    assert record["weights"] == "random"
    assert record["opset"] == 11
    assert record["inputs"] == {"image": ["batch", 3, 320, 320]}
    assert record["outputs"] == {
        "arm_loc": ["batch", 6375, 4],
        "arm_conf": ["batch", 6375, 2],
        "odm_loc": ["batch", 6375, 4],
        "odm_conf": ["batch", 6375, 21],
    }
    assert record["max_abs_diff"] is not None and record["max_abs_diff"] < 1e-3


@pytest.mark.slow
def test_onnxruntime_equals_torch(exported, model):
    import onnxruntime
    import torch

    folder, _ = exported
    session = onnxruntime.InferenceSession(
        os.path.join(folder, "model.onnx"), providers=["CPUExecutionProvider"]
    )
    assert [o.name for o in session.get_outputs()] == ["arm_loc", "arm_conf", "odm_loc", "odm_conf"]
    batch = (np.random.RandomState(1).uniform(0, 255, (3, 3, 320, 320)) - 117).astype(np.float32)
    found = session.run(None, {"image": batch})
    with torch.no_grad():
        expected = [o.numpy() for o in model(torch.from_numpy(batch))]
    for a, b in zip(found, expected):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(found[1].sum(-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(found[3].sum(-1), 1.0, atol=1e-5)


@pytest.mark.slow
def test_graph_io_finds_real_output_nodes(exported):
    import onnx

    folder, _ = exported
    path = os.path.join(folder, "model.onnx")
    input_name, nodes = atc.graph_io(path)
    assert input_name == "image"
    graph = onnx.load(path, load_external_data=False).graph
    by_name = dict((n.name, n) for n in graph.node)
    assert len(nodes) == 4
    for spec, output, op in zip(nodes, graph.output, ["Reshape", "Softmax"] * 2):
        name, index = spec.rsplit(":", 1)
        assert by_name[name].output[int(index)] == output.name
        assert by_name[name].op_type == op


# --- ATC ----------------------------------------------------------------------------------


def test_atc_command_exact():
    argv = atc.atc_command(
        "/m/model.onnx",
        "/c/model",
        16,
        "Ascend310P3",
        "image",
        ["Reshape_226:0", "Softmax_233:0", "Reshape_239:0", "Softmax_246:0"],
    )
    assert argv == [
        "atc",
        "--framework=5",
        "--model=/m/model.onnx",
        "--output=/c/model",
        "--input_format=NCHW",
        "--input_shape=image:16,3,320,320",
        "--log=error",
        "--soc_version=Ascend310P3",
        "--precision_mode=allow_fp32_to_fp16",
        "--out_nodes=Reshape_226:0;Softmax_233:0;Reshape_239:0;Softmax_246:0",
    ]
    line = atc.command_line(argv)
    assert "--out_nodes='Reshape_226:0;Softmax_233:0;Reshape_239:0;Softmax_246:0'" in line


NPU_SMI = """\
+-------------------|-----------------|------------------------------------------------------+
| NPU     Name      | Health          | Power(W)     Temp(C)           Hugepages-Usage(page) |
| Chip    Device    | Bus-Id          | AICore(%)    Memory-Usage(MB)                        |
+===================+=================+======================================================+
| 0       310P3     | OK              | 15.8         42                0    / 0              |
| 0       0         | 0000:82:00.0    | 0            1074 / 21534                            |
+===================+=================+======================================================+
"""


def test_soc_version_from_npu_smi():
    assert atc.soc_version_from_npu_smi(NPU_SMI) == "Ascend310P3"
    assert atc.soc_version_from_npu_smi(NPU_SMI.replace("310P3", "910B3")) == "Ascend910B3"
    assert atc.soc_version_from_npu_smi("npu-smi: command not found\n") is None


ATC_FAILURE = """\
ATC start working now, please wait for a moment.
ATC run failed, Please check the detail log, Try 'atc --help' for more information
E10016: Opname [Reshape_239] specified in [--out_nodes] is not found in the model, confirm \
whether this node name exists, or node is not split with the specified delimiter ';'
EZ3003: No supported Ops kernel and engine are found for [MyOp_111], optype [MyOp].
"""


def test_atc_failure_parsing():
    codes = atc.atc_error_codes(ATC_FAILURE)
    assert [c for c, _ in codes] == ["E10016", "EZ3003"]
    assert codes[0][1].startswith("Opname [Reshape_239]")
    message = atc.failure_message(
        255, ATC_FAILURE, ["atc", "--framework=5"], environ={"ASCEND_PROCESS_LOG_PATH": "/logs/atc"}
    )
    assert "exit 255" in message and "E10016: Opname [Reshape_239]" in message
    assert "also EZ3003" in message and "/logs/atc" in message
    assert "\n" not in message
    home = atc.failure_message(1, "ATC run failed\n", ["atc"], environ={})
    assert "no error code" in home and os.path.join("ascend", "log") in home


def _tiny_onnx(path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    node = helper.make_node("Relu", ["image"], ["out"], name="Relu_7")
    graph = helper.make_graph(
        [node],
        "tiny",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 4, 4])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 3, 4, 4])],
    )
    onnx.save(helper.make_model(graph), path)


FAKE_ATC = """\
#!{python}
import os, sys
args = dict(a[2:].split("=", 1) for a in sys.argv[1:] if "=" in a)
with open(os.path.join(os.getcwd(), "argv.txt"), "w") as h:
    h.write("\\n".join(sys.argv[1:]))
print("ATC start working now, please wait for a moment.")
if os.environ.get("FAKE_ATC_FAIL"):
    print("ATC run failed, Please check the detail log, Try 'atc --help' for more information")
    print("E10016: Opname [Relu_7] specified in [--out_nodes] is not found in the model")
    sys.exit(255)
open(args["output"] + ".om", "wb").close()
print("ATC run success, welcome to the next use.")
"""


@pytest.fixture
def fake_atc(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "atc"
    script.write_text(FAKE_ATC.format(python=sys.executable))
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", str(bin_dir) + os.pathsep + os.environ.get("PATH", ""))
    monkeypatch.setenv("ASCEND_PROCESS_LOG_PATH", str(tmp_path / "atc-logs"))
    return script


def test_convert_runs_atc_and_reports_failure(tmp_path, fake_atc, monkeypatch):
    source = str(tmp_path / "tiny.onnx")
    _tiny_onnx(source)
    target = str(tmp_path / "compiled" / "model.om")
    facts = atc.convert(source, target, (1, 3, 4, 4), soc_version="Ascend310P3")
    assert os.path.isfile(target)
    assert facts["out_nodes"] == ["Relu_7:0"] and facts["input_name"] == "image"
    assert "--input_shape=image:1,3,4,4" in facts["command"]
    # ATC ran in the target's folder, where its side files belong.
    with open(str(tmp_path / "compiled" / "argv.txt")) as handle:
        assert handle.read().splitlines() == facts["command"][1:]

    monkeypatch.setenv("FAKE_ATC_FAIL", "1")
    with pytest.raises(UserError) as failure:
        atc.convert(
            source, str(tmp_path / "other" / "model.om"), (1, 3, 4, 4), soc_version="Ascend310P3"
        )
    message = str(failure.value)
    assert "E10016" in message and "exit 255" in message
    assert str(tmp_path / "atc-logs") in message


def test_convert_without_atc_is_a_user_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(UserError, match="atc not found"):
        atc.convert("m.onnx", str(tmp_path / "m.om"), (1, 3, 320, 320), soc_version="X")


# --- ais_bench ----------------------------------------------------------------------------

AIS_BENCH_OUTPUT = """\
[INFO] acl init success
[INFO] open device 0 success
[INFO] load model refinedet_voc_320_non_nms_bs16.om success
[INFO] create model description success
[INFO] warm up 1 done
Inference array Processing: 100%|██████████| 1000/1000 [00:37<00:00, 26.98it/s]
[INFO] -----------------Performance Summary------------------
[INFO] NPU_compute_time (ms): min = 35.5, max = 36.9, mean = 35.89199981689453, \
median = 35.88, percentile(99%) = 36.5
[INFO] throughput 1000*batchsize.mean(16)/NPU_compute_time.mean(35.89199981689453): \
445.7817935276451
[INFO] ------------------------------------------------------
[INFO] unload model success, model Id is 1
"""


def test_ais_bench_parser():
    (summary,) = parse_ais_bench(AIS_BENCH_OUTPUT)
    assert summary["throughput"] == pytest.approx(445.7817935276451)
    assert summary["batchsize"] == 16
    assert summary["npu_compute_time_mean_ms"] == pytest.approx(35.89199981689453)
    assert summary["npu_compute_time_ms"]["p99_ms"] == pytest.approx(36.5)
    older = "[INFO] throughput 1000*batchsize(64)/NPU_compute_time.mean(432.05): 148.12865\n"
    assert parse_ais_bench(older)[0]["throughput"] == pytest.approx(148.12865)
    newer = "[INFO] Throughput 1000*batchsize.mean(1)/NPU_compute_time.mean(2.456): 407.16\n"
    assert parse_ais_bench(newer)[0]["batchsize"] == 1
    assert parse_ais_bench("[ERROR] load model failed\n") == []
    assert parse_batch_sizes("1,4, 8") == [1, 4, 8]
    with pytest.raises(UserError):
        parse_batch_sizes("1,x")


def test_bench_without_ais_bench_is_one_line(tmp_path):
    try:
        import ais_bench  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("ais_bench is installed here")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "models.refinedet.bench",
            "--out",
            str(tmp_path / "b"),
            "--model",
            str(tmp_path),
            "--batch-sizes",
            "1",
            "--loop",
            "2",
        ],
        cwd=ROOT,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        universal_newlines=True,
    )
    assert result.returncode == 3
    assert result.stderr.startswith("error: ais_bench is not installed")
    assert result.stderr.count("\n") == 1


# --- postprocess --------------------------------------------------------------------------


def _outputs(priors_count, classes=21):
    """Neutral network outputs: zero deltas, confident objectness, no class score."""
    arm_loc = np.zeros((priors_count, 4), np.float32)
    arm_conf = np.tile(np.array([[0.1, 0.9]], np.float32), (priors_count, 1))
    odm_loc = np.zeros((priors_count, 4), np.float32)
    odm_conf = np.zeros((priors_count, classes), np.float32)
    odm_conf[:, 0] = 1.0
    return arm_loc, arm_conf, odm_loc, odm_conf


def _cxcywh(x1, y1, x2, y2):
    return [(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1]


def test_objectness_filter_zeroes_class_scores():
    priors = np.array([[0.3, 0.3, 0.2, 0.2], [0.7, 0.7, 0.2, 0.2]], np.float32)
    arm_loc, arm_conf, odm_loc, odm_conf = _outputs(2)
    odm_conf[:, 15] = 0.9  # person, on both priors
    arm_conf[0] = [0.995, 0.005]  # prior 0: not an object for the ARM
    arm_conf[1] = [0.98, 0.02]
    dets = post.detect_image(arm_loc, arm_conf, odm_loc, odm_conf, priors)
    assert len(dets) == 21 and dets[0].shape == (0, 5)
    np.testing.assert_allclose(dets[15], [[0.6, 0.6, 0.8, 0.8, 0.9]], atol=1e-6)
    # Exactly at the threshold counts as "no object" (<=), as the reference.
    arm_conf[1] = [0.99, 0.01]
    assert post.detect_image(arm_loc, arm_conf, odm_loc, odm_conf, priors)[15].shape == (0, 5)
    scores = post.filtered_scores(arm_conf, odm_conf)
    assert np.all(scores == 0)


def test_two_stage_decode_on_hand_computed_prior():
    priors = np.array([[0.5, 0.5, 0.2, 0.2]], np.float32)
    arm_loc, arm_conf, odm_loc, odm_conf = _outputs(1)
    # ARM: centre x + 1 * 0.1 * 0.2 -> refined anchor (0.52, 0.5, 0.2, 0.2).
    arm_loc[0] = [1.0, 0.0, 0.0, 0.0]
    # ODM: width * exp(0.2 * ln2 / 0.2) = 0.4 -> box (0.32, 0.4, 0.72, 0.6).
    odm_loc[0] = [0.0, 0.0, math.log(2.0) / 0.2, 0.0]
    odm_conf[0, 7] = 0.5
    (per_class,) = post.postprocess(
        (arm_loc[None], arm_conf[None], odm_loc[None], odm_conf[None]), priors, [(50, 100)]
    )
    np.testing.assert_allclose(per_class[7], [[32.0, 20.0, 72.0, 30.0, 0.5]], atol=1e-4)
    assert all(d.shape == (0, 5) for i, d in enumerate(per_class) if i != 7)


def test_nms_at_045_and_top_k():
    # Same-size boxes shifted by d along x: IoU = (0.2 - d) / (0.2 + d).
    base = (0.2, 0.4, 0.4, 0.6)
    shifted = lambda d: (base[0] + d, base[1], base[2] + d, base[3])  # noqa: E731
    priors = np.array(
        [_cxcywh(*base), _cxcywh(*shifted(0.04)), _cxcywh(*shifted(0.08))], np.float32
    )
    arm_loc, arm_conf, odm_loc, odm_conf = _outputs(3)
    odm_conf[:, 3] = [0.9, 0.8, 0.7]  # IoU(0, 1) = 0.667 > 0.45: dropped
    dets = post.detect_image(arm_loc, arm_conf, odm_loc, odm_conf, priors)[3]
    # IoU(0, 2) = 0.12 / 0.28 = 0.43 <= 0.45: kept.
    np.testing.assert_allclose(dets[:, 4], [0.9, 0.7], atol=1e-6)
    np.testing.assert_allclose(dets[1, :4], shifted(0.08), atol=1e-6)
    # With top_k 2 only the two highest enter NMS: box 2 never competes.
    dets = post.detect_image(arm_loc, arm_conf, odm_loc, odm_conf, priors, top_k=2)[3]
    np.testing.assert_allclose(dets[:, 4], [0.9], atol=1e-6)
    # keep_top_k caps detections over all classes.
    odm_conf[:, 4] = [0.95, 0.0, 0.0]
    capped = post.detect_image(arm_loc, arm_conf, odm_loc, odm_conf, priors, keep_top_k=2)
    assert [len(d) for d in capped][3:5] == [1, 1]
    assert capped[3][0, 4] == pytest.approx(0.9) and capped[4][0, 4] == pytest.approx(0.95)


def test_no_detections():
    priors = prior_boxes()
    arm_loc, arm_conf, odm_loc, odm_conf = _outputs(len(priors))
    odm_conf[:, 1:] = 0.01  # at the threshold: not > 0.01
    dets = post.detect_image(arm_loc, arm_conf, odm_loc, odm_conf, priors)
    assert len(dets) == 21 and all(d.shape == (0, 5) for d in dets)


def test_seed_output_order_is_recognized():
    n = 5
    ours = (np.zeros((1, n, 4)), np.zeros((1, n, 2)), np.ones((1, n, 4)), np.zeros((1, n, 21)))
    assert post.order_outputs(ours) == ours
    seed = (ours[2], ours[3], ours[0], ours[1])
    assert all(a is b for a, b in zip(post.order_outputs(seed), ours))
    with pytest.raises(ValueError):
        post.order_outputs((*ours[:3], np.zeros((1, n, 80))))
    assert len(post.VOC_CLASSES) == 20 and post.CLASSES[15] == "person"


# --- infer stage --------------------------------------------------------------------------


def _prepare(index):
    """A synthetic VOC image already resized to 320x320, with its original size."""
    rng = np.random.RandomState(index)
    pixels = rng.randint(0, 256, (320, 320, 3)).astype(np.uint8)
    return pixels, {"id": "%06d" % (index + 1), "orig_hw": [300 + index, 400 + 10 * index]}


def _assert_same_detections(found, expected, atol=2e-3):
    """Equal (N, 5) detections, in any order (detections.json rounds them)."""
    found = np.asarray(found, dtype=np.float64).reshape(-1, 5)
    expected = np.asarray(expected, dtype=np.float64).reshape(-1, 5)
    assert found.shape == expected.shape
    if len(found):
        distance = np.abs(found[:, None, :] - expected[None, :, :]).max(-1)
        assert distance.min(axis=0).max() <= atol and distance.min(axis=1).max() <= atol


@pytest.mark.slow
def test_infer_stage_end_to_end(exported, tmp_path):
    import onnxruntime

    from zoostage.store import Store, feed_spec, write_store

    folder, _ = exported
    data = tmp_path / "data"
    data.mkdir()
    feed = feed_spec((104, 117, 123), channels="rgb")
    write_store(str(data), range(5), (320, 320), _prepare, feed, workers=1)
    compiled = tmp_path / "compile"
    compiled.mkdir()
    # A compile folder names its model file inside itself (an absolute name is refused).
    shutil.copy(os.path.join(folder, "model.onnx"), compiled / "exported.onnx")
    (compiled / "compile.json").write_text(json.dumps({"model": "exported.onnx"}))
    out = tmp_path / "infer"
    subprocess.check_call(
        [
            sys.executable,
            "-m",
            "models.refinedet.infer",
            "--out",
            str(out),
            "--model",
            str(compiled),
            "--data",
            str(data),
            "--backend",
            "onnxruntime",
            "--batch-size",
            "2",
            "--device",
            "cpu",
            "--warmup",
            "1",
        ],
        cwd=ROOT,
        env=_env(),
    )
    with open(str(out / "detections.json")) as handle:
        detections = json.load(handle)
    with open(str(out / "timing.json")) as handle:
        timing = json.load(handle)
    assert detections["classes"] == list(post.VOC_CLASSES)
    assert sorted(detections["images"]) == ["%06d" % i for i in range(1, 6)]
    assert all(sorted(v) == sorted(post.VOC_CLASSES) for v in detections["images"].values())
    assert timing["images"] == 5 and timing["batch_size"] == 2
    assert timing["calls"] == 2  # the padded last batch is not timed
    assert timing["by_batch"] == {"2": {"throughput": timing["throughput"]}}

    # The last image ran in a batch padded with a copy of itself; the copy's outputs were
    # dropped and the image's own detections are those of that batch's first row.
    store = Store(str(data))
    session = onnxruntime.InferenceSession(
        os.path.join(folder, "model.onnx"), providers=["CPUExecutionProvider"]
    )
    outputs = [o[:1] for o in session.run(None, {"image": store.batch([4, 4])})]
    (expected,) = post.postprocess(outputs, prior_boxes(), [store.records[4]["orig_hw"]])
    found = detections["images"]["000005"]
    total = 0
    for label, name in enumerate(post.CLASSES[1:], 1):
        _assert_same_detections(found[name], expected[label])
        total += len(found[name])
    assert total > 0
    # Boxes are in original-image pixels (random weights: boxes stay near their priors).
    h, w = store.records[4]["orig_hw"]
    boxes = np.concatenate([np.asarray(v).reshape(-1, 5) for v in found.values()])
    assert boxes[:, [0, 2]].max() > 0.5 * w and boxes[:, [1, 3]].max() > 0.5 * h


def test_detections_text_reads_back_exact_float32(tmp_path):
    from models.refinedet.infer import float32_text, write_detections

    values = np.array([0.1, 1 / 3.0, 123.456789, 1e-7, -0.0, 2.5e6], np.float32)
    text = float32_text(values)
    assert np.array_equal(np.array([float(t) for t in text], np.float32), values)
    assert text[0] == "0.1"
    assert list(float32_text(np.array([np.inf, -np.inf, np.nan], np.float32))) == [
        "Infinity",
        "-Infinity",
        "NaN",
    ]
    per_class = [np.zeros((0, 5), np.float32) for _ in range(21)]
    per_class[12] = np.array([[1.5, 2.25, 30.125, 40.0, 0.3333333]], np.float32)
    path = str(tmp_path / "d.json")
    write_detections(path, {"classes": list(post.VOC_CLASSES)}, [("000001", per_class)])
    with open(path) as handle:
        data = json.load(handle)
    assert data["images"]["000001"]["dog"] == [[1.5, 2.25, 30.125, 40.0, 0.3333333]]
    assert data["images"]["000001"]["cat"] == []
    assert len(data["images"]["000001"]) == 20


@pytest.mark.slow
def test_infer_arguments(tmp_path):
    from models.refinedet.infer import RefineDetTask, build_parser
    from zoostage import infer
    from zoostage.backends.compile import compiled_model
    from zoostage.shards import parse_shard, shard_indices

    assert parse_shard("1/3") == (1, 3)
    shards = [shard_indices(10, "%d/3" % i) for i in range(3)]
    assert shards[1] == [1, 4, 7]
    assert sorted(i for shard in shards for i in shard) == list(range(10))
    assert shard_indices(4, None) == [0, 1, 2, 3]
    with pytest.raises(UserError):
        parse_shard("3/3")
    with pytest.raises(UserError):
        parse_shard("a/b")
    with pytest.raises(UserError, match="compile stage"):
        compiled_model(str(tmp_path / "missing"), ".onnx")
    (tmp_path / "model.om").write_bytes(b"")
    assert compiled_model(str(tmp_path), ".om")[0] == str(tmp_path / "model.om")
    args = build_parser().parse_args(
        [
            *("--out", str(tmp_path / "out"), "--model", str(tmp_path)),
            *("--data", str(tmp_path), "--backend", "om", "--device", "cpu"),
        ]
    )
    with pytest.raises(UserError, match="runs on an NPU"):
        infer.run(args, RefineDetTask)


def test_both_profiles_run_the_seed_steps_and_differ_in_the_published_number():
    """RefineDet_postprocess.py imports RefineDet.PyTorch's own Detect_RefineDet and its
    eval code: the seed and upstream profiles are the same steps (this module's tests
    pin them); the report compares with 79.60 (seed, 310P3 .om) or 79.81 (upstream,
    RefineDet.PyTorch's README, GPU float32)."""
    from zoostage import verdict
    from zoostage.recipe import load_recipe

    recipe = load_recipe("refinedet")
    assert recipe.param_specs["profile"].default == "seed"
    assert verdict.published_for(recipe.published["mAP"], "seed")["value"] == 79.60
    assert verdict.published_for(recipe.published["mAP"], "upstream")["value"] == 79.81
    # No RefineDet stage but the report takes the profile: the steps do not change.
    takes = [stage.name for stage in recipe.stages if "profile" in stage.args]
    assert takes == ["report"]
