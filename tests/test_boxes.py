"""Box arithmetic: hand-computed IoU, NMS and both codings, with the edge cases."""

import math

import numpy as np
import pytest

from models.common.boxes import (
    DEFAULT_SCALE_CLAMP,
    batched_nms,
    decode_center_variance,
    decode_deltas,
    encode_center_variance,
    encode_deltas,
    iou_matrix,
    nms,
    nms_in_order,
)


def test_iou_hand_computed():
    a = [[0, 0, 10, 10]]
    b = [[5, 0, 15, 10], [0, 0, 10, 10], [20, 20, 30, 30], [0, 0, 5, 5]]
    # overlap 50 / union 150; identical; disjoint; contained 25 / 100
    np.testing.assert_allclose(iou_matrix(a, b), [[1 / 3, 1.0, 0.0, 0.25]])


def test_iou_degenerate_and_empty_boxes():
    assert iou_matrix([[0, 0, 0, 0]], [[0, 0, 0, 0]]).tolist() == [[0.0]]
    assert iou_matrix([[5, 5, 0, 0]], [[0, 0, 10, 10]]).tolist() == [[0.0]]  # inverted
    assert iou_matrix(np.zeros((0, 4)), [[0, 0, 1, 1]]).shape == (0, 1)


def test_nms_suppresses_above_threshold_only():
    boxes = [[0, 0, 10, 10], [1, 0, 11, 10], [5, 0, 15, 10], [50, 50, 60, 60]]
    scores = [0.9, 0.8, 0.7, 0.6]
    # box1 vs box0: IoU 90/110 = 0.818 -> gone; box2 vs box0: 1/3 -> stays at 0.4
    assert nms(boxes, scores, 0.4).tolist() == [0, 2, 3]
    # IoU exactly at the threshold is kept (strictly greater suppresses)
    assert nms([[0, 0, 10, 10], [5, 0, 15, 10]], [1.0, 0.5], 1 / 3).tolist() == [0, 1]


def test_nms_ties_keep_input_order_and_empty_input():
    boxes = [[0, 0, 10, 10], [0, 0, 10, 10], [20, 0, 30, 10]]
    assert nms(boxes, [0.5, 0.5, 0.5], 0.5).tolist() == [0, 2]
    assert nms(np.zeros((0, 4)), np.zeros(0), 0.5).tolist() == []


def test_nms_pixel_offset_is_the_inclusive_pixel_convention():
    boxes = [[0, 0, 9, 9], [5, 0, 14, 9]]
    # continuous: inter 4*9 = 36, union 81+81-36 = 126 -> 0.286 ; inclusive pixels:
    # inter 5*10 = 50, union 100+100-50 = 150 -> 0.333
    assert nms(boxes, [1, 0.5], 0.3).tolist() == [0, 1]
    assert nms(boxes, [1, 0.5], 0.3, pixel_offset=1).tolist() == [0]


def py_cpu_nms(dets, thresh):
    """Pytorch_Retinaface utils/nms/py_cpu_nms.py (the reference of RetinaFace's NMS and
    of its ModelZoo seed's postprocess.py), its steps written out: areas with "+1";
    order = scores.argsort()[::-1]; repeatedly keep the first, drop the rest whose
    inter / (area_i + area_j - inter) > thresh."""
    x1, y1, x2, y2, scores = dets[:, 0], dets[:, 1], dets[:, 2], dets[:, 3], dets[:, 4]
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = scores.argsort()[::-1]
    keep = []
    while order.size > 0:
        i = order[0]
        keep.append(i)
        xx1 = np.maximum(x1[i], x1[order[1:]])
        yy1 = np.maximum(y1[i], y1[order[1:]])
        xx2 = np.minimum(x2[i], x2[order[1:]])
        yy2 = np.minimum(y2[i], y2[order[1:]])
        w = np.maximum(0.0, xx2 - xx1 + 1)
        h = np.maximum(0.0, yy2 - yy1 + 1)
        inter = w * h
        ovr = inter / (areas[i] + areas[order[1:]] - inter)
        order = order[np.where(ovr <= thresh)[0] + 1]
    return keep


def _face_like_dets(rng, count, image=400.0):
    """float32 dets in clusters (many overlaps near the threshold), scores with ties."""
    centers = rng.uniform(0, image, (max(count // 20, 1), 2))
    picks = centers[rng.randint(0, len(centers), count)]
    sizes = rng.uniform(8, 60, (count, 1)) * rng.uniform(0.8, 1.25, (count, 2))
    jitter = rng.normal(0, 6, (count, 2))
    x1y1 = picks + jitter - sizes / 2
    boxes = np.concatenate([x1y1, x1y1 + sizes], axis=1)
    scores = np.round(rng.uniform(0.02, 1.0, count), 2)  # 2 decimals: plenty of ties
    return np.hstack([boxes, scores[:, None]]).astype(np.float32)


@pytest.mark.parametrize("count", [1, 2, 31, 32, 33, 65, 500, 3000])
def test_nms_in_order_gives_py_cpu_nms_keep_list(count):
    rng = np.random.RandomState(count)
    for _ in range(3):
        dets = _face_like_dets(rng, count)
        expected = py_cpu_nms(dets, 0.4)
        # The same order py_cpu_nms visits: its own argsort, reversed.
        found = nms_in_order(dets[:, :4], dets[:, 4].argsort()[::-1], 0.4, pixel_offset=1)
        assert found.tolist() == [int(i) for i in expected]


def test_nms_suppression_chains_across_blocks(monkeypatch):
    import models.common.boxes as boxes_module

    # Box i spans x in [6i, 6i + 10]: neighbours overlap 4 of 16 (IoU 40 / 160 = 0.25 >
    # 0.2), boxes two apart do not touch. Greedy keeps 0, drops 1, keeps 2, ...: the even
    # ones. Blocks of 3 make every decision cross a block boundary.
    chain = np.array([[6 * i, 0, 6 * i + 10, 10] for i in range(11)], dtype=np.float32)
    scores = np.linspace(1.0, 0.5, 11)
    for block in (3, 32):
        monkeypatch.setattr(boxes_module, "NMS_BLOCK", block)
        assert nms(chain, scores, 0.2).tolist() == [0, 2, 4, 6, 8, 10]
        assert nms(chain, scores, 0.2, limit=2).tolist() == [0, 2]
        assert nms(chain, scores, 0.3).tolist() == list(range(11))
    # Visiting order is the caller's: reversed, greedy keeps 10, 8, ..., 0.
    assert nms_in_order(chain, np.arange(11)[::-1], 0.2).tolist() == [10, 8, 6, 4, 2, 0]
    assert nms_in_order(chain, np.zeros(0, dtype=np.int64), 0.2).tolist() == []


def test_batched_nms_never_suppresses_across_labels():
    boxes = [[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10]]
    keep = batched_nms(boxes, [0.9, 0.8, 0.7], [1, 2, 1], 0.5)
    assert keep.tolist() == [0, 1]
    assert batched_nms(np.zeros((0, 4)), [], [], 0.5).tolist() == []


def test_center_variance_coding_hand_computed_and_round_trip():
    priors = np.array([[0.5, 0.5, 0.2, 0.4]], np.float32)
    loc = np.array([[1.0, -1.0, 0.0, math.log(2) / 0.2]], np.float32)
    # centre: 0.5 + 1*0.1*0.2 = 0.52, 0.5 - 0.1*0.4 = 0.46; size: 0.2, 0.4*2 = 0.8
    np.testing.assert_allclose(
        decode_center_variance(loc, priors, (0.1, 0.2)), [[0.42, 0.06, 0.62, 0.86]], atol=1e-6
    )
    boxes = np.array([[0.1, 0.2, 0.5, 0.9]], np.float32)
    again = decode_center_variance(
        encode_center_variance(boxes, priors, (0.1, 0.2)), priors, (0.1, 0.2)
    )
    np.testing.assert_allclose(again, boxes, atol=1e-6)


def test_detectron2_deltas_hand_computed_clamp_and_round_trip():
    anchors = np.array([[0, 0, 10, 20]], np.float32)
    deltas = np.array([[0.1, -0.1, math.log(2), 0.0]], np.float32)
    # centre (5, 10) + (1, -2) = (6, 8); size (20, 20)
    np.testing.assert_allclose(decode_deltas(deltas, anchors), [[-4, -2, 16, 18]], atol=1e-5)
    huge = decode_deltas(np.array([[0, 0, 100, 100]], np.float32), anchors)
    width = huge[0, 2] - huge[0, 0]
    assert np.isfinite(huge).all()
    assert width == pytest.approx(10 * math.exp(DEFAULT_SCALE_CLAMP), rel=1e-5)
    boxes = np.array([[1, 2, 7, 9]], np.float32)
    np.testing.assert_allclose(
        decode_deltas(encode_deltas(boxes, anchors), anchors), boxes, atol=1e-5
    )
    weighted = (10.0, 10.0, 5.0, 5.0)
    np.testing.assert_allclose(
        decode_deltas(encode_deltas(boxes, anchors, weighted), anchors, weighted), boxes, atol=1e-5
    )
