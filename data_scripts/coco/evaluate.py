"""COCO bbox evaluation (pycocotools COCOeval) of a COCO results file.

    python -m data_scripts.coco.evaluate --out OUT --detections DETS_JSON --root DATA_ROOT
        [--data DATA_STAGE_DIR] [--figure-score 0.5] [--figure-images 4]

DETS_JSON is COCO results: a JSON list of {"image_id", "category_id", "bbox": [x, y, w, h]
in original image pixels, "score"}. DATA_ROOT is the COCO folder (its
annotations/instances_val2017.json is the ground truth; its val2017/ images are only
needed for the figure).

Which images count: COCOeval is restricted to the images that were actually run, so a
`--limit` run is scored on its own images, and an image the model found nothing in still
counts (its objects are all misses):
- with `--data` (the data stage folder): the image ids of its index.json records. This is
  what the seed does (it passes the ids of every image it ran). Detections for an image
  the data stage did not prepare are an error (the two come from different runs).
- without `--data`: the image ids present in the detections, with a note: images without
  any detection are then left out, which can only raise AP. Pass --data for the real
  number.

Writes OUT/metrics.json {"metrics": {"AP", "AP50", "AP75", "APs", "APm", "APl"} in
percent (38.3 style; null where the images hold no object of that size), "images": N,
"figures": ["detections.png"]}, OUT/cocoeval.txt (everything pycocotools printed) and
OUT/detections.png (figure.py). The summary table is printed once.
"""

import contextlib
import io
import json
import math
import os
import sys

from data_scripts.coco import figure, layout
from zoostage import cli, store
from zoostage.errors import UserError

METRIC_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl")
METRICS_FILE = "metrics.json"
LOG_FILE = "cocoeval.txt"
FIGURE_FILE = "detections.png"

_RESULTS_FORMAT = (
    "COCO results are a JSON list of "
    '{"image_id": int, "category_id": int, "bbox": [x, y, w, h], "score": float}'
)


def _is_int(value):
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, float) and value.is_integer()


def _is_number(value):
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def _bad_entry(path, index, entry, why):
    text = repr(entry)
    text = text if len(text) <= 100 else text[:97] + "..."
    return UserError(
        "%s is not valid COCO results: entry %d %s (%s); %s"
        % (path, index, text, why, _RESULTS_FORMAT)
    )


def load_detections(path):
    """Read and check a COCO results file; return normalized entries (a new list)."""
    if not os.path.isfile(path):
        raise UserError("no detections file %s: run the infer stage first" % path)
    try:
        with open(path) as handle:
            data = json.load(handle)
    except ValueError as error:
        raise UserError("%s is not valid COCO results: not JSON (%s)" % (path, error)) from None
    except (IOError, OSError) as error:
        raise UserError("cannot read %s: %s" % (path, error.strerror or error)) from None
    if not isinstance(data, list):
        raise UserError(
            "%s is not valid COCO results: a JSON %s, not a list; %s"
            % (path, type(data).__name__, _RESULTS_FORMAT)
        )
    result = []
    for index, entry in enumerate(data):
        if not isinstance(entry, dict):
            raise _bad_entry(path, index, entry, "not an object")
        missing = [k for k in ("image_id", "category_id", "bbox", "score") if k not in entry]
        if missing:
            raise _bad_entry(path, index, entry, "no " + ", ".join(missing))
        if not _is_int(entry["image_id"]) or not _is_int(entry["category_id"]):
            raise _bad_entry(path, index, entry, "image_id and category_id must be integers")
        bbox = entry["bbox"]
        if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
            raise _bad_entry(path, index, entry, "bbox must be 4 numbers x, y, w, h")
        if not all(_is_number(v) for v in bbox) or bbox[2] < 0 or bbox[3] < 0:
            raise _bad_entry(path, index, entry, "bbox must be finite with w, h >= 0")
        if not _is_number(entry["score"]):
            raise _bad_entry(path, index, entry, "score must be a finite number")
        result.append(
            {
                "image_id": int(entry["image_id"]),
                "category_id": int(entry["category_id"]),
                "bbox": [float(v) for v in bbox],
                "score": float(entry["score"]),
            }
        )
    return result


def run_image_ids(data_dir):
    """The image ids of the data stage's records, in its order."""
    path = os.path.join(data_dir, store.INDEX_FILE)
    if not os.path.isfile(path):
        raise UserError("no preprocessed data in %s (run the data stage first)" % data_dir)
    with open(path) as handle:
        index = json.load(handle)
    try:
        return [int(record["id"]) for record in index["records"]]
    except (KeyError, TypeError, ValueError):
        raise UserError("%s has no COCO image ids: not a COCO data stage folder" % path) from None


def _ids_text(ids):
    ids = sorted(ids)
    return ", ".join(str(i) for i in ids[:5]) + (", ..." if len(ids) > 5 else "")


def check_ids(detections, gt_ids, run_ids, dets_path, data_dir):
    """Detections must name known images and categories; run images must be in the GT."""
    det_ids = set(d["image_id"] for d in detections)
    unknown = det_ids - gt_ids
    if unknown:
        raise UserError(
            "%s has detections for %d image ids that are not in %s (%s): wrong dataset"
            % (dets_path, len(unknown), layout.ANNOTATION_FILE, _ids_text(unknown))
        )
    bad_cats = set(d["category_id"] for d in detections) - set(layout.CATEGORY_IDS)
    if bad_cats:
        raise UserError(
            "%s has category ids that are not COCO categories (%s): the postprocess must map "
            "labels 0..79 to COCO ids" % (dets_path, _ids_text(bad_cats))
        )
    if data_dir is not None:
        stray = det_ids - set(run_ids)
        if stray:
            raise UserError(
                "%s has detections for %d images the data stage %s did not prepare (%s): "
                "detections and --data come from different runs"
                % (dets_path, len(stray), data_dir, _ids_text(stray))
            )
        not_gt = set(run_ids) - gt_ids
        if not_gt:
            raise UserError(
                "the data stage %s prepared %d images that are not in %s (%s): wrong --root"
                % (data_dir, len(not_gt), layout.ANNOTATION_FILE, _ids_text(not_gt))
            )


def coco_evaluate(annotations, detections, image_ids):
    """Run COCOeval bbox over `image_ids`; return (stats list, log text, summary text)."""
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError:
        raise UserError("pycocotools is not installed here: pip install pycocotools") from None
    log = io.StringIO()
    with contextlib.redirect_stdout(log):
        gt = COCO()
        gt.dataset = annotations
        gt.createIndex()
        if detections:
            dt = gt.loadRes([dict(d) for d in detections])
        else:
            # loadRes cannot take an empty list; no detections is a valid result: every
            # object is missed (AP 0 where there are objects).
            dt = COCO()
            dt.dataset = {
                "images": list(annotations["images"]),
                "categories": list(annotations.get("categories") or []),
                "annotations": [],
            }
            dt.createIndex()
        evaluator = COCOeval(gt, dt, "bbox")
        evaluator.params.imgIds = sorted(image_ids)
        evaluator.evaluate()
        evaluator.accumulate()
    summary = io.StringIO()
    with contextlib.redirect_stdout(summary):
        evaluator.summarize()
    return [float(v) for v in evaluator.stats], log.getvalue(), summary.getvalue()


def metrics_from_stats(stats):
    """The six AP numbers in percent; None where COCOeval reports -1 (nothing to score).

    Rounded to 1e-6 %: pycocotools' precision is tp / (tp + fp + eps), so a perfect
    score comes out as 0.9999999999999999 otherwise (the raw stats are kept beside).
    """
    return dict(
        (name, None if stats[i] < 0 else round(100.0 * stats[i], 6))
        for i, name in enumerate(METRIC_NAMES)
    )


def make_figure(out, root, image_ids, annotations, detections, score, count):
    """Draw the figure; return its file name list ([] when it could not be drawn)."""
    try:
        import cv2  # noqa: F401
    except ImportError:
        sys.stderr.write("note: OpenCV is not installed here: no figure\n")
        return []
    folder = os.path.join(root, layout.IMAGES_DIR)
    files = dict((int(im["id"]), im["file_name"]) for im in annotations["images"])
    by_image = {}
    for det in detections:
        by_image.setdefault(det["image_id"], []).append(det)
    gt = {}
    for ann in annotations["annotations"]:
        gt.setdefault(int(ann["image_id"]), []).append(ann["bbox"])
    image_files = [(i, layout.image_file(folder, files[i])) for i in image_ids]
    drawn = figure.draw_detections(
        os.path.join(out, FIGURE_FILE),
        image_files,
        by_image,
        layout.CATEGORY_NAMES,
        gt_by_image=gt,
        score_threshold=score,
        count=count,
    )
    if not drawn:
        sys.stderr.write(
            "note: no image with detections could be read from %s: no figure\n" % folder
        )
        return []
    return [FIGURE_FILE]


def evaluate(
    out,
    detections_path,
    root,
    data_dir=None,
    figure_score=0.5,
    figure_images=4,
    image_ids=None,
):
    """Evaluate, write metrics.json, cocoeval.txt and the figure; return the metrics dict.

    The images scored: `image_ids` when given (a caller that ran them itself), else the
    data stage's (`data_dir`), else those with detections (module docstring).
    """
    annotations = layout.load_annotations(root)
    detections = load_detections(detections_path)
    gt_ids = set(int(image["id"]) for image in annotations["images"])
    if image_ids is not None:
        image_ids = [int(i) for i in image_ids]
        data_dir, source = "the images run", "caller"
    elif data_dir is not None:
        image_ids = run_image_ids(data_dir)
        source = "data stage"
    else:
        image_ids = sorted(set(d["image_id"] for d in detections))
        source = "detections"
        if not detections:
            raise UserError(
                "no detections: %s is an empty list and no --data says which images ran, so "
                "there is nothing to score; pass the data stage folder as --data (the images "
                "then count with all their objects missed: AP 0)" % detections_path
            )
    check_ids(detections, gt_ids, image_ids, detections_path, data_dir)
    if data_dir is None:
        sys.stderr.write(
            "note: no --data: scoring the %d images that have detections; images with none "
            "are left out (pass the data stage folder as --data to count them)\n" % len(image_ids)
        )
    stats, log, summary = coco_evaluate(annotations, detections, image_ids)
    with open(os.path.join(out, LOG_FILE), "w") as handle:
        handle.write(log + summary)
    metrics = metrics_from_stats(stats)
    sys.stdout.write(
        "COCO bbox, %d images, %d detections:\n%s" % (len(image_ids), len(detections), summary)
    )
    figures = []
    if figure_images > 0:
        figures = make_figure(
            out, root, image_ids, annotations, detections, figure_score, figure_images
        )
    result = {
        "metrics": metrics,
        "images": len(image_ids),
        "figures": figures,
        "detections": len(detections),
        "image_ids_from": source,
        "cocoeval_stats": stats,
    }
    cli.write_json(os.path.join(out, METRICS_FILE), result)
    return result


def main(args):
    cli.call(evaluate, args, detections_path=args.detections, data_dir=args.data)


def build_parser():
    parser = cli.parser(__doc__.splitlines()[0])
    parser.add_argument("--detections", required=True, help="COCO results JSON file")
    parser.add_argument(
        "--root", required=True, help="COCO folder with annotations/ (and val2017/)"
    )
    parser.add_argument(
        "--data", help="data stage folder: score exactly its images (default: images detected)"
    )
    parser.add_argument(
        "--figure-score", type=float, default=0.5, help="score at which boxes are drawn (0.5)"
    )
    parser.add_argument(
        "--figure-images", type=int, default=4, help="images in the figure (4; 0 = no figure)"
    )
    return parser


if __name__ == "__main__":
    cli.run(main, build_parser())
