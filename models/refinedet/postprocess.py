"""RefineDet test-time postprocessing in numpy, with the reference Detect_RefineDet semantics.

The seed (ACL_PyTorch/contrib/cv/detection/RefineDet/RefineDet_postprocess.py) and the
upstream repository (RefineDet.PyTorch eval_refinedet.py) run the same steps: the seed
imports RefineDet.PyTorch's own Detect_RefineDet (RefineDet_postprocess.py l. 18, built
at l. 91 as Detect_RefineDet(21, 320, 0, 1000, 0.01, 0.45, 0.01, 500); RefineDet.PyTorch
layers/functions/detection_refinedet.py forward), with the priors of get_prior_data.py
read back at l. 35. Per image:

1. objectness filter: where the ARM object probability arm_conf[:, 1] <= 0.01, every ODM
   class score of that prior is zeroed (forward: `no_object_index`);
2. two-stage decode: the ARM deltas decode the priors into refined anchors, the ODM deltas
   decode those refined anchors into boxes (variances 0.1, 0.2; normalized x1, y1, x2, y2)
   (forward: decode, center_size, decode);
3. per foreground class: scores > 0.01, the 1000 highest into greedy NMS at IoU 0.45
   (a box is dropped when its IoU with a kept one is > 0.45) (forward: the class loop,
   box_utils.nms(boxes, scores, 0.45, 1000)); equal scores: the lower index first here,
   where the reference leaves the order to torch's sort;
4. boxes scaled to the original image: x * w, y * h, not clipped (RefineDet_postprocess.py
   l. 60-66: positive scores only, `boxes[:, 0] *= w` ...).

keep_top_k: the reference declares 500 but never applies it. Its code,
`flt[(rank < keep_top_k)...].fill_(0)`, fills a copy that boolean indexing returns, so it
changes nothing. The seed's 79.60 mAP was measured with no overall cap, so
`keep_top_k=None` (the default) matches it. An integer keeps that many highest-scoring
detections per image across all classes.

Output per image: a list indexed by class (0 = background, always empty) of float32
(N, 5) arrays [x1, y1, x2, y2, score], highest score first.
"""

import numpy as np

from data_scripts.voc.layout import VOC_CLASSES
from models.common.boxes import decode_center_variance, nms

# The 20 VOC classes in the reference order; label = index + 1 (0 is background).
CLASSES = ("__background__", *VOC_CLASSES)
BACKGROUND = 0

VARIANCES = (0.1, 0.2)
CONF_THRESH = 0.01
NMS_THRESH = 0.45
TOP_K = 1000
OBJECTNESS_THRESH = 0.01
# Declared by the reference, never applied there (see the module docstring).
REFERENCE_KEEP_TOP_K = 500


def _center_size(boxes):
    """(x1, y1, x2, y2) -> (cx, cy, w, h), as the reference's center_size."""
    return np.concatenate([(boxes[:, 2:] + boxes[:, :2]) / 2, boxes[:, 2:] - boxes[:, :2]], axis=1)


def refined_boxes(arm_loc, odm_loc, priors, variances=VARIANCES):
    """Normalized (P, 4) x1, y1, x2, y2 boxes from the two-stage decode of one image."""
    anchors = _center_size(decode_center_variance(arm_loc, priors, variances))
    return decode_center_variance(odm_loc, anchors, variances)


def filtered_scores(arm_conf, odm_conf, objectness_thresh=OBJECTNESS_THRESH):
    """ODM class scores (P, C) with every prior of ARM objectness <= threshold zeroed."""
    scores = np.array(odm_conf, dtype=np.float32, copy=True)
    scores[np.asarray(arm_conf)[:, 1] <= objectness_thresh] = 0.0
    return scores


def _empty():
    return np.zeros((0, 5), dtype=np.float32)


def detect_image(
    arm_loc,
    arm_conf,
    odm_loc,
    odm_conf,
    priors,
    conf_thresh=CONF_THRESH,
    nms_thresh=NMS_THRESH,
    top_k=TOP_K,
    objectness_thresh=OBJECTNESS_THRESH,
    keep_top_k=None,
    variances=VARIANCES,
):
    """Per-class detections of one image, normalized coordinates (see module docstring).

    arm_loc (P, 4), arm_conf (P, 2), odm_loc (P, 4), odm_conf (P, C) as the network
    returns them (confidences softmaxed); priors (P, 4) cx, cy, w, h.
    """
    boxes = refined_boxes(arm_loc, odm_loc, priors, variances)
    scores = filtered_scores(arm_conf, odm_conf, objectness_thresh)
    result = [_empty() for _ in range(scores.shape[1])]
    for cl in range(scores.shape[1]):
        if cl == BACKGROUND:
            continue
        chosen = np.nonzero(scores[:, cl] > conf_thresh)[0]
        if chosen.size == 0:
            continue
        class_scores = scores[chosen, cl]
        # The top_k highest scores go into NMS (the reference's nms(..., top_k)).
        order = np.argsort(-class_scores, kind="stable")[:top_k]
        chosen, class_scores = chosen[order], class_scores[order]
        keep = nms(boxes[chosen], class_scores, nms_thresh)
        result[cl] = np.concatenate([boxes[chosen[keep]], class_scores[keep, None]], axis=1).astype(
            np.float32
        )
    if keep_top_k:
        result = limit_detections(result, keep_top_k)
    return result


def limit_detections(per_class, keep_top_k):
    """Keep the `keep_top_k` highest-scoring detections of one image across classes."""
    counts = [len(d) for d in per_class]
    if sum(counts) <= keep_top_k:
        return per_class
    labels = np.concatenate([np.full(n, cl, dtype=np.int64) for cl, n in enumerate(counts)])
    rows = np.concatenate([np.arange(n) for n in counts])
    scores = np.concatenate([d[:, 4] for d in per_class])
    best = np.argsort(-scores, kind="stable")[:keep_top_k]
    kept = []
    for cl, dets in enumerate(per_class):
        mine = np.sort(rows[best[labels[best] == cl]])
        kept.append(dets[mine] if mine.size else _empty())
    return kept


def scale_to_image(per_class, orig_hw):
    """Normalized detections -> pixels of the original (h, w) image."""
    h, w = float(orig_hw[0]), float(orig_hw[1])
    factor = np.array([w, h, w, h, 1.0], dtype=np.float32)
    return [dets * factor for dets in per_class]


def postprocess(outputs, priors, orig_hws, **options):
    """Detections in original-image pixels for a batch.

    outputs: (arm_loc (N, P, 4), arm_conf (N, P, 2), odm_loc (N, P, 4), odm_conf (N, P, C));
    orig_hws: N (h, w) pairs. Options go to detect_image. Returns N per-class lists.
    """
    arm_loc, arm_conf, odm_loc, odm_conf = outputs
    return [
        scale_to_image(
            detect_image(arm_loc[i], arm_conf[i], odm_loc[i], odm_conf[i], priors, **options),
            orig_hws[i],
        )
        for i in range(len(orig_hws))
    ]


def order_outputs(outputs, num_classes=21):
    """The four outputs in the export order, whatever order a compiled model gives them.

    Our ONNX and .om models return (arm_loc, arm_conf, odm_loc, odm_conf). The ModelZoo
    seed's .om returns (odm_loc, odm_conf, arm_loc, arm_conf) (its --out_nodes order);
    that order is recognized by the last dimensions (4, C, 4, 2) and put back.
    """
    if len(outputs) != 4:
        raise ValueError("RefineDet has 4 outputs, the model gave %d" % len(outputs))
    last = tuple(int(np.shape(o)[-1]) for o in outputs)
    if last == (4, 2, 4, num_classes):
        return tuple(outputs)
    if last == (4, num_classes, 4, 2):
        return (outputs[2], outputs[3], outputs[0], outputs[1])
    raise ValueError(
        "unexpected RefineDet output shapes %s (expected last dimensions 4, 2, 4, %d)"
        % ([list(np.shape(o)) for o in outputs], num_classes)
    )
