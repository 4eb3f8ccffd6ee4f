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
