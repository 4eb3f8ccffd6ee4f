"""VOC07 evaluation time: data_scripts.voc.evaluate vs the straightforward per-class loop.

    python bench/bench_voc_eval.py [--images 4952] [--per-image 100] [--seed 0]

A synthetic VOC2007-test-sized set: 4952 images, about 2.4 objects each (VOC2007 test
has 12032 in 4952 images; some difficult), about 100 detections each (hits, duplicates
and near misses on the objects, and low-scored boxes anywhere), as lists, which is
what the evaluate stage reads from detections.json. Both sides get the same inputs and
must return the same per-class APs; the ratio printed is the one measured in this run.

The loop side is the reference port kept in tests/test_voc.py (RefineDet.PyTorch's
write_voc_results_file + voc_eval + voc_ap), imported from there. Its time is also given
without the results-file text step.
"""

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from data_scripts.voc.layout import VOC_CLASSES
from data_scripts.voc.voc07 import voc07_eval

# The loop reference: the port of RefineDet.PyTorch's write_voc_results_file + voc_eval
# + voc_ap that the tests check the package against.
from tests.test_voc import reference_results_lines, reference_voc_eval

# Roughly VOC2007 test's class frequencies (person dominates).
CLASS_WEIGHTS = np.array(
    [311, 389, 576, 393, 657, 254, 1541, 370, 1374, 329,
     299, 530, 395, 369, 5227, 592, 311, 396, 302, 361], dtype=np.float64
)  # fmt: skip


def synthetic_set(n_images, per_image, seed):
    rng = np.random.RandomState(seed)
    p = CLASS_WEIGHTS / CLASS_WEIGHTS.sum()
    annotations, detections = {}, {}
    for i in range(n_images):
        image_id = "%06d" % (i + 1)
        width, height = rng.randint(300, 501), rng.randint(250, 501)
        n_obj = 1 + rng.poisson(1.4)
        cls = rng.choice(20, size=n_obj, p=p)
        wh = rng.uniform(0.1, 0.9, (n_obj, 2)) * [width, height]
        xy = rng.uniform(0, 1, (n_obj, 2)) * ([width, height] - wh)
        boxes = np.round(np.concatenate([xy, xy + wh], axis=1)).astype(int) + 1  # XML corners
        difficult = rng.rand(n_obj) < 0.1
        annotations[image_id] = [
            {
                "name": VOC_CLASSES[c],
                "difficult": int(d),
                "truncated": 0,
                "bbox": [int(v) - 1 for v in b],
            }
            for c, d, b in zip(cls, difficult, boxes)
        ]
        # Detections: 1-4 near each object (its class mostly), the rest anywhere, low.
        rows, names = [], []
        for c, b in zip(cls, boxes):
            k = rng.randint(1, 5)
            w, h = b[2] - b[0], b[3] - b[1]
            jitter = rng.normal(0, 0.08, (k, 4)) * [w, h, w, h]
            rows.append(np.concatenate([b - 2 + jitter, rng.uniform(0.3, 1, (k, 1))], axis=1))
            names.extend(c if rng.rand() < 0.85 else rng.randint(20) for _ in range(k))
        n_rest = max(0, per_image + rng.randint(-10, 11) - len(names))
        xy = rng.uniform(0, 1, (n_rest, 2)) * [width, height]
        wh = rng.uniform(5, 200, (n_rest, 2))
        rows.append(np.concatenate([xy, xy + wh, rng.uniform(0.01, 0.4, (n_rest, 1))], axis=1))
        names.extend(rng.choice(20, size=n_rest, p=p))
        rows = np.concatenate(rows)
        names = np.asarray(names)
        per_class = {}
        for c in np.unique(names):
            chosen = rows[names == c]
            chosen = chosen[np.argsort(-chosen[:, 4], kind="stable")]  # as an NMS emits them
            per_class[VOC_CLASSES[c]] = chosen.astype(np.float32).tolist()
        detections[image_id] = per_class
    return annotations, detections


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=4952)
    parser.add_argument("--per-image", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    annotations, detections = synthetic_set(args.images, args.per_image, args.seed)
    image_ids = sorted(annotations)
    n_det = sum(len(r) for d in detections.values() for r in d.values())
    n_obj = sum(len(o) for o in annotations.values())
    print("%d images, %d objects, %d detections" % (len(image_ids), n_obj, n_det))

    start = time.perf_counter()
    mine = voc07_eval(annotations, detections, image_ids)
    t_package = time.perf_counter() - start

    start = time.perf_counter()
    lines = dict((c, reference_results_lines(detections, image_ids, c)) for c in VOC_CLASSES)
    t_text = time.perf_counter() - start
    start = time.perf_counter()
    ref = dict((c, reference_voc_eval(lines[c], annotations, image_ids, c)[2]) for c in VOC_CLASSES)
    t_loop = time.perf_counter() - start

    same = all(mine[c]["ap"] == ref[c] for c in VOC_CLASSES)
    m_ap = np.mean([mine[c]["ap"] for c in VOC_CLASSES]) * 100
    print("mAP %.2f; per-class APs identical to the loop reference: %s" % (m_ap, same))
    print("package (vectorized):         %8.3f s" % t_package)
    print(
        "loop reference:               %8.3f s  (results-file text %.3f s + loop %.3f s)"
        % (t_text + t_loop, t_text, t_loop)
    )
    print("ratio loop / package:         %8.1fx" % ((t_text + t_loop) / t_package))
    print("ratio loop without text step: %8.1fx" % (t_loop / t_package))
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
