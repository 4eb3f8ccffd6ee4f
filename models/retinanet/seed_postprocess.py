"""RetinaNet test-time postprocessing as the ModelZoo seed runs it (the `seed` profile).

The seed's 38.3 AP comes from detectron2 patched by ACL_PyTorch/contrib/cv/detection/
Retinanet/Retinanet.diff (AscendIE/TorchAIE/built-in/cv/detection/Retinanet/Retina_aie.diff
runs the same graph on Torch_AIE, swapping only the NMS operator's binding), then from
Retinanet_postprocess.py on the host. Step by step, with where each is written:

  Retinanet.diff (diff line numbers), modeling/meta_arch/retinanet.py,
  inference_single_image, per level:
    1. `predicted_prob = box_cls_i.sigmoid_()` (l. 227): every (anchor, class) score,
       in float32, with no score threshold first;
    2. `torch.topk(predicted_prob, max_size_perclass=200, dim=0)` (l. 201, 228): per
       class, the level's 200 best anchors ([200, 80] scores and anchor indices);
    3. `box_reg_i[indices]`, `anchors_i[indices]`, `apply_deltas(...).reshape(-1, 80, 4)`
       (l. 229-233): the boxes of those (anchor, class) pairs, decoded as detectron2 does
       (box_regression.py, l. 82-129: weights (1, 1, 1, 1), dw / dh clamped at
       log(1000 / 16) from above only);
  then `cat` over P3..P7 (l. 239-241): boxes [1000, 80, 4], scores [1000, 80] (row
  l * 200 + rank).
  Retinanet.diff, layers/nms.py, batch_nms_op:
    4. `.half()` (l. 59-60): boxes and scores rounded to float16;
    5. BatchMultiClassNMS(score_threshold 0.05, iou_threshold 0.5, max_size_per_class 200,
       max_total_size 100) (l. 247; torch.ops.aie.batch_nms in Retina_aie.diff l. 28):
       per class, scores above 0.05, greedy NMS at IoU 0.5, at most 200 kept; then the
       best 100 over all classes; outputs float16, cast back with `.float()`;
  Retinanet.diff, forward (l. 171-179): no detector_postprocess (no clipping, no
  empty-box filter).
  Retinanet_postprocess.py (its line numbers):
    6. postprocess_bboxes (l. 72-94): every coordinate divided by one scale. get_info.py
       (l. 43-44) writes each image's "width height" and the script reads them as
       (old_h, old_w) (l. 132-134, 73), so the scale it computes, new_w / old_w, is the
       resized height over the original height (`seed_rescale`), applied to x and y
       alike; float32 arithmetic, no clipping;
    7. (l. 173-186) detections with a score < 0.05 skipped; boxes to x, y, w, h; label k
       -> the k-th COCO category id (postprocess.coco_results).

`SeedPostprocessor.detect` runs steps 1-5 from the network's dense outputs;
`detect_nms_inputs` runs steps 4-5 from what seed_graph.ClassTopK exports (steps 1-3 in
the graph, as the seed has them). Both give the same detections.

What the seed leaves unspecified, fixed here so runs repeat:
- ties: torch.topk and the NPU operator do not document the order of equal scores;
  here, in step 2, equal float32 scores (sigmoid saturates at 1.0) are ordered by logit,
  then by the lower anchor index (seed_graph.ClassTopK ranks the same way), and in
  step 5 equal float16 scores by the lower (row, class) position, row = level * 200 +
  rank (models.common.boxes.multiclass_nms);
- the operator's score test (> or >= 0.05, in float16 or float32) and IoU arithmetic:
  here float16 scores > float32 0.05, IoU in float64 on the float16 coordinates.
  Float16 has no value in (0.049988, 0.050049), so the score test only decides about
  scores of 0.049988, which step 7 drops anyway: the detections do not depend on it.
"""

import numpy as np

from models.common.boxes import DEFAULT_SCALE_CLAMP, decode_deltas, multiclass_nms
from models.retinanet import NUM_CLASSES
from models.retinanet import anchors as anchor_lib
from models.retinanet.postprocess import BOX_WEIGHTS, MAX_DETECTIONS, sigmoid

SCORE_THRESH = 0.05
NMS_THRESH = 0.5
TOPK_PER_CLASS = 200  # the seed's max_size_perclass (topk per level) and max_size_per_class
# Logits below this cannot reach a float16 score above the threshold (margin: 0.01 in
# logit is ~5e-4 in score near 0.05, over 10 float16 steps there).
_LOGIT_FLOOR = float(np.log(SCORE_THRESH / (1.0 - SCORE_THRESH))) - 0.01


def class_topk(scores, k):
    """Per class, the k best rows of a level's (R, K) values: step 2 (torch.topk, dim 0).

    Returns (rows, classes, ranks) of the chosen (anchor, class) pairs, in (rank, class)
    order; equal values keep the lower row. The values are scores or, to order equal
    scores by logit, the logits. `scores` may be a subset of a level's entries given as
    (rows, classes, values) instead of a dense array.
    """
    if isinstance(scores, tuple):
        rows, classes, values = scores
    else:
        dense = np.asarray(scores, dtype=np.float32)
        rows, classes = np.divmod(np.arange(dense.size), dense.shape[1])
        values = dense.reshape(-1)
    order = np.lexsort((rows, -values, classes))  # by class, then best first, then row
    rows, classes = rows[order], classes[order]
    starts = np.searchsorted(classes, classes, side="left")
    ranks = np.arange(len(classes)) - starts
    chosen = ranks < k
    rows, classes, ranks = rows[chosen], classes[chosen], ranks[chosen]
    order = np.lexsort((classes, ranks))
    return rows[order], classes[order], ranks[order]


def seed_rescale(boxes, resized_hw, orig_hw):
    """Step 6: input-pixel boxes -> original-image pixels, one scale for x and y.

    The seed divides float32 boxes by new_h / old_h (a Python float, so numpy divides in
    float32), and neither clips nor drops boxes.
    """
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    scale = float(resized_hw[0]) / float(orig_hw[0])
    return boxes / np.float32(scale)


def keep_scored(boxes, scores, labels, score_thresh=SCORE_THRESH):
    """Step 7's filter: detections with a score below the threshold are skipped."""
    keep = np.asarray(scores, np.float32) >= np.float32(score_thresh)
    return boxes[keep], scores[keep], labels[keep]


def seed_nms(boxes, scores, classes, max_per_class=TOPK_PER_CLASS):
    """Steps 4-5 on (row, class) candidates given in (row, class) order.

    boxes (N, 4) and scores (N,) float32 are rounded to float16 (`.half()`), scores not
    above 0.05 dropped, then BatchMultiClassNMS (IoU 0.5, 200 per class, 100 in all).
    Returns (boxes (D, 4), scores (D,), labels (D,)): float16 values as float32.
    """
    boxes16 = np.asarray(boxes, dtype=np.float32).reshape(-1, 4).astype(np.float16)
    scores16 = np.asarray(scores, dtype=np.float32).reshape(-1).astype(np.float16)
    classes = np.asarray(classes, dtype=np.int64).reshape(-1)
    above = scores16.astype(np.float32) > np.float32(SCORE_THRESH)
    boxes16, scores16, classes = boxes16[above], scores16[above], classes[above]
    keep = multiclass_nms(boxes16, scores16, classes, NMS_THRESH, max_per_class, MAX_DETECTIONS)
    return boxes16[keep].astype(np.float32), scores16[keep].astype(np.float32), classes[keep]


class SeedPostprocessor(object):
    """Steps 1-5 for one network input size (anchors cached); see the module docstring."""

    def __init__(self, input_hw, num_classes=NUM_CLASSES, topk=TOPK_PER_CLASS):
        self.input_hw = (int(input_hw[0]), int(input_hw[1]))
        self.num_classes = int(num_classes)
        self.topk = int(topk)
        self.level_anchors = [
            np.asarray(a, dtype=np.float32).reshape(-1, 4)
            for a in anchor_lib.grid_anchors(self.input_hw)
        ]
        self.level_starts = np.cumsum([0] + [len(a) for a in self.level_anchors])
        self.num_anchors = int(self.level_starts[-1])
        # Rows of the NMS input per level: min(200, anchors of the level) (seed_graph too).
        self.level_rows = [min(self.topk, len(a)) for a in self.level_anchors]
        self.num_rows = int(sum(self.level_rows))

    def detect(self, cls_logits, box_deltas):
        """One image's detections from dense outputs: (boxes (D, 4) in input pixels,
        scores (D,), labels (D,)), D <= 100, best first; float16 values as float32.

        cls_logits (R, K), box_deltas (R, 4): the network's outputs for the image.
        """
        self._check(
            (tuple(np.shape(cls_logits)), tuple(np.shape(box_deltas))),
            ((self.num_anchors, self.num_classes), (self.num_anchors, 4)),
        )
        rows_all, classes_all, boxes_all, scores_all = [], [], [], []
        first_row = 0
        for level, anchors in enumerate(self.level_anchors):
            start, stop = self.level_starts[level], self.level_starts[level + 1]
            flat = np.asarray(cls_logits[start:stop], dtype=np.float32).reshape(-1)
            # Entries that cannot pass step 5's threshold change neither which of the
            # others are in their class's top 200 nor their rank: leave them out early.
            index = np.flatnonzero(flat > _LOGIT_FLOOR)
            anchor, cls = np.divmod(index, self.num_classes)
            # Ranked by logit: the order of the scores, equal float32 scores (saturated at
            # 1.0) by logit, as seed_graph.ClassTopK ranks them.
            anchor, cls, rank = class_topk((anchor, cls, flat[index]), self.topk)
            scores = sigmoid(flat[anchor * self.num_classes + cls])
            boxes = decode_deltas(
                np.asarray(box_deltas[start + anchor], dtype=np.float32),
                anchors[anchor],
                BOX_WEIGHTS,
                DEFAULT_SCALE_CLAMP,
            )
            rows_all.append(first_row + rank)
            classes_all.append(cls)
            boxes_all.append(boxes.astype(np.float32))
            scores_all.append(scores)
            first_row += self.level_rows[level]
        rows = np.concatenate(rows_all)
        classes = np.concatenate(classes_all)
        order = np.lexsort((classes, rows))
        return seed_nms(
            np.concatenate(boxes_all)[order],
            np.concatenate(scores_all)[order],
            classes[order],
            self.topk,
        )

    def _check(self, found, want):
        """A UserError when outputs do not fit this input size's anchors and classes."""
        if found != want:
            from zoostage.errors import UserError

            raise UserError(
                "model outputs %s and %s per image, but a %dx%d input needs %s and %s: the "
                "model was exported for another input size or class count; export it again "
                "with --input-size %d"
                % (
                    list(found[0]),
                    list(found[1]),
                    self.input_hw[0],
                    self.input_hw[1],
                    list(want[0]),
                    list(want[1]),
                    self.input_hw[0],
                )
            )

    def detect_nms_inputs(self, boxes, scores):
        """Steps 4-5 from seed_graph.ClassTopK's outputs for one image.

        boxes (M, K, 4) and scores (M, K), M = sum over levels of min(200, anchors):
        the tensors the seed's graph hands to its NMS operator.
        """
        self._check(
            (tuple(np.shape(boxes)), tuple(np.shape(scores))),
            ((self.num_rows, self.num_classes, 4), (self.num_rows, self.num_classes)),
        )
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        scores = np.asarray(scores, dtype=np.float32).reshape(-1)
        classes = np.tile(np.arange(self.num_classes), self.num_rows)
        return seed_nms(boxes, scores, classes, self.topk)
