"""The official WIDER FACE val evaluation (easy / medium / hard AP), vectorized.

Same numbers as the evaluation every RetinaFace number is quoted with -- the MATLAB
eval_tools and their Python port (WiderFace-Evaluation `evaluation.py`, shipped as
Pytorch_Retinaface's widerface_evaluate/) -- computed with numpy over the whole set at once
instead of per image and per threshold in Python loops:

1. Scores are min-max normalized over every evaluated prediction, the port's way: the
   minimum starts at 1 and the maximum at 0, so scores already inside [0, 1] are scaled by
   their own range, and (s - min) / (max - min) is applied to each.
2. Per image, each prediction (in file order) is matched to the ground-truth face of
   highest IoU (boxes x, y, w, h -> x2 = x + w, areas and intersections with the "+1"
   pixel convention, float64). At IoU >= 0.5: if that face does not count in the setting
   (not in its keep list) the prediction is ignored (-1: neither a true nor a false
   positive); otherwise the face is recalled, once -- a second prediction on it is a
   false positive.
3. For each of 1000 thresholds t_k = 1 - (k+1)/1000, an image contributes the predictions
   up to the *last one in file order* whose score is >= t_k (the port's prefix rule; for
   score-sorted files that is "score >= t_k"): their non-ignored count and the faces
   recalled by them. Summed over images: precision = recalled / proposals, recall =
   recalled / faces counted in the setting.
4. AP: VOC's area under the interpolated curve (precision envelope; sentinels recall 0
   and 1, precision 0).

The vectorization: a prediction's contribution starts at the first threshold below the
suffix maximum of its image's scores (step 3's prefix rule) and lasts down to t = 0, so
the per-threshold sums are a histogram of start indices and a cumulative sum. Only the
IoU argmax runs per image. The test file keeps a port-like reference and checks that both
give identical APs.

Partial runs (only some images have a prediction file): the evaluated set is the images
that have a file (an empty file -- no detections -- still counts); the others are left
out entirely. Normalization runs over the evaluated predictions and faces are counted
over the evaluated images only, so the result is exactly the official evaluation of the
subset as if it were the whole val set; on a full run it is the official number.
Prediction files that name no ground-truth image are ignored and counted.

Deviations from the port, each where the port has no usable answer: when every score is
equal (max - min = 0, the port divides by zero and gets NaN scores, i.e. AP 0) all
predictions pass every threshold; when a setting has no counted face among the evaluated
images (the port gets NaN) its AP is reported as 0 and its face count as 0; a prediction
file the port would choke on (missing for a gt image) simply leaves that image out.

    python -m data_scripts.widerface.evaluate --out OUT --predictions PRED_DIR --root DATA_ROOT \
        [--faces INFER_DIR/faces.json] [--figure-images 4]

Writes OUT/metrics.json, OUT/pr_curves.npz, OUT/pr_curves.png and, with --faces, OUT/faces.png:
a few images with the faces found and their landmarks (data_scripts.widerface.figure).
"""

import os
import sys

import numpy as np

from data_scripts.widerface import layout, params
from data_scripts.widerface.predictions import read_image_predictions
from zoostage import cli
from zoostage.errors import UserError
from zoostage.progress import Progress

SETTINGS = layout.SETTINGS
IOU_THRESH = 0.5
THRESH_NUM = 1000
METRICS_FILE = "metrics.json"
FIGURE_FILE = "pr_curves.png"
CURVES_FILE = "pr_curves.npz"
FACES_FIGURE = "faces.png"


def thresholds(thresh_num=THRESH_NUM):
    """The port's thresholds, 1 - (k+1)/n for k = 0..n-1 (descending), bit for bit."""
    return 1.0 - np.arange(1, thresh_num + 1, dtype=np.float64) / float(thresh_num)


def score_range(score_arrays):
    """(min, max) of the port's normalization: min starts at 1, max at 0."""
    lo, hi = 1.0, 0.0
    for scores in score_arrays:
        if len(scores):
            lo = min(lo, float(np.min(scores)))
            hi = max(hi, float(np.max(scores)))
    return lo, hi


def overlaps(pred, gt):
    """IoU (N, M) of x, y, w, h boxes with the "+1" convention, as the port's bbox_overlaps."""
    p = np.asarray(pred, dtype=np.float64)[:, :4].copy()
    g = np.asarray(gt, dtype=np.float64)[:, :4].copy()
    p[:, 2] = p[:, 2] + p[:, 0]
    p[:, 3] = p[:, 3] + p[:, 1]
    g[:, 2] = g[:, 2] + g[:, 0]
    g[:, 3] = g[:, 3] + g[:, 1]
    gt_area = (g[:, 2] - g[:, 0] + 1) * (g[:, 3] - g[:, 1] + 1)
    pred_area = (p[:, 2] - p[:, 0] + 1) * (p[:, 3] - p[:, 1] + 1)
    iw = np.minimum(p[:, None, 2], g[None, :, 2]) - np.maximum(p[:, None, 0], g[None, :, 0]) + 1
    ih = np.minimum(p[:, None, 3], g[None, :, 3]) - np.maximum(p[:, None, 1], g[None, :, 1]) + 1
    inter = iw * ih
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = inter / (pred_area[:, None] + gt_area[None, :] - inter)
    return np.where((iw > 0) & (ih > 0), iou, 0.0)


def voc_ap(recall, precision):
    """Area under the interpolated PR curve (VOC), NaNs propagating as in the port."""
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    i = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


def _matches(dataset, chosen, preds, iou_thresh):
    """Per prediction, over all evaluated images in order: the suffix maximum of its
    image's normalized scores (the prefix rule), its best-IoU face (as a global face
    index: gt_offset[n] + face) and whether that IoU reaches the threshold."""
    lo, hi = score_range([p[:, 4] for p in preds])
    diff = hi - lo
    gt_offset = np.zeros(len(chosen) + 1, dtype=np.int64)
    for n, i in enumerate(chosen):
        gt_offset[n + 1] = gt_offset[n] + len(dataset.boxes[i])
    suffix_max, best_face, matched = [], [], []
    for n, i in enumerate(chosen):
        p, gt = preds[n], dataset.boxes[i]
        if len(p) == 0 or len(gt) == 0:
            continue  # the port skips such images; their faces still count
        if diff > 0:
            scores = (p[:, 4] - lo) / diff
        else:
            scores = np.ones(len(p))
        suffix_max.append(np.maximum.accumulate(scores[::-1])[::-1])
        iou = overlaps(p, gt)
        best = iou.argmax(axis=1)
        best_face.append(best + gt_offset[n])
        matched.append(iou[np.arange(len(p)), best] >= iou_thresh)
    if suffix_max:
        suffix_max = np.concatenate(suffix_max)
        best_face = np.concatenate(best_face)
        matched = np.concatenate(matched)
    else:
        suffix_max = np.zeros(0)
        best_face = np.zeros(0, dtype=np.int64)
        matched = np.zeros(0, dtype=bool)
    return gt_offset, suffix_max, best_face, matched


def evaluate(dataset, predictions, iou_thresh=IOU_THRESH, thresh_num=THRESH_NUM):
    """Evaluate `predictions` {image_id: (N, 5) x, y, w, h, score} against `dataset`.

    Only images of `dataset` that have an entry are evaluated (see the module docstring).
    Returns a dict: "ap" {setting: fraction}, "precision" / "recall" {setting: (thresh_num,)
    arrays, NaN precision where nothing passed}, "faces" {setting: count}, "images",
    "detections", "unmatched" (prediction ids that are not in the ground truth),
    "thresholds".
    """
    chosen = [i for i, image_id in enumerate(dataset.ids) if image_id in predictions]
    unmatched = sorted(k for k in predictions if dataset.index(k) is None)
    preds = []
    for i in chosen:
        p = np.asarray(predictions[dataset.ids[i]], dtype=np.float64).reshape(-1, 5)
        if not np.all(np.isfinite(p)):
            raise UserError(
                "predictions for %s hold a non-finite number; rerun the infer stage"
                % dataset.ids[i]
            )
        preds.append(p)
    gt_offset, suffix_max, best_face, matched = _matches(dataset, chosen, preds, iou_thresh)

    # First threshold index at which each prediction is inside its image's prefix.
    thresh = thresholds(thresh_num)
    start = thresh_num - np.searchsorted(thresh[::-1], suffix_max, side="right")

    result = {"ap": {}, "precision": {}, "recall": {}, "faces": {}, "thresholds": thresh}
    for setting in SETTINGS:
        counted = np.zeros(int(gt_offset[-1]), dtype=bool)
        count_face = 0
        for n, i in enumerate(chosen):
            keep = dataset.keep[setting][i]
            counted[gt_offset[n] + keep] = True
            count_face += len(keep)
        hits = matched & counted[best_face]
        ignored = matched & ~hits
        hit_index = np.flatnonzero(hits)
        _, first = np.unique(best_face[hit_index], return_index=True)
        recalls = hit_index[first]  # the first prediction (file order) on each counted face
        proposals = np.cumsum(np.bincount(start[~ignored], minlength=thresh_num + 1))
        recalled = np.cumsum(np.bincount(start[recalls], minlength=thresh_num + 1))
        proposals = proposals[:thresh_num].astype(np.float64)
        recalled = recalled[:thresh_num].astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            precision = recalled / proposals
            recall = recalled / count_face if count_face else np.zeros(thresh_num)
        result["precision"][setting] = precision
        result["recall"][setting] = recall
        result["faces"][setting] = int(count_face)
        result["ap"][setting] = voc_ap(recall, precision) if count_face else 0.0
    result["images"] = len(chosen)
    result["detections"] = int(sum(len(p) for p in preds))
    result["unmatched"] = unmatched
    return result


def read_prediction_dir(pred_root):
    """{image_id: (N, 5)} for every PRED_ROOT/<event>/<name>.txt; a bad file is a UserError."""
    if not os.path.isdir(pred_root):
        raise UserError(
            "prediction folder %s does not exist; run the infer stage first" % pred_root
        )
    paths = []
    for event in sorted(os.listdir(pred_root)):
        folder = os.path.join(pred_root, event)
        if os.path.isdir(folder):
            for name in sorted(os.listdir(folder)):
                if name.endswith(".txt"):
                    paths.append((event + "/" + name[:-4], os.path.join(folder, name)))
    if not paths:
        raise UserError(
            "no predictions in %s (expected <event>/<image>.txt files); run the infer stage"
            % pred_root
        )
    result = {}
    with Progress(len(paths), "read predictions", unit="files") as progress:
        for image_id, path in paths:
            try:
                result[image_id] = read_image_predictions(path)
            except (ValueError, IndexError) as error:
                raise UserError("malformed prediction file %s: %s" % (path, error)) from error
            progress.update()
    return result


def plot_curves(path, result):
    """PR curves of the three settings in one figure (matplotlib Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 5))
    try:
        for setting in SETTINGS:
            precision = result["precision"][setting]
            ok = np.isfinite(precision)
            ax.plot(
                result["recall"][setting][ok],
                precision[ok],
                linewidth=2.0,
                label="%s: AP %.2f%%" % (setting, 100.0 * result["ap"][setting]),
            )
        ax.set_xlim(0.0, 1.0)
        ax.set_ylim(0.0, 1.02)
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.set_title("WIDER FACE val (%d images)" % result["images"])
        ax.grid(True, alpha=0.3)
        ax.legend(loc="lower left")
        fig.tight_layout()
        fig.savefig(path, dpi=100)
    finally:
        plt.close(fig)


def write_outputs(out, result, total_images):
    """OUT/metrics.json, OUT/pr_curves.npz and OUT/pr_curves.png (when matplotlib is there)."""
    curves = {"thresholds": result["thresholds"]}
    for setting in SETTINGS:
        curves[setting + "_precision"] = result["precision"][setting]
        curves[setting + "_recall"] = result["recall"][setting]
        curves[setting + "_ap"] = np.float64(result["ap"][setting])
    np.savez(os.path.join(out, CURVES_FILE), **curves)
    figures = []
    try:
        plot_curves(os.path.join(out, FIGURE_FILE), result)
        figures.append(FIGURE_FILE)
    except ImportError:
        sys.stderr.write("note: matplotlib is not installed here; no %s\n" % FIGURE_FILE)
    metrics = {
        "metrics": {s: 100.0 * result["ap"][s] for s in SETTINGS},
        "images": result["images"],
        "figures": figures,
        "details": {
            "images_in_ground_truth": int(total_images),
            "partial": result["images"] < total_images,
            "faces": result["faces"],
            "detections": result["detections"],
            "unmatched_prediction_files": len(result["unmatched"]),
            "iou_threshold": IOU_THRESH,
            "thresholds": len(result["thresholds"]),
            "curves": CURVES_FILE,
        },
    }
    cli.write_json(os.path.join(out, METRICS_FILE), metrics)
    return metrics


def faces_figure(out, faces_path, root, dataset, count):
    """OUT/faces.png from the infer stage's faces.json; the ids drawn ([]: none)."""
    import json

    from data_scripts.widerface.figure import draw_faces

    if not os.path.isfile(faces_path):
        sys.stderr.write("note: no %s: no faces figure\n" % faces_path)
        return []
    try:
        images_dir = layout.find_images_dir(root)
    except UserError:
        sys.stderr.write("note: no images under %s: no faces figure\n" % root)
        return []
    with open(faces_path) as handle:
        faces = json.load(handle)
    gt = dict((image_id, dataset.boxes[i]) for i, image_id in enumerate(dataset.ids))
    order = [i for i in dataset.ids if i in (faces.get("images") or {})]
    try:
        return draw_faces(os.path.join(out, FACES_FIGURE), images_dir, faces, gt, count, order)
    except ImportError:
        sys.stderr.write("note: OpenCV is not installed here: no faces figure\n")
        return []


def main(args):
    dataset = layout.load(args.root, images=False)
    predictions = read_prediction_dir(args.predictions)
    result = evaluate(dataset, predictions)
    if result["images"] == 0:
        raise UserError(
            "none of the %d prediction files in %s names a WIDER FACE val image (e.g. %s); "
            "check --predictions and --root"
            % (len(predictions), args.predictions, result["unmatched"][0])
        )
    if result["unmatched"]:
        sys.stderr.write(
            "note: %d prediction files name no ground-truth image and were ignored (e.g. %s)\n"
            % (len(result["unmatched"]), result["unmatched"][0])
        )
    if result["images"] < len(dataset):
        sys.stderr.write(
            "note: partial run: %d of %d images have predictions; scores are normalized and "
            "faces counted over those only\n" % (result["images"], len(dataset))
        )
    metrics = write_outputs(args.out, result, len(dataset))
    if args.faces and args.figure_images > 0:
        drawn = faces_figure(args.out, args.faces, args.root, dataset, args.figure_images)
        if drawn:
            metrics["figures"].append(FACES_FIGURE)
            cli.write_json(os.path.join(args.out, METRICS_FILE), metrics)
    print(
        "WIDER FACE val AP (%d images): easy %.2f  medium %.2f  hard %.2f"
        % (
            result["images"],
            metrics["metrics"]["easy"],
            metrics["metrics"]["medium"],
            metrics["metrics"]["hard"],
        )
    )


def build_parser():
    return cli.parser(
        "WIDER FACE val evaluation (official easy / medium / hard AP)", params.EVALUATE
    )


if __name__ == "__main__":
    cli.run(main, build_parser())
