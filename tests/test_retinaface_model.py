"""RetinaFace mobilenet0.25: network layout, priors, postprocessing, export and infer stages.

CPU only and small: most work runs at 320x320 (4200 anchors); one shape check at 1000.
"""

import json
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from data_scripts.widerface.predictions import (  # noqa: E402
    read_image_predictions,
    write_image_predictions,
)
from models.retinaface import CFG_MNET, MEAN_BGR  # noqa: E402
from models.retinaface import export as export_stage  # noqa: E402
from models.retinaface import infer as infer_stage  # noqa: E402
from models.retinaface.net import RetinaFace, build_model  # noqa: E402
from models.retinaface.postprocess import check_cuts, decode_landmarks, detect  # noqa: E402
from models.retinaface.priors import prior_box, prior_count  # noqa: E402
from tests.conftest import run_stage  # noqa: E402
from zoostage import infer  # noqa: E402
from zoostage.cli import write_json  # noqa: E402
from zoostage.errors import USER_ERROR_EXIT, UserError  # noqa: E402
from zoostage.shards import parse_shard  # noqa: E402
from zoostage.store import Store, feed_spec, write_store  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = 320

# Representative keys of biubug6/Pytorch_Retinaface's mobilenet0.25_Final.pth (models/net.py,
# models/retinaface.py: IntermediateLayerGetter body, FPN, SSH with its `conv7x7_3` spelling,
# three ModuleList heads), with their shapes.
REFERENCE_KEYS = {
    "body.stage1.0.0.weight": (8, 3, 3, 3),
    "body.stage1.0.1.running_mean": (8,),
    "body.stage1.0.1.num_batches_tracked": (),
    "body.stage1.1.0.weight": (8, 1, 3, 3),
    "body.stage1.1.3.weight": (16, 8, 1, 1),
    "body.stage1.5.4.running_var": (64,),
    "body.stage2.0.0.weight": (64, 1, 3, 3),
    "body.stage2.5.3.weight": (128, 128, 1, 1),
    "body.stage3.0.3.weight": (256, 128, 1, 1),
    "body.stage3.1.4.bias": (256,),
    "fpn.output1.0.weight": (64, 64, 1, 1),
    "fpn.output2.0.weight": (64, 128, 1, 1),
    "fpn.output3.0.weight": (64, 256, 1, 1),
    "fpn.merge1.0.weight": (64, 64, 3, 3),
    "fpn.merge2.1.running_mean": (64,),
    "ssh1.conv3X3.0.weight": (32, 64, 3, 3),
    "ssh1.conv5X5_1.0.weight": (16, 64, 3, 3),
    "ssh2.conv5X5_2.1.weight": (16,),
    "ssh3.conv7X7_2.0.weight": (16, 16, 3, 3),
    "ssh3.conv7x7_3.1.running_var": (16,),
    "ClassHead.0.conv1x1.weight": (4, 64, 1, 1),
    "ClassHead.2.conv1x1.bias": (4,),
    "BboxHead.2.conv1x1.bias": (8,),
    "BboxHead.1.conv1x1.weight": (8, 64, 1, 1),
    "LandmarkHead.1.conv1x1.weight": (20, 64, 1, 1),
    "LandmarkHead.0.conv1x1.bias": (20,),
}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: the test machines are small and shared; spinning threads stall."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model():
    return build_model(None, seed=0)


# -- network -------------------------------------------------------------------------------


def test_state_dict_keys_match_reference(model):
    state = model.state_dict()
    # The reference loads mobilenet0.25_Final.pth with "Missing keys:0, Unused checkpoint
    # keys:0, Used keys:300".
    assert len(state) == 300
    for key, shape in REFERENCE_KEYS.items():
        assert key in state, key
        assert tuple(state[key].shape) == shape, key
    # IntermediateLayerGetter drops the classifier; nothing else sits at the top level.
    assert not [k for k in state if k.startswith(("body.avg", "body.fc"))]
    tops = sorted(set(k.split(".")[0] for k in state))
    assert tops == ["BboxHead", "ClassHead", "LandmarkHead", "body", "fpn", "ssh1", "ssh2", "ssh3"]


def test_parameter_count_matches_reference(model):
    assert sum(p.numel() for p in model.parameters()) == 426608


def test_forward_shapes_and_softmax(model):
    with torch.no_grad():
        loc, conf, landms = model(torch.randn(2, 3, SIZE, SIZE))
    anchors = prior_count((SIZE, SIZE))
    assert anchors == 4200
    assert tuple(loc.shape) == (2, anchors, 4)
    assert tuple(conf.shape) == (2, anchors, 2)
    assert tuple(landms.shape) == (2, anchors, 10)
    assert torch.allclose(conf.sum(-1), torch.ones(2, anchors), atol=1e-5)


def test_forward_shapes_at_1000(model):
    with torch.no_grad():
        outputs = model(torch.zeros(1, 3, 1000, 1000))
    assert [tuple(o.shape) for o in outputs] == [(1, 41236, 4), (1, 41236, 2), (1, 41236, 10)]


def test_from_config_and_seeded_init():
    assert RetinaFace.from_config(CFG_MNET).state_dict().keys() == RetinaFace().state_dict().keys()
    with pytest.raises(ValueError):
        RetinaFace.from_config(dict(CFG_MNET, name="Resnet50"))
    a, b = build_model(None, seed=3), build_model(None, seed=3)
    c = build_model(None, seed=4)
    key = "fpn.merge1.0.weight"
    assert torch.equal(a.state_dict()[key], b.state_dict()[key])
    assert not torch.equal(a.state_dict()[key], c.state_dict()[key])
    assert not a.training


# -- checkpoints ---------------------------------------------------------------------------


def test_checkpoint_with_module_prefix_loads(model, tmp_path):
    path = str(tmp_path / "dp.pth")
    torch.save(dict(("module." + k, v) for k, v in model.state_dict().items()), path)
    loaded = build_model(path)
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_checkpoint_without_prefix_or_batch_counters_loads(model, tmp_path):
    # {'state_dict': ...} wrapper; pre-0.4.1 files have no num_batches_tracked.
    state = dict((k, v) for k, v in model.state_dict().items() if "num_batches" not in k)
    path = str(tmp_path / "plain.pth")
    torch.save({"state_dict": state}, path)
    loaded = build_model(path)
    assert torch.equal(
        loaded.state_dict()["ssh2.conv3X3.0.weight"], model.state_dict()["ssh2.conv3X3.0.weight"]
    )


def test_wrong_keys_give_user_error_naming_them(model, tmp_path):
    state = dict(model.state_dict())
    state["vgg.0.weight"] = state.pop("body.stage1.0.0.weight")
    path = str(tmp_path / "other.pth")
    torch.save(state, path)
    with pytest.raises(UserError) as info:
        build_model(path)
    message = str(info.value)
    assert "\n" not in message
    assert "vgg.0.weight" in message and "body.stage1.0.0.weight" in message
    assert path in message


def test_wrong_shapes_give_user_error(model, tmp_path):
    state = dict(model.state_dict())
    state["ClassHead.0.conv1x1.weight"] = torch.zeros(6, 64, 1, 1)  # 3 anchors, not 2
    path = str(tmp_path / "shapes.pth")
    torch.save(state, path)
    with pytest.raises(UserError, match=r"ClassHead\.0\.conv1x1\.weight expected \[4, 64, 1, 1\]"):
        build_model(path)


def test_truncated_checkpoint_gives_user_error(model, tmp_path):
    path = str(tmp_path / "cut.pth")
    torch.save(model.state_dict(), path)
    with open(path, "rb") as handle:
        data = handle.read()
    with open(path, "wb") as handle:
        handle.write(data[: len(data) // 2])
    with pytest.raises(UserError, match="truncated or not a torch file"):
        build_model(path)


# -- priors --------------------------------------------------------------------------------


def _reference_priors(height, width, cfg):
    """A direct transcription of the reference's PriorBox loop."""
    out = []
    for step, sizes in zip(cfg["steps"], cfg["min_sizes"]):
        rows, cols = -(-height // step), -(-width // step)
        for i in range(rows):
            for j in range(cols):
                for size in sizes:
                    out += [
                        (j + 0.5) * step / width,
                        (i + 0.5) * step / height,
                        size / width,
                        size / height,
                    ]
    return np.asarray(out, dtype=np.float32).reshape(-1, 4)


def test_prior_box_matches_reference_order():
    for hw in ((SIZE, SIZE), (72, 100)):
        priors = prior_box(hw)
        assert priors.dtype == np.float32
        np.testing.assert_array_equal(priors, _reference_priors(hw[0], hw[1], CFG_MNET))
    assert prior_count((1000, 1000)) == 41236
    priors = prior_box((1000, 1000))
    assert priors.shape == (41236, 4)
    np.testing.assert_allclose(
        priors[:2], [[0.004, 0.004, 0.016, 0.016], [0.004, 0.004, 0.032, 0.032]], rtol=1e-6
    )
    np.testing.assert_allclose(priors[-1], [1.008, 1.008, 0.512, 0.512], rtol=1e-6)


# -- postprocessing ------------------------------------------------------------------------


def _softmax_scores(scores):
    scores = np.asarray(scores, dtype=np.float32)
    return np.stack([1 - scores, scores], axis=1)


def test_decode_one_prior_by_hand():
    priors = np.array([[0.5, 0.5, 0.1, 0.2]], dtype=np.float32)
    loc = np.array([[1.0, -1.0, np.log(2.0) / 0.2, 0.0]], dtype=np.float32)
    landms = np.array([[1.0, 0.0, 0.0, 1.0, -1.0, 0.0, 0.0, -1.0, 0.0, 0.0]], dtype=np.float32)
    # Normalized: centre (0.51, 0.48), size (0.2, 0.2) -> (0.41, 0.38, 0.61, 0.58); on a
    # 100 x 200 (H x W) input that is (82, 38, 122, 58); resized by 0.5 from the original.
    dets, points = detect(loc, _softmax_scores([0.9]), landms, priors, (100, 200), scale=0.5)
    np.testing.assert_allclose(dets, [[164, 76, 244, 116, 0.9]], rtol=1e-5)
    # Landmarks: prior centre + delta * 0.1 * prior size, in the same pixels.
    expected = np.array([[0.51, 0.5], [0.5, 0.52], [0.49, 0.5], [0.5, 0.48], [0.5, 0.5]])
    expected = (expected * [200, 100] / 0.5).reshape(1, 10)
    np.testing.assert_allclose(points, expected, rtol=1e-5)
    np.testing.assert_allclose(
        decode_landmarks(landms, priors, (0.1, 0.2)) * np.tile([200, 100], 5),
        expected * 0.5,
        rtol=1e-5,
    )


def _boxes_as_priors(boxes, input_size):
    """Priors that decode, with zero deltas, to `boxes` (pixels) on a square input."""
    boxes = np.asarray(boxes, dtype=np.float64) / input_size
    centers = (boxes[:, :2] + boxes[:, 2:]) / 2
    return np.concatenate([centers, boxes[:, 2:] - boxes[:, :2]], axis=1).astype(np.float32)


def _run(boxes, scores, **options):
    priors = _boxes_as_priors(boxes, 100)
    n = len(priors)
    return detect(
        np.zeros((n, 4)), _softmax_scores(scores), np.zeros((n, 10)), priors, (100, 100), **options
    )


def test_confidence_threshold_is_strict():
    boxes = [[0, 0, 10, 10], [50, 50, 60, 60], [20, 20, 30, 40]]
    dets, points = _run(boxes, [0.02, 0.021, 0.5])
    np.testing.assert_allclose(dets[:, 4], [0.5, 0.021], rtol=1e-6)
    np.testing.assert_allclose(dets[:, :4], [[20, 20, 30, 40], [50, 50, 60, 60]], atol=1e-4)
    assert points.shape == (2, 10)


def test_nms_suppresses_overlaps_with_inclusive_pixels():
    # [0,0,4,4] vs [2,0,6,4]: IoU 8/24 = 0.33 as continuous areas, but 15/35 = 0.43 with
    # the reference's inclusive widths (x2 - x1 + 1): py_cpu_nms suppresses it at 0.4.
    boxes = [[0, 0, 4, 4], [2, 0, 6, 4], [50, 50, 80, 80], [52, 50, 82, 80], [0, 60, 30, 90]]
    dets, _ = _run(boxes, [0.9, 0.8, 0.7, 0.95, 0.3])
    np.testing.assert_allclose(dets[:, 4], [0.95, 0.9, 0.3], rtol=1e-6)
    np.testing.assert_allclose(
        dets[:, :4], [[52, 50, 82, 80], [0, 0, 4, 4], [0, 60, 30, 90]], atol=1e-4
    )


def test_seed_has_no_cuts_upstream_cuts_are_options():
    # 800 separate boxes (no overlaps): every one survives NMS in the seed profile --
    # the seed's postprocess.py cuts nothing (its "keep top-K" comment cuts nothing).
    boxes = [
        [(i % 40) * 2.5, (i // 40) * 5, (i % 40) * 2.5 + 1, (i // 40) * 5 + 1] for i in range(800)
    ]
    scores = np.linspace(0.99, 0.03, 800)
    dets, _ = _run(boxes, scores)
    assert len(dets) == 800
    # test_widerface.py's commented-out cuts, enabled as options: 5000 before NMS (here
    # 5) and 750 after (here 3).
    dets, _ = _run(boxes, scores, top_k=5)
    np.testing.assert_allclose(dets[:, 4], scores[:5], rtol=1e-6)
    dets, _ = _run(boxes, scores, keep_top_k=3)
    np.testing.assert_allclose(dets[:, 4], scores[:3], rtol=1e-6)
    check_cuts("upstream", 5000, 750)
    check_cuts("seed", 0, 0)
    with pytest.raises(ValueError, match="profile=upstream"):
        check_cuts("seed", 5000, 0)
    with pytest.raises(ValueError, match="profile"):
        check_cuts("mine", 0, 0)


def test_result_lines_are_the_seeds(tmp_path):
    """postprocess.py l.115-120 (the seed) writes each row `box` of its float32 dets as
    int(box[0]), int(box[1]), int(box[2]) - int(box[0]), int(box[3]) - int(box[1]) and
    str(box[4]): truncation toward zero, and the float32's own shortest text."""
    dets = np.array([[10.7, 20.2, 30.9, 40.5, 0.1], [-0.5, 3.99, 7.0, 8.0, 0.30000001]], np.float32)
    write_image_predictions(str(tmp_path), "0--Parade/img_2", dets)
    lines = (tmp_path / "0--Parade" / "img_2.txt").read_text().splitlines()
    seed = [
        "%d %d %d %d %s"
        % (int(b[0]), int(b[1]), int(b[2]) - int(b[0]), int(b[3]) - int(b[1]), str(b[4]))
        for b in dets
    ]
    assert lines == ["img_2", "2", *seed]
    assert lines[2:] == ["10 20 20 20 0.1", "0 3 7 5 0.3"]  # not repr(float): 0.10000000149...


def test_no_detections_writes_empty_file(tmp_path):
    dets, points = _run([[0, 0, 10, 10]], [0.01])
    assert dets.shape == (0, 5) and points.shape == (0, 10)
    write_image_predictions(str(tmp_path), "0--Parade/img_1", dets)
    path = tmp_path / "0--Parade" / "img_1.txt"
    assert path.read_text() == "img_1\n0\n"
    assert read_image_predictions(str(path)).shape == (0, 5)


def _seed_postprocess(loc, conf, landms, priors, size, resize):
    """The seed's postprocess.py (Ascend ModelZoo-PyTorch
    AscendIE/TorchAIE/built-in/cv/face/retinaface/postprocess.py, lines 66-99) written out
    with numpy in its operation order (it uses torch float32 tensors):
      decode (Pytorch_Retinaface utils/box_utils.py): c = p_c + l_c * 0.1 * p_s,
        s = p_s * exp(l_s * 0.2), x1 = c - s / 2, x2 = x1 + s;
      boxes * 1000 / resize (resize: float32); landmarks p_c + l * 0.1 * p_s, same scaling;
      inds = scores > 0.02; order = scores.argsort()[::-1] (no cut);
      dets = hstack(boxes, scores).astype(float32); keep = py_cpu_nms(dets, 0.4);
      dets[keep], landms[keep]."""
    from tests.test_boxes import py_cpu_nms

    v = CFG_MNET["variance"]
    resize = np.float32(resize)
    centers = priors[:, :2] + loc[:, :2] * v[0] * priors[:, 2:]
    sizes = priors[:, 2:] * np.exp(loc[:, 2:] * v[1])
    corner = centers - sizes / 2
    boxes = np.concatenate([corner, corner + sizes], axis=1)
    boxes = boxes * np.full(4, size, np.float32) / resize
    points = priors[:, None, :2] + landms.reshape(-1, 5, 2) * v[0] * priors[:, None, 2:]
    points = points.reshape(-1, 10) * np.full(10, size, np.float32) / resize
    scores = conf[:, 1]
    inds = np.where(scores > 0.02)[0]
    boxes, points, scores = boxes[inds], points[inds], scores[inds]
    order = scores.argsort()[::-1]
    boxes, points, scores = boxes[order], points[order], scores[order]
    dets = np.hstack((boxes, scores[:, np.newaxis])).astype(np.float32, copy=False)
    keep = py_cpu_nms(dets, 0.4)
    return dets[keep, :], points[keep]


def test_detect_is_the_seed_postprocess_step_by_step():
    rng = np.random.RandomState(0)
    priors = prior_box((SIZE, SIZE))
    n = len(priors)
    loc = rng.normal(0, 1, (n, 4)).astype(np.float32)
    landms = rng.normal(0, 1, (n, 10)).astype(np.float32)
    logits = rng.normal(0, 3, (n, 2)).astype(np.float32)
    conf = (np.exp(logits) / np.exp(logits).sum(1, keepdims=True)).astype(np.float32)
    conf[::7, 1] = conf[0, 1]  # ties: the order must follow the seed's own sort
    resize = SIZE / 1024.0
    dets, points = detect(loc, conf, landms, priors, (SIZE, SIZE), scale=resize)
    expected, expected_points = _seed_postprocess(loc, conf, landms, priors, SIZE, resize)
    assert len(dets) > 750  # more than the old keep_top_k: nothing is cut
    np.testing.assert_array_equal(dets, expected)  # bit for bit, in the same order
    np.testing.assert_array_equal(points, expected_points)


# -- stages --------------------------------------------------------------------------------


def _random_weights(folder, seed=0):
    os.makedirs(folder)
    write_json(
        os.path.join(folder, "weights.json"),
        {"source": "random", "file": None, "sha256": None, "seed": seed, "url": None},
    )
    return folder


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The export stage run by its command line at 320x320 with a seeded random init."""
    base = tmp_path_factory.mktemp("export")
    weights = _random_weights(str(base / "weights"), seed=5)
    out = str(base / "export")
    result = run_stage(
        "models.retinaface.export", "--out", out, "--weights", weights, "--input-size", SIZE
    )
    assert result.returncode == 0, result.stderr
    assert "max abs diff" in result.stdout
    return out


@pytest.mark.slow
def test_export_stage_end_to_end(exported):
    with open(os.path.join(exported, "export.json")) as handle:
        info = json.load(handle)
    assert info["weights"] == "random" and info["seed"] == 5
    assert info["input_shape"] == [1, 3, SIZE, SIZE]
    assert info["outputs"] == {"loc": [1, 4200, 4], "conf": [1, 4200, 2], "landms": [1, 4200, 10]}
    assert info["max_abs_diff"] <= 1e-4
    assert len(info["model_sha256"]) == 64
    assert os.path.isfile(os.path.join(exported, "env.json"))
    traced = torch.jit.load(os.path.join(exported, "model.ts"))
    eager = build_model(None, seed=5)
    x = torch.rand(2, 3, SIZE, SIZE) * 255 - 117  # another batch size than traced
    with torch.no_grad():
        for a, b in zip(traced(x), eager(x)):
            assert float((a - b).abs().max()) <= 1e-4


def test_export_given_checkpoint(model, tmp_path):
    weights = tmp_path / "weights"
    weights.mkdir()
    torch.save(
        dict(("module." + k, v) for k, v in model.state_dict().items()),
        str(weights / "mobilenet0.25_Final.pth"),
    )
    write_json(
        str(weights / "weights.json"),
        {"source": "given", "file": "mobilenet0.25_Final.pth", "sha256": "ab" * 32, "seed": None},
    )
    out = tmp_path / "export"
    out.mkdir()
    info = export_stage.export(str(out), str(weights), input_size=64, batch_size=2)
    assert info["weights"] == "given" and info["sha256"] == "ab" * 32
    assert info["input_shape"] == [2, 3, 64, 64]
    assert info["outputs"]["conf"] == [2, prior_count((64, 64)), 2]


def test_export_stage_wrong_checkpoint_is_one_line(model, tmp_path):
    weights = tmp_path / "weights"
    weights.mkdir()
    state = dict(model.state_dict())
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, str(weights / "mobilenet0.25_Final.pth"))
    write_json(
        str(weights / "weights.json"),
        {"source": "cache", "file": "mobilenet0.25_Final.pth", "sha256": None, "seed": None},
    )
    result = run_stage(
        "models.retinaface.export",
        "--out",
        tmp_path / "export",
        "--weights",
        weights,
        "--input-size",
        64,
    )
    assert result.returncode == USER_ERROR_EXIT
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "extra.weight" in lines[0]
    assert "Traceback" not in result.stderr


# A tiny store: generated "original" images of several sizes, resized (nearest) so the long
# side fits SIZE and padded bottom-right, as the WIDER FACE data stage lays them out.
IMAGES = [
    ("0--Parade/a", 480, 640, 1),
    ("1--Handshaking/b", 200, 320, 2),
    ("1--Handshaking/c", 400, 200, 3),
]


def _prepare(item):
    image_id, height, width, seed = item
    rng = np.random.RandomState(seed)
    original = rng.randint(0, 256, (height, width, 3)).astype(np.uint8)
    scale = float(SIZE) / max(height, width)
    h, w = round(height * scale), round(width * scale)
    rows = np.minimum((np.arange(h) / scale).astype(int), height - 1)
    cols = np.minimum((np.arange(w) / scale).astype(int), width - 1)
    meta = {"id": image_id, "scale": scale, "orig_hw": [height, width]}
    return original[rows][:, cols], meta


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("data"))
    write_store(out, IMAGES, (SIZE, SIZE), _prepare, feed_spec(MEAN_BGR), workers=1)
    return out


@pytest.mark.slow
def test_infer_stage_end_to_end(exported, store_dir, tmp_path):
    out = tmp_path / "infer"
    result = run_stage(
        "models.retinaface.infer",
        "--out",
        out,
        "--model",
        exported,
        "--data",
        store_dir,
        "--backend",
        "torchscript",
        "--batch-size",
        2,
        "--device",
        "cpu",
    )
    assert result.returncode == 0, result.stderr
    with open(str(out / "timing.json")) as handle:
        timing = json.load(handle)
    assert timing["backend"] == "torchscript" and timing["images"] == 3
    assert timing["batch_size"] == 2 and timing["calls"] >= 1 and timing["mean_ms"] > 0
    with open(str(out / "infer.json")) as handle:
        assert json.load(handle)["images"] == 3

    # Each file equals the eager network + postprocessing on the same batch.
    store = Store(store_dir)
    eager = build_model(None, seed=5)
    with torch.no_grad():
        outputs = [o.numpy() for o in eager(torch.from_numpy(store.batch([0, 1])))]
    priors = prior_box((SIZE, SIZE))
    for i, (image_id, _, _, _) in enumerate(IMAGES):
        path = out / "predictions" / (image_id + ".txt")
        assert path.is_file(), path
        assert path.read_text().splitlines()[0] == image_id.split("/")[1]
        if i < 2:
            dets, _ = detect(
                outputs[0][i],
                outputs[1][i],
                outputs[2][i],
                priors,
                (SIZE, SIZE),
                scale=store.records[i]["scale"],
            )
            found = read_image_predictions(str(path))
            assert found.shape == (len(dets), 5)
            np.testing.assert_allclose(found[:, 4], dets[:, 4], rtol=1e-5)
            np.testing.assert_allclose(found[:, :2], np.trunc(dets[:, :2]), atol=1)


@pytest.mark.slow
def test_infer_shard_and_model_lookup(exported, store_dir, tmp_path):
    out = tmp_path / "shard"
    out.mkdir()
    record = run_infer(out, exported, store_dir, "--shard", "1/2")
    assert record["images"] == 1 and record["shard"] == [1, 2]
    written = sorted(p.name for p in (out / "predictions").rglob("*.txt"))
    assert written == ["b.txt"]
    with pytest.raises(UserError):
        parse_shard("2/2")
    with pytest.raises(UserError, match=r"no model file model\.ts"):
        run_infer(out, str(tmp_path), store_dir)


def run_infer(out, model, data, *extra):
    """The infer stage in this process, parsed from its own command line."""
    args = infer_stage.build_parser().parse_args(
        ["--out", str(out), "--model", str(model), "--data", str(data), *extra]
    )
    return infer.run(args, infer_stage.RetinaFaceTask)


# -- compile: the seed's precision ---------------------------------------------------------


def test_seed_compiles_with_torch_aies_default_precision(tmp_path, fake_torch_aie):
    """inference.py l.34-35 (AscendIE/TorchAIE/built-in/cv/face/retinaface) calls
    torch_aie.compile(model, inputs=[torch_aie.Input((1, 3, 1000, 1000), ...)]) with no
    precision_policy: the recipe's default precision passes none either."""

    from zoostage.backends import get_backend
    from zoostage.recipe import load_recipe

    assert load_recipe("retinaface").params["precision"] == "default"
    calls = fake_torch_aie
    torch.jit.trace(torch.nn.Conv2d(3, 2, 1), torch.randn(1, 3, 4, 4)).save(str(tmp_path / "m.ts"))
    backend = get_backend("aie", device="npu:0")
    facts = backend.compile(
        str(tmp_path / "m.ts"), str(tmp_path / "c.ts"), [1, 3, 4, 4], precision="default"
    )
    assert "precision_policy" not in calls and calls["inputs"] == [
        ("Input", (1, 3, 4, 4), torch.float)
    ]
    assert facts["precision"] == "default (torch_aie's own)"
    backend.compile(str(tmp_path / "m.ts"), str(tmp_path / "d.ts"), [1, 3, 4, 4], precision="fp32")
    assert calls["precision_policy"] == "fp32-policy"


# -- both profiles, end to end ------------------------------------------------------------


@pytest.mark.slow
def test_both_profiles_run_end_to_end_on_generated_data(tmp_path, monkeypatch, capfd):
    from data_scripts.widerface.sample import make_sample
    from zoobox.core.errors import StageStopped
    from zoobox.jobs.run_and_summarize import run_and_summarize
    from zoobox.pipeline.configure import build_pipeline, settings_from

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    data = tmp_path / "wider"
    make_sample(str(data), events=2, per_event=2)

    def run(**params):
        engine = build_pipeline(
            settings_from({"zoobox": {"echo": False}}),
            "retinaface",
            data=str(data),
            artifacts=str(tmp_path / "art"),
            runner="host",
            backend="torchscript",
            params=dict(params, allow_random=True, input_size=SIZE),
        )
        return run_and_summarize(engine, show=False)

    result, summary = run()
    assert summary["profile"] == "seed"
    infer_record = json.loads((result.stage_dir("infer") / "infer.json").read_text())
    assert infer_record["postprocess"]["profile"] == "seed"
    assert infer_record["postprocess"]["top_k"] == 0
    store = json.loads((result.stage_dir("data") / "index.json").read_text())
    assert store["interpolation"] == "INTER_NEAREST"

    result, summary = run(profile="upstream", top_k=5000, keep_top_k=750)
    assert summary["profile"] == "upstream"
    rows = dict((r["metric"], r) for r in summary["rows"])
    assert rows["easy"]["note"].startswith("published for the seed profile only")
    assert rows["easy"]["published"] is None
    assert rows["easy"]["status"] == "no upstream number published"
    infer_record = json.loads((result.stage_dir("infer") / "infer.json").read_text())
    assert infer_record["postprocess"]["keep_top_k"] == 750
    store = json.loads((result.stage_dir("data") / "index.json").read_text())
    assert store["interpolation"] == "INTER_LINEAR"
    assert result.plans[0].action == "skip"  # the weights do not depend on the profile

    capfd.readouterr()
    with pytest.raises(StageStopped):
        run(top_k=5000)  # the seed cuts nothing: refused, one line
    err = [line for line in capfd.readouterr().out.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and "profile=upstream" in err[0]
