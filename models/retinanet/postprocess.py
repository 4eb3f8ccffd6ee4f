"""RetinaNet test-time postprocessing on the host (numpy), as detectron2 does it.

`Postprocessor.detect` is detectron2's RetinaNet.inference_single_image (DenseDetector
in newer releases) for one image, from the network's concatenated outputs:

  per level P3..P7:
    1. scores = sigmoid(logits) over the flattened (anchor, class) grid; keep > 0.05
       (MODEL.RETINANET.SCORE_THRESH_TEST);
    2. keep the 1000 best of those (TOPK_CANDIDATES_TEST); a flat index i is anchor
       i // K, class i % K;
    3. decode their anchors' deltas (Box2BoxTransform, weights (1, 1, 1, 1), dw / dh
       clamped at log(1000 / 16));
  then class-wise NMS at IoU 0.5 over all levels together (NMS_THRESH_TEST), and the
  best 100 (TEST.DETECTIONS_PER_IMAGE).

`Postprocessor.detect_candidates` does the same from net.TopKCandidates' outputs (export
--outputs topk): each level's 1000 best scores were picked in the graph; thresholding
them gives the candidates of steps 1-2, and steps 3 on are shared.

`rescale` is detectron2's detector_postprocess: boxes from the resized image to the
original one (scale_x = orig_w / resized_w, scale_y = orig_h / resized_h), clipped to
the original image, empty boxes (width or height <= 0) dropped; so an image may end with
fewer than 100 detections even when 100 survived NMS.

Ties: candidates are ranked by logit, which orders like the score and still separates
scores that float32 rounds to the same value (sigmoid saturates at 1.0); equal logits keep
the lower flat index, where torch's sort / topk leave the order unspecified.
"""

import math

import numpy as np

from models.common.boxes import DEFAULT_SCALE_CLAMP, batched_nms, decode_deltas
from models.retinanet import NUM_CLASSES
from models.retinanet import anchors as anchor_lib

SCORE_THRESH = 0.05
TOPK_CANDIDATES = 1000
NMS_THRESH = 0.5
MAX_DETECTIONS = 100
BOX_WEIGHTS = (1.0, 1.0, 1.0, 1.0)

# The 80 COCO category ids, in detectron2's contiguous order (label i -> COCO_CATEGORY_IDS[i]).
# fmt: off
COCO_CATEGORY_IDS = (
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21,
    22, 23, 24, 25, 27, 28, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44,
    46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65,
    67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84, 85, 86, 87, 88, 89, 90,
)
# fmt: on

# Logits below this cannot pass the score threshold: sigmoid(x) > t <=> x > log(t / (1 - t)).
# The margin keeps borderline logits (and float16 outputs) for the exact float32 test.
_LOGIT_MARGIN = 0.01


def sigmoid(x):
    x = np.asarray(x, dtype=np.float32)
    return (np.float32(1.0) / (np.float32(1.0) + np.exp(-x))).astype(np.float32)


def _empty():
    return (np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0,), np.int64))


class Postprocessor(object):
    """detectron2's RetinaNet inference for one network input size (anchors cached)."""

    def __init__(
        self,
        input_hw,
        num_classes=NUM_CLASSES,
        score_thresh=SCORE_THRESH,
        topk_candidates=TOPK_CANDIDATES,
        nms_thresh=NMS_THRESH,
        max_detections=MAX_DETECTIONS,
        box_weights=BOX_WEIGHTS,
        scale_clamp=DEFAULT_SCALE_CLAMP,
        level_anchors=None,
    ):
        self.input_hw = (int(input_hw[0]), int(input_hw[1]))
        self.num_classes = int(num_classes)
        self.score_thresh = float(score_thresh)
        self.topk_candidates = int(topk_candidates)
        self.nms_thresh = float(nms_thresh)
        self.max_detections = int(max_detections)
        self.box_weights = tuple(box_weights)
        self.scale_clamp = float(scale_clamp)
        if level_anchors is None:
            level_anchors = anchor_lib.grid_anchors(self.input_hw)
        self.level_anchors = [np.asarray(a, dtype=np.float32).reshape(-1, 4) for a in level_anchors]
        self.level_starts = np.cumsum([0] + [len(a) for a in self.level_anchors])
        self.num_anchors = int(self.level_starts[-1])
        if 0.0 < self.score_thresh < 1.0:
            self._logit_floor = math.log(self.score_thresh / (1.0 - self.score_thresh))
            self._logit_floor -= _LOGIT_MARGIN
        else:
            self._logit_floor = None

    def _check(self, ok, what):
        from zoostage.errors import UserError

        if not ok:
            raise UserError(
                "model outputs %s per image, but a %dx%d input has %d anchors x %d classes: "
                "the model was exported for another input size or class count; export it "
                "again with --input-size %d"
                % (
                    what,
                    self.input_hw[0],
                    self.input_hw[1],
                    self.num_anchors,
                    self.num_classes,
                    self.input_hw[0],
                )
            )

    def check_outputs(self, cls_logits, box_deltas):
        """A UserError when dense outputs do not fit this input size's anchors."""
        shapes = (tuple(np.shape(cls_logits)), tuple(np.shape(box_deltas)))
        self._check(
            shapes == ((self.num_anchors, self.num_classes), (self.num_anchors, 4)),
            "%s and %s" % (list(shapes[0]), list(shapes[1])),
        )

    def _top(self, index, scores, rank):
        """Steps 1-2 on one level's candidates (flat index, score, rank key).

        Keeps scores > threshold, then the topk_candidates best, best first. "Best" is by
        `rank`, a key that orders like the score (the logit, or the graph's order), so that
        equal float32 scores (sigmoid saturates at 1.0) are still ranked the same way by
        the dense and the top-k paths; equal keys keep index order.
        """
        keep = scores > np.float32(self.score_thresh)
        index, scores, rank = index[keep], scores[keep], rank[keep]
        k = self.topk_candidates
        if len(rank) > k:
            # Cut to the k best in linear time first (ties at the k-th key: lowest index
            # first), then sort only those: the same result as a full stable sort.
            kth = np.partition(rank, len(rank) - k)[len(rank) - k]
            above = np.flatnonzero(rank > kth)
            tied = np.flatnonzero(rank == kth)[: k - len(above)]
            chosen = np.concatenate([above, tied])
            index, scores, rank = index[chosen], scores[chosen], rank[chosen]
        order = np.lexsort((index, -rank))[:k]
        return index[order], scores[order]

    def _decode(self, level, index, scores, box_deltas):
        """Boxes of a level's chosen (flat index, score) candidates: (boxes, scores, classes)."""
        start = self.level_starts[level]
        anchor_idx = index // self.num_classes + start
        boxes = decode_deltas(
            np.asarray(box_deltas[anchor_idx], dtype=np.float32),
            self.level_anchors[level][anchor_idx - start],
            self.box_weights,
            self.scale_clamp,
        )
        classes = (index % self.num_classes).astype(np.int64)
        return boxes.astype(np.float32), scores.astype(np.float32), classes

    def _nms(self, parts):
        boxes = np.concatenate([p[0] for p in parts])
        scores = np.concatenate([p[1] for p in parts])
        classes = np.concatenate([p[2] for p in parts])
        if not len(scores):
            return _empty()
        keep = batched_nms(boxes, scores, classes, self.nms_thresh, limit=self.max_detections)
        return boxes[keep], scores[keep], classes[keep]

    def detect(self, cls_logits, box_deltas):
        """One image's (boxes (D, 4) xyxy in input pixels, scores (D,), labels (D,)).

        cls_logits (R, K) and box_deltas (R, 4): the network's dense outputs for the image.
        D <= max_detections; sorted by score, highest first.
        """
        self.check_outputs(cls_logits, box_deltas)
        parts = []
        for level in range(len(self.level_anchors)):
            start, stop = self.level_starts[level], self.level_starts[level + 1]
            flat = cls_logits[start:stop].reshape(-1)
            if self._logit_floor is not None:
                # Cheap pre-filter on the logits; the exact test is on the sigmoid.
                index = np.flatnonzero(flat > self._logit_floor)
            else:
                index = np.arange(flat.size)
            logits = flat[index].astype(np.float32)
            index, scores = self._top(index, sigmoid(logits), logits)
            parts.append(self._decode(level, index, scores, box_deltas))
        return self._nms(parts)

    def detect_candidates(self, logits, indices, box_deltas):
        """detect() for net.TopKCandidates outputs: the graph already kept each level's best.

        logits (C,) of the kept (anchor, class) pairs, indices (C,) their flat r * K + k
        into the dense (R, K) grid, box_deltas (R, 4) dense.
        """
        logits = np.asarray(logits, dtype=np.float32).reshape(-1)
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        self._check(
            tuple(np.shape(box_deltas)) == (self.num_anchors, 4)
            and len(indices) == len(logits)
            and (
                not len(indices)
                or 0 <= indices.min() <= indices.max() < self.num_anchors * self.num_classes
            ),
            "%d candidates over %s deltas" % (len(indices), list(np.shape(box_deltas))),
        )
        level_of = np.searchsorted(self.level_starts * self.num_classes, indices, side="right") - 1
        parts = []
        for level in range(len(self.level_anchors)):
            mine = level_of == level
            local = indices[mine] - self.level_starts[level] * self.num_classes
            index, scores = self._top(local, sigmoid(logits[mine]), logits[mine])
            parts.append(self._decode(level, index, scores, box_deltas))
        return self._nms(parts)


def rescale(boxes, scores, labels, resized_hw, orig_hw):
    """detector_postprocess: input-pixel boxes -> original-image boxes, clipped, non-empty."""
    boxes = np.array(boxes, dtype=np.float32).reshape(-1, 4)
    scale_y = float(orig_hw[0]) / float(resized_hw[0])
    scale_x = float(orig_hw[1]) / float(resized_hw[1])
    boxes[:, 0::2] *= np.float32(scale_x)
    boxes[:, 1::2] *= np.float32(scale_y)
    np.clip(boxes[:, 0::2], 0, float(orig_hw[1]), out=boxes[:, 0::2])
    np.clip(boxes[:, 1::2], 0, float(orig_hw[0]), out=boxes[:, 1::2])
    nonempty = (boxes[:, 2] - boxes[:, 0] > 0) & (boxes[:, 3] - boxes[:, 1] > 0)
    return (
        boxes[nonempty],
        np.asarray(scores, np.float32)[nonempty],
        np.asarray(labels, np.int64)[nonempty],
    )


def fixed_size(boxes, scores, labels, size=MAX_DETECTIONS):
    """The seed's per-image record: boxes [size, 4], labels [size], scores [size], count.

    Rows past `count` are zeros.
    """
    count = min(len(scores), size)
    out_boxes = np.zeros((size, 4), np.float32)
    out_scores = np.zeros((size,), np.float32)
    out_labels = np.zeros((size,), np.int64)
    out_boxes[:count] = np.asarray(boxes, np.float32).reshape(-1, 4)[:count]
    out_scores[:count] = np.asarray(scores, np.float32)[:count]
    out_labels[:count] = np.asarray(labels, np.int64)[:count]
    return {"boxes": out_boxes, "scores": out_scores, "labels": out_labels, "count": count}


def coco_results(image_id, boxes, scores, labels, category_ids=COCO_CATEGORY_IDS):
    """COCO result entries: {"image_id", "category_id", "bbox": [x, y, w, h], "score"}."""
    # XYXY -> XYWH in float32, as detectron2's instances_to_coco_json converts them.
    xywh = np.array(boxes, dtype=np.float32).reshape(-1, 4)
    xywh[:, 2:] -= xywh[:, :2]
    results = []
    for box, score, label in zip(
        xywh.tolist(), np.asarray(scores, np.float32).tolist(), np.asarray(labels).tolist()
    ):
        results.append(
            {
                "image_id": int(image_id),
                "category_id": int(category_ids[int(label)]),
                "bbox": box,
                "score": score,
            }
        )
    return results
