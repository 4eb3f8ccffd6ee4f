"""WIDER FACE: evaluation time on the full val ground truth, and preprocessing rate.

    python bench/bench_widerface_eval.py [--per-image 100] [--ref-images 100]

1. Synthetic predictions (~--per-image per image: jittered faces and false positives,
   score-sorted, integer boxes as the infer stage writes them) for all 3226 val images of
   the real ground truth (../shared/fixtures/widerface), written as prediction files. Times
   the evaluate stage's reading and the vectorized evaluation, then the port-like
   reference loop (tests/test_widerface.py) on --ref-images images spread over the events,
   extrapolated to the full set by detections (said so in the output).
2. The data stage on a generated sample: images per second with all cores vs one.

Ratios are measured in this one run; nothing is asserted.
"""

import argparse
import importlib.util
import os
import shutil
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from data_scripts.widerface import evaluate as ev  # noqa: E402
from data_scripts.widerface import layout, prepare, sample  # noqa: E402
from data_scripts.widerface.predictions import write_image_predictions  # noqa: E402
from tests.conftest import input_args  # noqa: E402

WIDER_GT = os.path.join(os.path.dirname(REPO), "shared", "fixtures", "widerface")


def load_reference():
    path = os.path.join(REPO, "tests", "test_widerface.py")
    spec = importlib.util.spec_from_file_location("widerface_reference", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def synthetic_predictions(dataset, per_image, seed=0):
    rng = np.random.RandomState(seed)
    preds = {}
    for i, image_id in enumerate(dataset.ids):
        gt = dataset.boxes[i]
        k = min(len(gt), int(per_image * 0.7))
        chosen = rng.choice(len(gt), size=k, replace=False) if k else np.zeros(0, np.int64)
        tp = gt[chosen].copy()
        tp[:, :2] += rng.normal(0.0, 2.0, size=(k, 2))
        tp[:, 2:] *= rng.uniform(0.85, 1.15, size=(k, 2))
        n = per_image - k
        fp = np.column_stack(
            [rng.uniform(0, 1000, n), rng.uniform(0, 1000, n), rng.uniform(5, 100, (n, 2))]
        )
        boxes = np.floor(np.vstack([tp, fp]))
        scores = np.concatenate([rng.uniform(0.3, 1.0, k), rng.uniform(0.02, 0.7, n)])
        order = np.argsort(-scores)
        preds[image_id] = np.column_stack([boxes, scores])[order]
    return preds


def write_prediction_files(pred_root, preds):
    for image_id, p in preds.items():
        corners = p.copy()
        corners[:, 2] += corners[:, 0]
        corners[:, 3] += corners[:, 1]
        write_image_predictions(pred_root, image_id, corners)


def bench_eval(work, per_image, ref_images):
    if not all(os.path.isfile(os.path.join(WIDER_GT, f)) for f in layout.GT_FILES):
        print("evaluation: skipped, the WIDER FACE ground-truth fixture is absent (%s)" % WIDER_GT)
        return
    start = time.perf_counter()
    dataset = layout.load(WIDER_GT, images=False)
    t_gt = time.perf_counter() - start
    preds = synthetic_predictions(dataset, per_image)
    pred_root = os.path.join(work, "pred")
    write_prediction_files(pred_root, preds)
    detections = sum(len(p) for p in preds.values())

    start = time.perf_counter()
    read = ev.read_prediction_dir(pred_root)
    t_read = time.perf_counter() - start
    start = time.perf_counter()
    result = ev.evaluate(dataset, read)
    t_eval = time.perf_counter() - start

    ref = load_reference()
    step = max(1, len(dataset) // max(ref_images, 1))
    subset = list(range(0, len(dataset), step))[:ref_images]  # spread over all events
    gt_dir = os.path.join(work, "gt_subset")
    sample.write_ground_truth(
        gt_dir,
        [dataset.ids[i] for i in subset],
        [dataset.boxes[i] for i in subset],
        {s: [dataset.keep[s][i] for i in subset] for s in layout.SETTINGS},
    )
    sub_preds = {dataset.ids[i]: read[dataset.ids[i]] for i in subset}
    sub_detections = sum(len(p) for p in sub_preds.values())
    start = time.perf_counter()
    ref.ref_evaluation(ref.nested(sub_preds), gt_dir)
    t_ref_subset = time.perf_counter() - start
    start = time.perf_counter()
    ev.evaluate(layout.read_ground_truth(gt_dir), sub_preds)
    t_vec_subset = time.perf_counter() - start
    t_ref_full = t_ref_subset * detections / float(max(sub_detections, 1))

    print(
        "evaluation, full val ground truth: %d images, %d faces, %d synthetic detections"
        % (len(dataset), dataset.face_count(), detections)
    )
    print("  read ground truth (.mat)         %7.2f s" % t_gt)
    print("  read prediction files            %7.2f s" % t_read)
    print("  vectorized evaluation            %7.2f s" % t_eval)
    print("  stage total (gt + files + eval)  %7.2f s" % (t_gt + t_read + t_eval))
    print(
        "  AP easy %.2f  medium %.2f  hard %.2f (synthetic predictions)"
        % tuple(100.0 * result["ap"][s] for s in layout.SETTINGS)
    )
    print(
        "  reference loop on %d images spread over the events (%d detections): %.2f s; "
        "vectorized on the same subset: %.3f s -> %.0fx"
        % (
            len(subset),
            sub_detections,
            t_ref_subset,
            t_vec_subset,
            t_ref_subset / max(t_vec_subset, 1e-9),
        )
    )
    print(
        "  reference loop extrapolated to the full set by detections: ~%.0f s "
        "(extrapolated, not run) -> vectorized is ~%.0fx faster"
        % (t_ref_full, t_ref_full / max(t_eval, 1e-9))
    )


def bench_prepare(work, images, size):
    root = os.path.join(work, "sample")
    events = 4
    sample.make_sample(root, events=events, per_event=max(1, images // events), seed=1)
    rates = {}
    cores = os.cpu_count() or 1
    for workers in (cores, 1):
        out = os.path.join(work, "prep_%d" % workers)
        os.makedirs(out)
        args = prepare.build_parser().parse_args(
            [
                *("--out", out, "--root", root, "--input-size", str(size)),
                *("--workers", str(workers), *input_args("retinaface")),
            ]
        )
        start = time.perf_counter()
        prepare.main(args)
        elapsed = time.perf_counter() - start
        rates[workers] = len(layout.load(root)) / elapsed
    print(
        "preprocessing (%d generated images, %dx%d): %d workers %.1f images/s, 1 worker "
        "%.1f images/s -> %.2fx"
        % (
            len(layout.load(root)),
            size,
            size,
            cores,
            rates[cores],
            rates[1],
            rates[cores] / rates[1],
        )
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-image", type=int, default=100)
    parser.add_argument("--ref-images", type=int, default=100)
    parser.add_argument("--prep-images", type=int, default=80)
    parser.add_argument("--input-size", type=int, default=1000)
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="bench_widerface_")
    if hasattr(os, "getloadavg"):
        print(
            "%d cores, load average %.2f at start (other work on the machine skews the numbers)"
            % (os.cpu_count() or 1, os.getloadavg()[0])
        )
    try:
        bench_eval(work, args.per_image, args.ref_images)
        bench_prepare(work, args.prep_images, args.input_size)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
