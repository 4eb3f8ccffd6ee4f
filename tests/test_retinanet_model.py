"""RetinaNet R50-FPN model side: network layout, checkpoints, anchors, postprocessing,
export and the infer stage, all on CPU with small inputs (128 x 128)."""

import copy
import json
import math
import os
import pickle

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from models.common.checkpoint import load_strict  # noqa: E402
from models.retinanet import PIXEL_MEAN_BGR, PIXEL_STD_BGR, checkpoint, net, postprocess  # noqa: E402
from models.retinanet import anchors as anchor_lib  # noqa: E402
from tests.conftest import run_stage  # noqa: E402
from zoostage import infer as skeleton  # noqa: E402
from zoostage.errors import USER_ERROR_EXIT, UserError  # noqa: E402
from zoostage.store import Store, feed_spec, write_store  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = 128

# Keys as detectron2's retinanet_R_50_FPN checkpoints name them (modeling/backbone/resnet.py,
# fpn.py, meta_arch/retinanet.py; FrozenBatchNorm2d buffers), with their shapes.
DETECTRON2_KEYS = {
    "backbone.bottom_up.stem.conv1.weight": (64, 3, 7, 7),
    "backbone.bottom_up.stem.conv1.norm.weight": (64,),
    "backbone.bottom_up.stem.conv1.norm.bias": (64,),
    "backbone.bottom_up.stem.conv1.norm.running_mean": (64,),
    "backbone.bottom_up.stem.conv1.norm.running_var": (64,),
    "backbone.bottom_up.res2.0.conv1.weight": (64, 64, 1, 1),
    "backbone.bottom_up.res2.0.conv2.weight": (64, 64, 3, 3),
    "backbone.bottom_up.res2.0.conv3.weight": (256, 64, 1, 1),
    "backbone.bottom_up.res2.0.shortcut.weight": (256, 64, 1, 1),
    "backbone.bottom_up.res2.0.shortcut.norm.weight": (256,),
    "backbone.bottom_up.res3.0.conv1.weight": (128, 256, 1, 1),
    "backbone.bottom_up.res3.3.conv3.norm.running_var": (512,),
    "backbone.bottom_up.res4.5.conv2.weight": (256, 256, 3, 3),
    "backbone.bottom_up.res5.0.shortcut.weight": (2048, 1024, 1, 1),
    "backbone.bottom_up.res5.2.conv3.norm.bias": (2048,),
    "backbone.fpn_lateral3.weight": (256, 512, 1, 1),
    "backbone.fpn_lateral3.bias": (256,),
    "backbone.fpn_lateral5.weight": (256, 2048, 1, 1),
    "backbone.fpn_output3.weight": (256, 256, 3, 3),
    "backbone.fpn_output5.bias": (256,),
    "backbone.top_block.p6.weight": (256, 2048, 3, 3),
    "backbone.top_block.p7.weight": (256, 256, 3, 3),
    "head.cls_subnet.0.weight": (256, 256, 3, 3),
    "head.cls_subnet.6.bias": (256,),
    "head.bbox_subnet.2.weight": (256, 256, 3, 3),
    "head.cls_score.weight": (720, 256, 3, 3),
    "head.cls_score.bias": (720,),
    "head.bbox_pred.weight": (36, 256, 3, 3),
    "head.bbox_pred.bias": (36,),
}


@pytest.fixture(scope="module")
def model():
    return net.build_model(seed=0)


@pytest.fixture(scope="module")
def model_state(model):
    return dict((k, v.clone()) for k, v in model.state_dict().items())


def _detectron2_pickle(path, state, extra=None):
    """A model-zoo style .pkl: {'model': numpy arrays, '__author__', 'matching_heuristics'}."""
    weights = dict((k, v.numpy().copy()) for k, v in state.items())
    weights["pixel_mean"] = np.array([103.53, 116.28, 123.675], np.float32).reshape(3, 1, 1)
    weights["pixel_std"] = np.ones((3, 1, 1), np.float32)
    for level, sizes in enumerate(anchor_lib.SIZES):
        weights["anchor_generator.cell_anchors.%d" % level] = anchor_lib.cell_anchors(sizes)
    weights.update(extra or {})
    with open(path, "wb") as handle:
        pickle.dump(
            {"model": weights, "__author__": "Detectron2 Model Zoo", "matching_heuristics": True},
            handle,
            protocol=2,
        )
    return path


# --------------------------------------------------------------------------- network


def test_state_dict_has_detectron2_keys_and_shapes(model_state):
    for key, shape in DETECTRON2_KEYS.items():
        assert key in model_state, key
        assert tuple(model_state[key].shape) == shape, key
    assert not [k for k in model_state if "num_batches_tracked" in k]
    # 53 convs with FrozenBN (stem + 16 blocks x 3 + 4 shortcuts) x 5 keys, FPN 6 convs +
    # P6 + P7 x (weight, bias), head 8 subnet convs + 2 predictors x (weight, bias).
    assert len(model_state) == 53 * 5 + 8 * 2 + 10 * 2


def test_parameter_count_matches_detectron2(model):
    conv = lambda cin, cout, k, bias=True: cin * cout * k * k + (cout if bias else 0)  # noqa
    resnet = conv(3, 64, 7, False)
    cin = 64
    for blocks, inner in zip((3, 4, 6, 3), (64, 128, 256, 512)):
        cout = inner * 4
        resnet += conv(cin, cout, 1, False)  # shortcut of the first block
        for _ in range(blocks):
            resnet += conv(cin, inner, 1, False) + conv(inner, inner, 3, False)
            resnet += conv(inner, cout, 1, False)
            cin = cout
    fpn = sum(conv(c, 256, 1) + conv(256, 256, 3) for c in (512, 1024, 2048))
    fpn += conv(2048, 256, 3) + conv(256, 256, 3)
    head = 8 * conv(256, 256, 3) + conv(256, 9 * 80, 3) + conv(256, 9 * 4, 3)
    assert resnet == 23454912  # torchvision resnet50 minus fc and BN affine terms
    assert net.count_parameters(model) == resnet + fpn + head == 37915572  # ~37.9M


def test_stride_in_1x1_and_head_prior(model):
    block = model.backbone.bottom_up.res3[0]
    assert block.conv1.stride == (2, 2) and block.conv2.stride == (1, 1)
    assert block.shortcut.stride == (2, 2)
    assert model.backbone.top_block.p6.in_channels == 2048  # P6 from C5 (res5)
    bias = model.head.cls_score.bias
    assert torch.allclose(bias, torch.full_like(bias, -math.log(99.0)))
    norm = model.backbone.bottom_up.stem.conv1.norm
    x = torch.randn(1, 64, 5, 5)
    assert torch.allclose(norm(x), x, atol=1e-6)  # a fresh FrozenBN is the identity


def test_forward_shapes_and_level_order(model):
    x = torch.randn(1, 3, SMALL, SMALL) * 50
    with torch.no_grad():
        cls_logits, box_deltas = model(x)
        features = model.backbone(x)
        logits, deltas = model.head(features)
    total = anchor_lib.num_anchors((SMALL, SMALL))
    assert total == (16 * 16 + 8 * 8 + 4 * 4 + 2 * 2 + 1) * 9
    assert tuple(cls_logits.shape) == (1, total, 80)
    assert tuple(box_deltas.shape) == (1, total, 4)
    assert [tuple(f.shape[-2:]) for f in features] == anchor_lib.feature_sizes((SMALL, SMALL))
    # Row (y * W + x) * A + a of level l is channel a * K + k at (y, x): detectron2's order.
    start = anchor_lib.level_counts((SMALL, SMALL))[0]
    h, w = features[1].shape[-2:]
    for y, x_, a, k in [(0, 0, 0, 0), (3, 5, 4, 17), (h - 1, w - 1, 8, 79)]:
        row = start + (y * w + x_) * 9 + a
        assert cls_logits[0, row, k] == logits[1][0, a * 80 + k, y, x_]
        assert box_deltas[0, row, 3] == deltas[1][0, a * 4 + 3, y, x_]


def test_topk_wrapper_matches_dense_network(model):
    from models.retinanet.export import match_detections

    wrapper = net.TopKCandidates(model, (SMALL, SMALL))
    counts = anchor_lib.level_counts((SMALL, SMALL))
    assert wrapper.topk == [min(1000, c * 80) for c in counts]  # P7 at 128: 1 x 1 x 9 x 80
    x = torch.randn(1, 3, SMALL, SMALL) * 50
    with torch.no_grad():
        best, indices, deltas = wrapper(x)
        cls_logits, box_deltas = model(x)
    assert tuple(best.shape) == tuple(indices.shape) == (1, sum(wrapper.topk))
    assert torch.equal(deltas, box_deltas)
    flat = cls_logits.reshape(1, -1)
    assert torch.equal(best, flat.gather(1, indices))
    post = postprocess.Postprocessor((SMALL, SMALL))
    dense = post.detect(cls_logits[0].numpy(), box_deltas[0].numpy())
    found = post.detect_candidates(best[0].numpy(), indices[0].numpy(), deltas[0].numpy())
    assert match_detections(dense, found) == (len(dense[1]), len(dense[1]))


# --------------------------------------------------------------------------- checkpoints


@pytest.mark.slow
def test_detectron2_pickle_loads_every_key(tmp_path, model, model_state):
    other = dict((k, v + 0.5) for k, v in model_state.items())
    path = _detectron2_pickle(str(tmp_path / "model_final.pkl"), other)
    target = copy.deepcopy(model)
    notes = checkpoint.load_weights(target, path)
    assert notes["keys"] == len(model_state) == len(target.state_dict())
    assert notes["dropped"] == sorted(
        ["pixel_mean", "pixel_std"] + ["anchor_generator.cell_anchors.%d" % i for i in range(5)]
    )
    assert notes["pixel_mean"] == pytest.approx([103.53, 116.28, 123.675])
    for key, value in target.state_dict().items():
        assert torch.equal(value, other[key]), key


def test_torch_files_load_legacy_and_training_checkpoint(tmp_path, model, model_state):
    legacy = str(tmp_path / "legacy.pth")  # torch < 1.6 format: a pickle sequence
    torch.save(model_state, legacy, _use_new_zipfile_serialization=False)
    notes = checkpoint.load_weights(copy.deepcopy(model), legacy)
    assert notes["dropped"] == []
    wrapped = str(tmp_path / "model_0089999.pth")
    state = dict(model_state)
    state["backbone.bottom_up.stem.conv1.norm.num_batches_tracked"] = torch.tensor(5)
    torch.save({"model": state, "iteration": 89999}, wrapped)
    notes = checkpoint.load_weights(copy.deepcopy(model), wrapped)
    assert notes["dropped"] == ["backbone.bottom_up.stem.conv1.norm.num_batches_tracked"]


def test_other_architecture_is_a_user_error_listing_keys(tmp_path, model):
    torchvision_like = {
        "conv1.weight": np.zeros((64, 3, 7, 7), np.float32),
        "bn1.weight": np.ones(64, np.float32),
        "layer1.0.conv1.weight": np.zeros((64, 64, 1, 1), np.float32),
        "fc.weight": np.zeros((1000, 2048), np.float32),
    }
    path = str(tmp_path / "resnet50.pkl")
    with open(path, "wb") as handle:
        pickle.dump({"model": torchvision_like}, handle)
    with pytest.raises(UserError) as error:
        checkpoint.load_weights(model, path)
    text = str(error.value)
    assert "301 missing keys" in text and "4 unexpected keys" in text
    assert "bn1.weight" in text and "backbone.bottom_up" in text


def test_wrong_shapes_and_wrong_anchors_are_user_errors(model, model_state):
    state = dict((k, v.numpy()) for k, v in model_state.items())
    state["head.cls_score.weight"] = np.zeros((729, 256, 3, 3), np.float32)  # 81 classes
    state["head.cls_score.bias"] = np.zeros((729,), np.float32)
    weights, _ = checkpoint.clean_state_dict(state)
    with pytest.raises(UserError, match=r"2 keys of the wrong shape \(head.cls_score.bias"):
        load_strict(model, weights)
    odd = {"anchor_generator.cell_anchors.0": anchor_lib.cell_anchors((16, 20, 25))}
    with pytest.raises(UserError, match="other anchor sizes"):
        checkpoint.clean_state_dict(odd)


@pytest.mark.slow
def test_damaged_or_missing_checkpoint_is_a_user_error(tmp_path):
    data = pickle.dumps({"model": {"head.cls_score.bias": np.zeros(720, np.float32)}})
    cut = str(tmp_path / "cut.pkl")
    with open(cut, "wb") as handle:
        handle.write(data[: len(data) // 2])
    with pytest.raises(UserError, match="cannot read checkpoint"):
        checkpoint.read_checkpoint(cut)
    with pytest.raises(UserError, match="not found"):
        checkpoint.read_checkpoint(str(tmp_path / "absent.pkl"))


# --------------------------------------------------------------------------- anchors


def test_cell_anchors_follow_detectron2():
    cells = anchor_lib.cell_anchors(anchor_lib.SIZES[0])
    assert cells.shape == (9, 4) and cells.dtype == np.float32
    s2 = math.sqrt(2.0)
    # size 32: ratio 0.5 (h / w) gives w = 32 * sqrt(2), h = 32 / sqrt(2); ratio 1: 32 x 32.
    np.testing.assert_allclose(cells[0], [-16 * s2, -8 * s2, 16 * s2, 8 * s2], rtol=1e-6)
    np.testing.assert_allclose(cells[1], [-16, -16, 16, 16])
    np.testing.assert_allclose(cells[2], [-8 * s2, -16 * s2, 8 * s2, 16 * s2], rtol=1e-6)
    size = 32 * 2 ** (1.0 / 3)  # second octave scale, size-major order
    np.testing.assert_allclose(cells[4], [-size / 2, -size / 2, size / 2, size / 2], rtol=1e-6)
    np.testing.assert_allclose(cells[3], [-28.50876, -14.25438, 28.50876, 14.25438], rtol=1e-6)
    np.testing.assert_allclose(
        anchor_lib.cell_anchors(anchor_lib.SIZES[4])[1], [-256, -256, 256, 256]
    )


def test_grid_anchors_offset_zero_and_counts():
    levels = anchor_lib.grid_anchors((256, 256))
    assert [len(a) for a in levels] == [32 * 32 * 9, 16 * 16 * 9, 8 * 8 * 9, 4 * 4 * 9, 2 * 2 * 9]
    cells = anchor_lib.cell_anchors(anchor_lib.SIZES[0])
    np.testing.assert_array_equal(levels[0][:9], cells)  # offset 0.0: first centre at (0, 0)
    np.testing.assert_array_equal(levels[0][9], cells[0] + np.float32([8, 0, 8, 0]))  # x = 1
    y1 = cells[1] + np.float32([0, 8, 0, 8])
    np.testing.assert_array_equal(levels[0][32 * 9 + 1], y1)  # y = 1
    np.testing.assert_array_equal(
        levels[4][9 * 3 + 2],
        anchor_lib.cell_anchors(anchor_lib.SIZES[4])[2] + np.float32([128, 128, 128, 128]),
    )
    assert anchor_lib.level_counts((1344, 1344)) == [
        168**2 * 9,
        84**2 * 9,
        42**2 * 9,
        21**2 * 9,
        11**2 * 9,
    ]
    assert anchor_lib.num_anchors((1344, 1344)) == 338454
    assert anchor_lib.feature_sizes((100, 100)) == [(13, 13), (7, 7), (4, 4), (2, 2), (1, 1)]


# --------------------------------------------------------------------------- postprocess


def _post(level_anchors, num_classes=3, **kwargs):
    return postprocess.Postprocessor(
        (100, 100), num_classes=num_classes, level_anchors=level_anchors, **kwargs
    )


def _logit(p):
    return math.log(p / (1 - p))


def test_score_threshold_is_strict_on_the_sigmoid():
    anchors = [np.array([[0, 0, 10, 10], [20, 20, 30, 30]], np.float32)]
    post = _post(anchors, num_classes=2)
    logits = np.full((2, 2), -20.0, np.float32)
    logits[0, 1] = -2.94  # sigmoid 0.0502
    logits[1, 0] = -2.95  # sigmoid 0.0497
    boxes, scores, labels = post.detect(logits, np.zeros((2, 4), np.float32))
    assert labels.tolist() == [1] and boxes.tolist() == [[0, 0, 10, 10]]
    # A score equal to the threshold is not above it: sigmoid(0) is exactly 0.5.
    post = _post(anchors, num_classes=2, score_thresh=0.5)
    logits[0, 1] = 0.0
    logits[1, 0] = 1e-6
    assert postprocess.sigmoid(logits[1, 0]) > np.float32(0.5)
    assert post.detect(logits, np.zeros((2, 4), np.float32))[2].tolist() == [0]


def test_topk_is_per_level_and_decode_uses_deltas():
    far = [[i * 20, 0, i * 20 + 10, 10] for i in range(3)]
    level0 = np.array(far, np.float32)
    level1 = np.array([[0, 50, 10, 60], [20, 50, 30, 60], [40, 50, 50, 60]], np.float32)
    post = _post([level0, level1], num_classes=1, topk_candidates=2)
    logits = np.array(
        [[_logit(0.6)], [_logit(0.9)], [_logit(0.7)], [_logit(0.3)], [_logit(0.2)], [_logit(0.1)]],
        np.float32,
    )
    boxes, scores, labels = post.detect(logits, np.zeros((6, 4), np.float32))
    np.testing.assert_allclose(scores, [0.9, 0.7, 0.3, 0.2], rtol=1e-6)
    assert boxes[:, 0].tolist() == [20, 40, 0, 20]
    deltas = np.zeros((6, 4), np.float32)
    deltas[1] = [0.1, 0.2, math.log(2.0), 0.0]  # anchor [20, 0, 30, 10]
    deltas[2] = [0.0, 0.0, 10.0, 0.0]  # dw clamped at log(1000 / 16)
    boxes, _, _ = post.detect(logits, deltas)
    np.testing.assert_allclose(boxes[0], [16, 2, 36, 12], rtol=1e-6)
    np.testing.assert_allclose(boxes[1, 2] - boxes[1, 0], 10 * 1000 / 16.0, rtol=1e-5)


def test_nms_is_class_wise_across_levels_and_ties_keep_the_first():
    box = [10, 10, 50, 50]
    level0 = np.array([box, [12, 12, 52, 52]], np.float32)
    level1 = np.array([box], np.float32)
    post = _post([level0, level1], num_classes=2)
    logits = np.full((3, 2), -20.0, np.float32)
    logits[0, 0] = _logit(0.8)  # class 0, kept
    logits[1, 0] = _logit(0.7)  # class 0, IoU 0.83 with the first: suppressed
    logits[1, 1] = _logit(0.6)  # class 1: its own NMS, kept
    logits[2, 1] = _logit(0.6)  # class 1, same box, tied score, later level: suppressed
    boxes, scores, labels = post.detect(logits, np.zeros((3, 4), np.float32))
    assert labels.tolist() == [0, 1]
    np.testing.assert_allclose(scores, [0.8, 0.6], rtol=1e-6)
    assert boxes[1].tolist() == [12, 12, 52, 52]  # the level-0 candidate won the tie


def test_at_most_100_detections_best_first():
    grid = [[x * 10, y * 10, x * 10 + 8, y * 10 + 8] for y in range(15) for x in range(10)]
    level = np.array(grid, np.float32)
    post = _post([level], num_classes=1)
    probs = np.linspace(0.06, 0.99, len(grid)).astype(np.float64)
    np.random.RandomState(0).shuffle(probs)
    logits = np.log(probs / (1 - probs)).astype(np.float32)[:, None]
    boxes, scores, labels = post.detect(logits, np.zeros((len(grid), 4), np.float32))
    assert len(scores) == 100
    assert np.all(np.diff(scores) <= 0)
    np.testing.assert_allclose(scores[-1], np.sort(probs)[::-1][99], rtol=1e-5)


def test_nms_limit_equals_the_first_kept_of_a_full_nms():
    from models.common.boxes import batched_nms

    rng = np.random.RandomState(1)
    xy = rng.uniform(0, 200, (3000, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(5, 60, (3000, 2))], axis=1).astype(np.float32)
    scores = rng.choice(np.linspace(0.05, 1, 200), 3000).astype(np.float32)  # many ties
    labels = rng.randint(0, 5, 3000)
    full = batched_nms(boxes, scores, labels, 0.5)
    for limit in (1, 100, len(full) + 5):
        first = batched_nms(boxes, scores, labels, 0.5, limit=limit)
        np.testing.assert_array_equal(first, full[:limit])
    assert len(batched_nms(boxes[:0], scores[:0], labels[:0], 0.5, limit=100)) == 0


def test_rescale_clips_and_drops_empty_boxes():
    boxes = np.array(
        [
            [10, 10, 50, 40],  # inside
            [90, 70, 120, 90],  # crosses the resized image's edge
            [110, 10, 130, 30],
        ],
        np.float32,
    )  # in the padding, right of it
    out, scores, labels = postprocess.rescale(
        boxes, [0.9, 0.8, 0.7], [1, 2, 3], resized_hw=(80, 100), orig_hw=(160, 250)
    )
    np.testing.assert_allclose(out, [[25, 20, 125, 80], [225, 140, 250, 160]])
    assert labels.tolist() == [1, 2]
    np.testing.assert_allclose(scores, [0.9, 0.8])


def test_empty_image_and_fixed_size_record():
    level = np.array([[0, 0, 10, 10]], np.float32)
    post = _post([level], num_classes=3)
    boxes, scores, labels = post.detect(
        np.full((1, 3), -9.0, np.float32), np.zeros((1, 4), np.float32)
    )
    assert boxes.shape == (0, 4) and scores.shape == (0,) and labels.shape == (0,)
    record = postprocess.fixed_size(boxes, scores, labels)
    assert record["count"] == 0 and record["boxes"].shape == (100, 4)
    assert not record["boxes"].any() and not record["scores"].any()
    assert postprocess.coco_results(1, boxes, scores, labels) == []
    record = postprocess.fixed_size([[1, 2, 3, 4]] * 3, [0.9, 0.8, 0.7], [5, 6, 7])
    assert record["count"] == 3 and record["labels"].tolist()[:4] == [5, 6, 7, 0]


def test_coco_results_map_categories_and_use_xywh():
    ids = postprocess.COCO_CATEGORY_IDS
    assert len(ids) == 80 and len(set(ids)) == 80 and ids[0] == 1 and ids[-1] == 90
    assert ids[11] == 13 and ids[24] == 27 and ids[79] == 90
    results = postprocess.coco_results(139, [[10, 20, 40, 60.5]], [0.75], [11])
    assert results == [
        {"image_id": 139, "category_id": 13, "bbox": [10.0, 20.0, 30.0, 40.5], "score": 0.75}
    ]


def test_detect_rejects_outputs_of_another_input_size():
    post = postprocess.Postprocessor((256, 256))
    r = anchor_lib.num_anchors((320, 320))
    with pytest.raises(UserError, match="--input-size 256"):
        post.detect(np.zeros((r, 80), np.float32), np.zeros((r, 4), np.float32))


def _graph_topk(logits, level_counts, k):
    """What net.TopKCandidates computes, in numpy: per level the k best logits, indices."""
    num_classes = logits.shape[1]
    best, indices, start = [], [], 0
    for count in level_counts:
        flat = logits[start : start + count].reshape(-1)
        order = np.argsort(-flat, kind="stable")[: min(k, flat.size)]
        best.append(flat[order])
        indices.append(order + start * num_classes)
        start += count
    return np.concatenate(best), np.concatenate(indices)


def test_topk_candidates_give_the_dense_detections():
    rng = np.random.RandomState(0)
    levels = [
        np.array(
            [[x, y, x + 12, y + 12] for y in range(0, 60, 6) for x in range(0, 60, 6)], np.float32
        ),
        np.array(
            [[x, y, x + 30, y + 30] for y in range(0, 60, 20) for x in range(0, 60, 20)], np.float32
        ),
    ]
    post = _post(levels, num_classes=4, topk_candidates=30)
    total = sum(len(a) for a in levels)
    logits = (rng.randn(total, 4) * 3).astype(np.float32)
    logits[5, 2] = logits[7, 2] = 40.0  # both saturate to 1.0: the logit still ranks them
    deltas = (rng.randn(total, 4) * 0.1).astype(np.float32)
    dense = post.detect(logits, deltas)
    best, indices = _graph_topk(logits, [len(a) for a in levels], 30)
    found = post.detect_candidates(best, indices, deltas)
    assert len(dense[1]) > 10
    for a, b in zip(dense, found):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(UserError, match="candidates over"):
        post.detect_candidates(best, indices, deltas[:-1])


# --------------------------------------------------------------------------- stages


def _prepare_synthetic(item):
    """A data-stage stand-in: a random image 'resized' to fit SMALL, as uint8 BGR."""
    image_id, orig_h, orig_w = item
    scale = min(SMALL / float(orig_h), SMALL / float(orig_w))
    h, w = round(orig_h * scale), round(orig_w * scale)
    pixels = np.random.RandomState(image_id).randint(0, 256, (h, w, 3)).astype(np.uint8)
    meta = {
        "id": image_id,
        "file": "%012d.jpg" % image_id,
        "orig_hw": [orig_h, orig_w],
        "resized_hw": [h, w],
    }
    return pixels, meta


@pytest.fixture(scope="module")
def stage_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("retinanet")
    weights = root / "weights"
    weights.mkdir()
    (weights / "weights.json").write_text(
        json.dumps({"source": "random", "file": None, "sha256": None, "seed": 0})
    )
    data = root / "data"
    data.mkdir()
    write_store(
        str(data),
        [(139, 426, 640), (802, 640, 424), (11813, 500, 500)],
        (SMALL, SMALL),
        _prepare_synthetic,
        feed_spec(PIXEL_MEAN_BGR, PIXEL_STD_BGR, pad="after_norm"),
        workers=1,
    )
    fmt = "onnx" if _has("onnx") else "torchscript"
    export = root / "export"
    result = run_stage(
        "models.retinanet.export",
        "--out",
        export,
        "--weights",
        weights,
        "--input-size",
        SMALL,
        "--format",
        fmt,
        "--outputs",
        "dense",
    )
    assert result.returncode == 0, result.stderr
    return {"root": root, "weights": weights, "data": data, "export": export}


def _has(module):
    try:
        __import__(module)
    except ImportError:
        return False
    return True


@pytest.mark.slow
def test_export_traced_equals_eager(stage_dirs, model):
    export = stage_dirs["export"]
    facts = json.loads((export / "export.json").read_text())
    assert facts["weights"] == "random" and facts["parameters"] == 37915572
    assert facts["traced_vs_eager_max_abs_diff"] <= 1e-4 * facts["eager_output_max_abs"]
    r = anchor_lib.num_anchors((SMALL, SMALL))
    assert facts["outputs"] == {"cls_logits": [1, r, 80], "box_deltas": [1, r, 4]}
    assert facts["input_shape"] == [1, 3, SMALL, SMALL] and facts["nms"] == "host"
    module = torch.jit.load(str(export / "model.ts"))
    x = torch.randn(2, 3, SMALL, SMALL) * 50  # traced at batch 1, runs at batch 2
    with torch.no_grad():  # the export's random init is build_model(seed=0): `model`
        for got, want in zip(module(x), model(x)):
            assert got.shape == want.shape
            assert float((got - want).abs().max()) <= 1e-4 * float(want.abs().max())
    if facts["format"] == "onnx" and _has("onnxruntime"):
        assert facts["onnx_vs_eager_max_rel_diff"] <= 1e-4


@pytest.mark.slow
def test_infer_stage_end_to_end_torchscript(stage_dirs):
    """The upstream profile: detectron2's postprocess, boxes clipped to the image
    (test_retinanet_seed.py covers the seed profile)."""
    out = stage_dirs["root"] / "infer"
    result = run_stage(
        "models.retinanet.infer",
        "--out",
        out,
        "--model",
        stage_dirs["export"],
        "--data",
        stage_dirs["data"],
        "--backend",
        "torchscript",
        "--batch-size",
        2,
        "--device",
        "cpu",
        "--warmup",
        1,
        "--profile",
        "upstream",
    )
    assert result.returncode == 0, result.stderr
    detections = json.loads((out / "detections.json").read_text())
    timing = json.loads((out / "timing.json").read_text())
    assert timing["images"] == 3 and timing["throughput"] > 0 and timing["batch_size"] == 2
    summary = json.loads((out / "infer.json").read_text())
    assert summary["detections"] == len(detections) > 0 and summary["images"] == 3
    assert timing["postprocess_mean_ms"] > 0 and timing["by_batch"]["2"]["throughput"] > 0
    assert {d["image_id"] for d in detections} <= {139, 802, 11813}
    sizes = {139: (426, 640), 802: (640, 424), 11813: (500, 500)}
    for d in detections:
        assert set(d) == {"image_id", "category_id", "bbox", "score"}
        assert d["category_id"] in postprocess.COCO_CATEGORY_IDS and d["score"] > 0.05
        x, y, w, h = d["bbox"]
        height, width = sizes[d["image_id"]]
        assert 0 <= x and 0 <= y and w > 0 and h > 0
        assert x + w <= width + 1e-3 and y + h <= height + 1e-3
    for image_id in sizes:
        assert sum(d["image_id"] == image_id for d in detections) <= 100
    # The stage's postprocessing matches the library on the same outputs.
    store = Store(str(stage_dirs["data"]))
    module = torch.jit.load(str(stage_dirs["export"] / "model.ts"))
    with torch.no_grad():
        cls_logits, box_deltas = module(torch.from_numpy(store.batch([0])))
    post = postprocess.Postprocessor((SMALL, SMALL))
    record = store.records[0]
    boxes, scores, labels = postprocess.rescale(
        *post.detect(cls_logits[0].numpy(), box_deltas[0].numpy()),
        resized_hw=record["resized_hw"],
        orig_hw=record["orig_hw"],
    )
    mine = [d for d in detections if d["image_id"] == 139]
    assert len(mine) == len(scores)
    np.testing.assert_allclose([d["score"] for d in mine], scores, rtol=1e-5)


@pytest.mark.slow
def test_infer_stage_shard_and_onnxruntime(stage_dirs):
    if not (stage_dirs["export"] / "model.onnx").is_file() or not _has("onnxruntime"):
        pytest.skip("onnx / onnxruntime not installed: no ONNX model to run")
    out = stage_dirs["root"] / "infer-ort"
    result = run_stage(
        "models.retinanet.infer",
        "--out",
        out,
        "--model",
        stage_dirs["export"],
        "--data",
        stage_dirs["data"],
        "--backend",
        "onnxruntime",
        "--shard",
        "1/2",
        "--warmup",
        0,
        "--profile",
        "upstream",
    )
    assert result.returncode == 0, result.stderr
    timing = json.loads((out / "timing.json").read_text())
    assert timing["images"] == 1 and timing["shard"] == [1, 2]  # records 1, 3, 5, ... of 3
    ids = {d["image_id"] for d in json.loads((out / "detections.json").read_text())}
    assert ids == {802}


@pytest.mark.slow
def test_stage_user_errors_are_one_line(stage_dirs, tmp_path):
    result = run_stage(
        "models.retinanet.infer",
        "--out",
        tmp_path / "a",
        "--model",
        stage_dirs["export"],
        "--data",
        tmp_path / "nothing",
    )
    assert result.returncode == USER_ERROR_EXIT
    assert result.stderr.startswith("error: no preprocessed data")
    assert len(result.stderr.strip().splitlines()) == 1
    result = run_stage(
        "models.retinanet.export",
        "--out",
        tmp_path / "b",
        "--weights",
        stage_dirs["weights"],
        "--input-size",
        100,
    )
    assert result.returncode == USER_ERROR_EXIT and "multiple of 32" in result.stderr
    result = run_stage(
        "models.retinanet.infer",
        "--out",
        tmp_path / "c",
        "--model",
        stage_dirs["export"],
        "--data",
        stage_dirs["data"],
        "--shard",
        "2/2",
    )
    assert result.returncode == USER_ERROR_EXIT and "0 <= I < N" in result.stderr


@pytest.mark.slow
def test_topk_export_and_infer_in_process(stage_dirs, model, tmp_path):

    from models.retinanet import export, infer

    wrapper = net.TopKCandidates(model, (SMALL, SMALL))
    names = export.OUTPUT_NAMES["topk"]
    checker = export.Checker(model, wrapper, "topk", SMALL)
    folder = tmp_path / "export-topk"
    folder.mkdir()
    facts = export.trace(wrapper, SMALL, str(folder / "model.ts"), checker, names)
    total = facts["traced_topk_vs_dense_detections_matched"][1]
    assert facts["traced_topk_vs_dense_detections_matched"] == [total, total]
    assert facts["outputs"]["indices"] == [1, sum(wrapper.topk)]
    args = infer.build_parser().parse_args(
        [
            *("--out", str(tmp_path / "infer"), "--model", str(folder)),
            *("--data", str(stage_dirs["data"]), "--warmup", "1", "--profile", "upstream"),
        ]
    )
    os.makedirs(args.out)
    skeleton.run(args, infer.RetinaNetTask)
    got = json.loads((tmp_path / "infer" / "detections.json").read_text())
    dense = json.loads((stage_dirs["root"] / "infer" / "detections.json").read_text())
    key = lambda d: (d["image_id"], d["category_id"], round(d["score"], 4))  # noqa: E731
    assert sorted(map(key, got)) == sorted(map(key, dense))
