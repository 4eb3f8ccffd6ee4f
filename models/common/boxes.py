"""Box arithmetic shared by the recipes, in numpy: IoU, NMS, and both box codings.

Boxes are (x1, y1, x2, y2) float arrays. Areas use the continuous convention
(x2 - x1) * (y2 - y1), as torchvision's nms and detectron2 do; degenerate boxes
(zero or negative extent) have area 0 and overlap nothing.
"""

import math

import numpy as np

# detectron2's Box2BoxTransform clamp: exp() of larger deltas would overflow to inf.
DEFAULT_SCALE_CLAMP = math.log(1000.0 / 16)


def area(boxes, pixel_offset=0.0):
    """Box areas; `pixel_offset` 1 counts inclusive pixels (py-faster-rcnn's x2 - x1 + 1)."""
    boxes = np.asarray(boxes, dtype=np.float64)
    return np.clip(boxes[:, 2] - boxes[:, 0] + pixel_offset, 0, None) * np.clip(
        boxes[:, 3] - boxes[:, 1] + pixel_offset, 0, None
    )


def iou_matrix(a, b):
    """IoU of every box in `a` (N, 4) with every box in `b` (M, 4): an (N, M) array."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(rb - lt, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    union = area(a)[:, None] + area(b)[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def nms(boxes, scores, iou_threshold, pixel_offset=0.0, limit=None):
    """Greedy non-maximum suppression; the indices kept, highest score first.

    A box is suppressed when its IoU with a kept box is > iou_threshold. Equal scores
    keep their input order (stable sort), so results do not depend on sort internals.
    `pixel_offset` 1 measures widths as x2 - x1 + 1, as py_cpu_nms (Pytorch_Retinaface)
    does; 0 is torchvision's and detectron2's continuous convention.
    `limit` stops once that many boxes are kept: a kept box is never dropped later, so
    the first `limit` do not depend on the rest (detectron2 keeps 100 of thousands).
    Arithmetic is in the boxes' dtype (float32 stays float32, as in the references'
    NMS; anything else becomes float64): see `nms_in_order`.
    """
    boxes = _float_boxes(boxes)
    scores = np.asarray(scores).reshape(-1)
    order = np.argsort(-scores, kind="stable")
    return nms_in_order(boxes, order, iou_threshold, pixel_offset=pixel_offset, limit=limit)


# Boxes taken from the head of the queue per step of nms_in_order (see there).
NMS_BLOCK = 32


def _float_boxes(boxes):
    boxes = np.asarray(boxes)
    if boxes.dtype not in (np.float32, np.float64):
        boxes = boxes.astype(np.float64)
    return boxes.reshape(-1, 4)


def _pair_iou(coords, areas, rows, cols, pixel_offset):
    """IoU of boxes `rows` x `cols` (positions in `coords`, a (4, n) x1 y1 x2 y2 array).

    Each pair is computed with py_cpu_nms's operations in its order -- w = max(0,
    min(x2) - max(x1) + offset), inter = w * h, inter / (area_i + area_j - inter) --
    so every value is bit-identical to the reference's.
    """
    x1, y1, x2, y2 = coords
    w = np.minimum(x2[rows][:, None], x2[cols]) - np.maximum(x1[rows][:, None], x1[cols])
    h = np.minimum(y2[rows][:, None], y2[cols]) - np.maximum(y1[rows][:, None], y1[cols])
    if pixel_offset:
        w += pixel_offset
        h += pixel_offset
    np.maximum(w, 0, out=w)
    np.maximum(h, 0, out=h)
    inter = w * h
    return inter / (areas[rows][:, None] + areas[cols] - inter)


def nms_in_order(boxes, order, iou_threshold, pixel_offset=0.0, limit=None):
    """Greedy NMS visiting `boxes` in `order` (e.g. a reference's own sort of the scores).

    Returns the kept indices into `boxes`, in visiting order. Same keep list as
    py_cpu_nms given the same order and float32 boxes (every IoU is computed with its
    operations, in the boxes' dtype); degenerate boxes (zero extent) overlap nothing.

    Why it is faster than one box per step: it takes the next NMS_BLOCK live boxes of the
    queue, settles them among themselves greedily (a block box is suppressed only by a
    kept box before it, and every box before the block is already settled), then drops
    every later box that one of the block's kept boxes overlaps, in one array operation.
    That is exactly the greedy rule -- a box survives iff no kept box ranked above it
    overlaps it -- with ~NMS_BLOCK times fewer numpy calls.
    """
    boxes = _float_boxes(boxes)
    order = np.asarray(order, dtype=np.int64).reshape(-1)
    if order.size == 0:
        return np.zeros((0,), dtype=np.int64)
    coords = np.ascontiguousarray(boxes[order].T)
    offset = boxes.dtype.type(pixel_offset)
    x1, y1, x2, y2 = coords
    areas = np.clip(x2 - x1 + offset, 0, None) * np.clip(y2 - y1 + offset, 0, None)
    live = np.arange(order.size)
    keep = []
    with np.errstate(divide="ignore", invalid="ignore"):  # 0 / 0: degenerate, no overlap
        while live.size and (limit is None or len(keep) < limit):
            head, live = live[:NMS_BLOCK], live[NMS_BLOCK:]
            overlaps = _pair_iou(coords, areas, head, head, offset) > iou_threshold
            dropped = np.zeros(head.size, dtype=bool)
            kept = []
            for a in range(head.size):
                if dropped[a]:
                    continue
                kept.append(a)
                if limit is not None and len(keep) + len(kept) >= limit:
                    break
                dropped[a + 1 :] |= overlaps[a, a + 1 :]
            kept = head[kept]
            keep.extend(kept.tolist())
            if live.size:
                hit = _pair_iou(coords, areas, kept, live, offset) > iou_threshold
                live = live[~hit.any(axis=0)]
    return order[np.asarray(keep, dtype=np.int64)]


def batched_nms(boxes, scores, labels, iou_threshold, limit=None):
    """NMS within each label independently; the indices kept, highest score first.

    Boxes of different labels are shifted apart so that they never overlap, the trick
    torchvision's batched_nms uses; one NMS pass then serves every class.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if boxes.shape[0] == 0:
        return np.zeros((0,), dtype=np.int64)
    labels = np.asarray(labels).reshape(-1)
    span = boxes.max() - min(boxes.min(), 0.0) + 1.0
    shifted = boxes + (labels.astype(np.float64) * span)[:, None]
    return nms(shifted, scores, iou_threshold, limit=limit)


def decode_center_variance(loc, priors, variances):
    """SSD-style decoding (RetinaFace, RefineDet): priors are (cx, cy, w, h).

    loc (N, 4) holds (dx, dy, dw, dh) scaled by `variances` (v0 for centre, v1 for size).
    Returns (x1, y1, x2, y2) in the priors' units, float32, with the references' operation
    order (ssd.pytorch's `decode`, copied by Pytorch_Retinaface and RefineDet.PyTorch):
    x1 = centre - size / 2, then x2 = x1 + size (not centre + size / 2: one rounding
    differs).
    """
    loc = np.asarray(loc, dtype=np.float32)
    priors = np.asarray(priors, dtype=np.float32)
    centers = priors[:, :2] + loc[:, :2] * variances[0] * priors[:, 2:]
    sizes = priors[:, 2:] * np.exp(loc[:, 2:] * variances[1])
    corner = centers - sizes / 2
    return np.concatenate([corner, corner + sizes], axis=1)


def encode_center_variance(boxes, priors, variances):
    """The inverse of decode_center_variance, for (x1, y1, x2, y2) boxes."""
    boxes = np.asarray(boxes, dtype=np.float32)
    priors = np.asarray(priors, dtype=np.float32)
    centers = (boxes[:, :2] + boxes[:, 2:]) / 2
    sizes = boxes[:, 2:] - boxes[:, :2]
    d_center = (centers - priors[:, :2]) / (variances[0] * priors[:, 2:])
    d_size = np.log(sizes / priors[:, 2:]) / variances[1]
    return np.concatenate([d_center, d_size], axis=1)


def decode_deltas(deltas, anchors, weights=(1.0, 1.0, 1.0, 1.0), scale_clamp=DEFAULT_SCALE_CLAMP):
    """detectron2 Box2BoxTransform.apply_deltas for (x1, y1, x2, y2) anchors.

    deltas (N, 4) are (dx, dy, dw, dh) divided by `weights`; dw, dh are clamped at
    `scale_clamp` before exp().
    """
    deltas = np.asarray(deltas, dtype=np.float32)
    anchors = np.asarray(anchors, dtype=np.float32)
    widths = anchors[:, 2] - anchors[:, 0]
    heights = anchors[:, 3] - anchors[:, 1]
    ctr_x = anchors[:, 0] + 0.5 * widths
    ctr_y = anchors[:, 1] + 0.5 * heights
    wx, wy, ww, wh = weights
    dx = deltas[:, 0] / wx
    dy = deltas[:, 1] / wy
    dw = np.minimum(deltas[:, 2] / ww, scale_clamp)
    dh = np.minimum(deltas[:, 3] / wh, scale_clamp)
    pred_ctr_x = dx * widths + ctr_x
    pred_ctr_y = dy * heights + ctr_y
    pred_w = np.exp(dw) * widths
    pred_h = np.exp(dh) * heights
    return np.stack(
        [
            pred_ctr_x - 0.5 * pred_w,
            pred_ctr_y - 0.5 * pred_h,
            pred_ctr_x + 0.5 * pred_w,
            pred_ctr_y + 0.5 * pred_h,
        ],
        axis=1,
    )


def encode_deltas(boxes, anchors, weights=(1.0, 1.0, 1.0, 1.0)):
    """detectron2 Box2BoxTransform.get_deltas: the inverse of decode_deltas."""
    boxes = np.asarray(boxes, dtype=np.float32)
    anchors = np.asarray(anchors, dtype=np.float32)
    aw = anchors[:, 2] - anchors[:, 0]
    ah = anchors[:, 3] - anchors[:, 1]
    ax = anchors[:, 0] + 0.5 * aw
    ay = anchors[:, 1] + 0.5 * ah
    bw = boxes[:, 2] - boxes[:, 0]
    bh = boxes[:, 3] - boxes[:, 1]
    bx = boxes[:, 0] + 0.5 * bw
    by = boxes[:, 1] + 0.5 * bh
    wx, wy, ww, wh = weights
    return np.stack(
        [wx * (bx - ax) / aw, wy * (by - ay) / ah, ww * np.log(bw / aw), wh * np.log(bh / ah)],
        axis=1,
    )


def multiclass_nms(boxes, scores, labels, iou_threshold, max_per_class, max_total):
    """NMS per label, then the best `max_total` over all labels: BatchMultiClassNMS's shape.

    The Ascend op (CANN BatchMultiClassNMS, torch_npu.npu_batch_nms) the RetinaNet seed
    ends its graph with: for each class on its own, greedy NMS (a box is dropped when its
    IoU with a kept one is > iou_threshold), at most `max_per_class` kept; then the kept
    boxes of all classes ranked by score and the first `max_total` returned. Score
    filtering is the caller's (the seed's threshold sits before this step).

    boxes (N, 4), scores (N,), labels (N,): one row per (candidate, class) pair, in the
    order that breaks ties: equal scores keep input order, within a class and in the
    final ranking (the op does not document its tie order). Arithmetic is float64 on the
    given values, so float16 inputs enter exactly. Returns the indices kept, best first.
    """
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    labels = np.asarray(labels).reshape(-1)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    kept = []
    for label in np.unique(labels):
        mine = np.flatnonzero(labels == label)
        kept.append(mine[nms(boxes[mine], scores[mine], iou_threshold, limit=max_per_class)])
    if not kept:
        return np.zeros((0,), dtype=np.int64)
    kept = np.sort(np.concatenate(kept))  # input order, so the stable sort keeps it on ties
    order = np.argsort(-scores[kept], kind="stable")[:max_total]
    return kept[order].astype(np.int64)
