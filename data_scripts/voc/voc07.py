"""VOC07 11-point mAP, as RefineDet.PyTorch's eval_refinedet.py computes it.

What the reference does, and this module repeats (eval_refinedet.py, also the ModelZoo
RefineDet eval_utils.py, both descended from ssd.pytorch's eval.py):

- ground truth: parse_rec reads every corner as the XML integer minus 1 (layout.py);
- detections go through per-class results files written with
  '{:.3f} {:.1f} {:.1f} {:.1f} {:.1f}'.format(score, x1 + 1, y1 + 1, x2 + 1, y2 + 1)
  on float32 values (the +1 in float64, as numpy 1.20 does it), and are read back:
  `results_file_round_trip` does the same arithmetic exactly (the scores' rounding to
  0.001 creates ties, see below);
- per class, detections sorted by descending score; each is matched to the ground-truth
  box of its image with the largest IoU (first one on ties), IoU with *continuous* areas
  (x2 - x1) * (y2 - y1): this lineage dropped py-faster-rcnn's "+ 1.0" widths;
  TP when IoU > 0.5 (strictly), the box is not difficult and not matched before; a
  second detection of a matched box is a FP; a difficult best match is neither TP nor FP;
  a detection in an image without boxes of its class is a FP;
- recall = cumulative TP / npos (non-difficult boxes), precision = TP / max(TP + FP, eps),
  AP = sum over t in np.arange(0, 1.1, 0.1) of max(precision[recall >= t]) / 11
  (0 where no recall reaches t);
- edge cases: a class with no detections gets the sentinel AP -1 (`if any(lines) == 1`
  fails); a class with detections but npos = 0 gets recall 0/0 = nan, no t is reached,
  AP 0. The reference puts both into its mean; on the full VOC2007 test set neither
  happens (every class has objects, a working model detects every class).

Deliberate differences, both only where the reference is undefined or degenerate:

- ties: the reference sorts with np.argsort(-confidence), an unstable quicksort whose tie
  order depends on the numpy build; here the sort is stable over the results-file order
  (images in test.txt order, detections in their given order), so runs are repeatable;
- the stage's mAP is the mean over the classes with at least one non-difficult object in
  the evaluated images (all 20 on the full set: the reference's number); a class without
  any is reported as null and excluded, and a class with objects but no detections
  counts AP 0, not the sentinel -1. `voc07_eval` itself returns the reference's values.
"""

import itertools

import numpy as np

from data_scripts.voc.layout import VOC_CLASSES
from zoostage.errors import UserError

OVTHRESH = 0.5


# The reference's recall thresholds, float for float (0.30000000000000004, ...).
THRESHOLDS = np.arange(0.0, 1.1, 0.1)


NO_DETECTIONS_AP = -1.0  # the reference's sentinel


CHUNK_PAIRS = 1 << 20  # detection x box pairs per vectorized step (bounds the memory)


def results_file_round_trip(dets):
    """(N, 5) x1, y1, x2, y2, score -> (boxes (N, 4), scores (N,)) as the reference reads
    them back from its results files: corners + 1 to 0.1, scores to 0.001.

    The reference formats float32 values: `dets[k, 0] + 1` is float64 under the numpy it
    ran with (1.20.3, value-based casting; numpy >= 2 would add in float32), so the +1 is
    done on the float32 value widened to float64. Exact: that sum, times 10 (or a float32
    score times 1000), is exact in float64; np.round then rounds half to even as
    str.format rounds the exact value, and k / 10 is the double nearest the printed text.
    """
    dets = np.asarray(dets, dtype=np.float32).reshape(-1, 5).astype(np.float64)
    return np.round(dets[:, :4] + 1.0, 1), np.round(dets[:, 4], 3)


class GroundTruth(object):
    """Every annotated object of the evaluated images, flattened, in image then file order."""

    def __init__(self, annotations, image_ids):
        self.image_ids = list(image_ids)
        names, boxes, difficult, image_index = [], [], [], []
        for index, image_id in enumerate(self.image_ids):
            for obj in annotations[image_id]:
                names.append(obj["name"])
                boxes.append(obj["bbox"])
                difficult.append(bool(obj["difficult"]))
                image_index.append(index)
        self.names = np.asarray(names, dtype=object)
        self.boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        self.difficult = np.asarray(difficult, dtype=bool)
        self.image_index = np.asarray(image_index, dtype=np.int64)

    def of_class(self, classname):
        """(boxes (G, 4), difficult (G,), image index (G,)) of one class."""
        mask = self.names == classname
        return self.boxes[mask], self.difficult[mask], self.image_index[mask]


def _bad_rows(image_id, classname):
    return UserError(
        "detections of %s for image %s are not [[x1, y1, x2, y2, score], ...] rows; "
        "rerun the infer stage" % (classname, image_id)
    )


def _is_row(row):
    try:
        return len(row) == 5 and all(isinstance(float(v), float) for v in row)
    except (TypeError, ValueError):
        return False


def flatten_detections(detections, image_ids, classes):
    """Every detection of `image_ids` in one (N, 5) float32 array, results-file order.

    Returns (rows, class index (N,), image index (N,)): images in `image_ids` order, the
    rows of each image and class in their given order. One conversion for the whole set:
    converting per image and class costs more than the evaluation itself.
    """
    class_index = dict((c, k) for k, c in enumerate(classes))
    flat, counts, owners, labels = [], [], [], []
    for index, image_id in enumerate(image_ids):
        for classname, rows in detections.get(image_id, {}).items():
            if classname not in class_index:
                continue
            if isinstance(rows, np.ndarray):
                rows = rows.tolist()
            if not isinstance(rows, (list, tuple)):
                raise _bad_rows(image_id, classname)
            if not rows:
                continue
            flat.extend(rows)
            counts.append(len(rows))
            owners.append(index)
            labels.append(class_index[classname])
    rows = None
    try:
        if set(map(len, flat)) <= {5}:
            values = itertools.chain.from_iterable(flat)
            rows = np.fromiter(values, dtype=np.float32, count=5 * len(flat)).reshape(-1, 5)
    except (TypeError, ValueError):
        pass
    if rows is None:  # find the culprit for the message
        start = 0
        for count, owner, label in zip(counts, owners, labels):
            if not all(_is_row(row) for row in flat[start : start + count]):
                raise _bad_rows(image_ids[owner], classes[label])
            start += count
        raise _bad_rows(image_ids[owners[0]], classes[labels[0]])
    counts = np.asarray(counts, dtype=np.int64)
    return (
        rows,
        np.repeat(np.asarray(labels, dtype=np.int64), counts),
        np.repeat(np.asarray(owners, dtype=np.int64), counts),
    )


def voc07_ap(rec, prec):
    """VOC07 11-point AP of a recall / precision curve (recall non-decreasing).

    Same value, bit for bit, as the reference's loop over t of np.max(prec[rec >= t]).
    """
    rec = np.asarray(rec, dtype=np.float64)
    prec = np.asarray(prec, dtype=np.float64)
    ap = 0.0
    if rec.size == 0 or np.isnan(rec).any():  # npos = 0: no t is ever reached
        return ap
    best_after = np.maximum.accumulate(prec[::-1])[::-1]
    first = np.searchsorted(rec, THRESHOLDS, side="left")
    for index in first:
        p = best_after[index] if index < rec.size else 0
        ap = ap + p / 11.0
    return float(ap)


def _best_overlaps(det_boxes, gt_boxes, start, width):
    """Largest IoU of each detection with the `width` boxes of its image, and its slot.

    Detection i is paired with gt_boxes[start[i] : start[i] + width]: a dense block (the
    caller groups detections by their image's box count, so there is no padding).
    """
    bbgt = gt_boxes[start[:, None] + np.arange(width)[None, :]]  # (n, width, 4)
    bb = det_boxes[:, None, :]
    # The reference's formula, term for term, so the IoUs are the same floats.
    ixmin = np.maximum(bbgt[..., 0], bb[..., 0])
    iymin = np.maximum(bbgt[..., 1], bb[..., 1])
    ixmax = np.minimum(bbgt[..., 2], bb[..., 2])
    iymax = np.minimum(bbgt[..., 3], bb[..., 3])
    iw = np.maximum(ixmax - ixmin, 0.0)
    ih = np.maximum(iymax - iymin, 0.0)
    inters = iw * ih
    uni = (
        (bb[..., 2] - bb[..., 0]) * (bb[..., 3] - bb[..., 1])
        + (bbgt[..., 2] - bbgt[..., 0]) * (bbgt[..., 3] - bbgt[..., 1])
        - inters
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        overlaps = inters / uni
    # np.max is nan when any IoU is nan; np.argmax gives the first max (or first nan):
    # the reference's own calls, row by row.
    return np.max(overlaps, axis=1), np.argmax(overlaps, axis=1)


def match_class(gt_boxes, gt_difficult, gt_image, det_image, det_boxes, det_scores, ovthresh):
    """TP and FP flags (0./1. floats, sorted by descending score) of one class."""
    order = np.argsort(-det_scores, kind="mergesort")
    det_image = det_image[order]
    det_boxes = det_boxes[order]
    nd = det_boxes.shape[0]
    tp = np.zeros(nd)
    fp = np.zeros(nd)
    if nd == 0:
        return tp, fp
    if gt_boxes.shape[0] == 0:  # no box of this class anywhere: every detection is a FP
        fp[:] = 1.0
        return tp, fp
    n_images = int(max(det_image.max(), gt_image.max() if gt_image.size else 0)) + 1
    counts = np.bincount(gt_image, minlength=n_images)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    count = counts[det_image]
    ovmax = np.full(nd, -np.inf)  # the reference's value for an image without boxes
    jmax = np.zeros(nd, dtype=np.int64)
    for width in np.unique(count[count > 0]):
        group = np.flatnonzero(count == width)
        step = max(1, CHUNK_PAIRS // int(width))
        for lo in range(0, group.size, step):
            part = group[lo : lo + step]
            ovmax[part], jmax[part] = _best_overlaps(
                det_boxes[part], gt_boxes, starts[det_image[part]], int(width)
            )
    hit = starts[det_image] + jmax
    with np.errstate(invalid="ignore"):
        matched = (count > 0) & (ovmax > ovthresh)
    fp[~matched] = 1.0
    candidates = np.nonzero(matched & ~gt_difficult[np.where(matched, hit, 0)])[0]
    # The first detection (in score order) to hit a box takes it; later ones are FPs.
    _, first = np.unique(hit[candidates], return_index=True)
    fp[candidates] = 1.0
    fp[candidates[first]] = 0.0
    tp[candidates[first]] = 1.0
    return tp, fp


def voc07_eval(annotations, detections, image_ids=None, classes=VOC_CLASSES, ovthresh=OVTHRESH):
    """Per-class VOC07 evaluation of the images `image_ids` (default: detections' keys).

    annotations: {image id: layout.parse_annotation(...)}; detections: {image id:
    {class name: (N, 5) x1, y1, x2, y2, score in original-image pixels}}; classes other
    than `classes` are ignored. Returns {class: {"ap": fraction, "npos": int,
    "detections": int}} with the reference's values: ap = -1 for a class without
    detections, 0 for npos = 0 (see the module doc).
    """
    image_ids = list(detections) if image_ids is None else list(image_ids)
    gt = GroundTruth(annotations, image_ids)
    rows, labels, owners = flatten_detections(detections, image_ids, classes)
    boxes, scores = results_file_round_trip(rows)
    by_class = np.argsort(labels, kind="mergesort")  # stable: keeps results-file order
    bounds = np.searchsorted(labels[by_class], np.arange(len(classes) + 1))
    result = {}
    for k, classname in enumerate(classes):
        gt_boxes, gt_difficult, gt_image = gt.of_class(classname)
        npos = int((~gt_difficult).sum())
        chosen = by_class[bounds[k] : bounds[k + 1]]
        if chosen.size == 0:
            ap = NO_DETECTIONS_AP
        else:
            tp, fp = match_class(
                gt_boxes,
                gt_difficult,
                gt_image,
                owners[chosen],
                boxes[chosen],
                scores[chosen],
                ovthresh,
            )
            fp = np.cumsum(fp)
            tp = np.cumsum(tp)
            with np.errstate(divide="ignore", invalid="ignore"):
                rec = tp / float(npos)
            prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
            ap = voc07_ap(rec, prec)
        result[classname] = {"ap": ap, "npos": npos, "detections": int(chosen.size)}
    return result
