"""Anchor matching and regression targets for RetinaNet training, on the host (numpy).

The reference is mmdetection v2.9's RetinaNet (`MaxIoUAssigner` with pos_iou_thr 0.5,
neg_iou_thr 0.4, min_pos_iou 0, `allowed_border` -1, `PseudoSampler`,
`DeltaXYWHBBoxCoder` with means 0 and stds 1). For every anchor of one image:

1. anchors outside the image's own padded extent (`valid_flags`: feature locations past
   ceil(pad / stride), the part of a batch that only exists because a larger image shares
   the batch) take no part: they are ignored and do not count in step 4's maxima;
2. max IoU over the ground-truth boxes < 0.4: negative (background);
3. max IoU >= 0.5: positive, matched to the box of the highest IoU;
4. low-quality matches (detectron2's allow_low_quality_matches, mmdet's
   match_low_quality): each box also takes every anchor whose IoU with it equals that
   box's best IoU (ties included); boxes are visited in order, so a later box wins an
   anchor two boxes share. A box that overlaps no anchor at all (best IoU 0) takes none:
   mmdet's min_pos_iou 0 would hand it every zero-IoU anchor;
5. anything else (IoU in [0.4, 0.5) and not taken in step 4): ignored.

Classification targets: the box's contiguous label (0..K-1) for positives, K for
negatives, IGNORE (-1) for ignored anchors. Regression targets: (dx, dy, dw, dh) of
`models.common.boxes.encode_deltas` with weights (1, 1, 1, 1) for positives (what the
inference side decodes), zeros elsewhere. Anchor order is the network's (anchors.py).

IoU is computed in float32 in chunks of anchors, so memory stays bounded for a 1344 x
1344 input (337,725 anchors) and a hundred boxes.
"""

import numpy as np

from models.common.boxes import encode_deltas
from models.retinanet import NUM_CLASSES
from models.retinanet import anchors as anchor_lib

POS_IOU = 0.5
NEG_IOU = 0.4
# Classification target of an anchor that takes no part in the loss.
IGNORE = -1
# `match` results besides a box index.
NEGATIVE = -1
IGNORED = -2
CHUNK = 65536

_ANCHOR_CACHE = {}


def pairwise_iou(anchors, boxes):
    """(A, G) float32 IoU, the continuous convention (x2 - x1) * (y2 - y1), no +1.

    Not models.common.boxes.iou_matrix (float64): mmdet assigns on float32 overlaps with
    union clamped at 1e-6, and IoUs that land on the 0.4 / 0.5 thresholds must fall the
    same way; float32 also halves the memory of 300k anchors x G boxes.
    """
    anchors = np.asarray(anchors, dtype=np.float32).reshape(-1, 4)
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    lt = np.maximum(anchors[:, None, :2], boxes[None, :, :2])
    rb = np.minimum(anchors[:, None, 2:], boxes[None, :, 2:])
    wh = np.clip(rb - lt, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    area_a = (anchors[:, 2] - anchors[:, 0]) * (anchors[:, 3] - anchors[:, 1])
    area_b = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return inter / np.maximum(union, np.float32(1e-6))


def match(anchors, boxes, valid=None, pos_iou=POS_IOU, neg_iou=NEG_IOU, low_quality=True):
    """Per anchor: the index of its box (>= 0), NEGATIVE (-1) or IGNORED (-2).

    anchors (R, 4), boxes (G, 4) xyxy; valid (R,) bool or None (all valid).
    """
    anchors = np.asarray(anchors, dtype=np.float32).reshape(-1, 4)
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    count = anchors.shape[0]
    valid = np.ones(count, dtype=bool) if valid is None else np.asarray(valid, dtype=bool)
    result = np.full(count, IGNORED, dtype=np.int64)
    if boxes.shape[0] == 0:
        result[valid] = NEGATIVE
        return result
    index = np.flatnonzero(valid)
    best_of_box = np.zeros(boxes.shape[0], dtype=np.float32)
    matched = np.full(index.size, IGNORED, dtype=np.int64)
    for start in range(0, index.size, CHUNK):
        part = index[start : start + CHUNK]
        iou = pairwise_iou(anchors[part], boxes)
        best = iou.max(axis=1)
        which = iou.argmax(axis=1)
        out = matched[start : start + CHUNK]
        out[best < neg_iou] = NEGATIVE
        positive = best >= pos_iou
        out[positive] = which[positive]
        np.maximum(best_of_box, iou.max(axis=0), out=best_of_box)
    if low_quality:
        takes = best_of_box > 0
        if takes.any():
            last = boxes.shape[0] - 1
            for start in range(0, index.size, CHUNK):
                part = index[start : start + CHUNK]
                iou = pairwise_iou(anchors[part], boxes)
                hit = (iou == best_of_box[None, :]) & takes[None, :]
                rows = np.flatnonzero(hit.any(axis=1))
                if rows.size:
                    # The last box that takes the anchor wins (mmdet visits boxes in order).
                    matched[start + rows] = last - hit[rows, ::-1].argmax(axis=1)
    result[index] = matched
    return result


def valid_flags(input_hw, pad_hw, num_cell_anchors=anchor_lib.NUM_CELL_ANCHORS):
    """(R,) bool: anchors whose feature location lies inside the image's padded extent.

    mmdet's AnchorGenerator.valid_flags with the image's own `pad_shape` (its size rounded
    up to 32): on level l, locations y < min(ceil(pad_h / s_l), H_l), likewise x.
    """
    flags = []
    for (height, width), stride in zip(anchor_lib.feature_sizes(input_hw), anchor_lib.STRIDES):
        valid_h = min(int(np.ceil(float(pad_hw[0]) / stride)), height)
        valid_w = min(int(np.ceil(float(pad_hw[1]) / stride)), width)
        grid = np.zeros((height, width), dtype=bool)
        grid[:valid_h, :valid_w] = True
        flags.append(np.repeat(grid.reshape(-1), num_cell_anchors))
    return np.concatenate(flags)


def all_anchors(input_hw):
    """(R, 4) float32 anchors of a padded input size, cached per size (per process)."""
    key = (int(input_hw[0]), int(input_hw[1]))
    if key not in _ANCHOR_CACHE:
        if len(_ANCHOR_CACHE) > 64:
            _ANCHOR_CACHE.clear()
        _ANCHOR_CACHE[key] = np.concatenate(anchor_lib.grid_anchors(key)).astype(np.float32)
    return _ANCHOR_CACHE[key]


def image_targets(anchors, boxes, labels, valid=None, num_classes=NUM_CLASSES):
    """(cls_target (R,) int64, box_target (R, 4) float32, number of positives).

    cls_target: label for positives, `num_classes` for negatives, IGNORE for the rest.
    """
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    matched = match(anchors, boxes, valid)
    cls_target = np.full(matched.shape, IGNORE, dtype=np.int64)
    cls_target[matched == NEGATIVE] = num_classes
    positive = np.flatnonzero(matched >= 0)
    box_target = np.zeros((matched.shape[0], 4), dtype=np.float32)
    if positive.size:
        gt = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)[matched[positive]]
        cls_target[positive] = labels[matched[positive]]
        box_target[positive] = encode_deltas(gt, anchors[positive])
    return cls_target, box_target, int(positive.size)
