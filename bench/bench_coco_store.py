"""COCO val2017 data stage: store size vs the seed's float32 .bin, prepare throughput.

    python bench/bench_coco_store.py [--root DATA] [--limit N] [--workers N]

On the real fixture (../shared/fixtures/coco-val2017-mini, 79 images) by default:
1. bytes per image of the store (uint8 1344 x 1344 x 3 in images.npy) against the seed's
   float32 1 x 3 x 1344 x 1344 .bin per image (21.7 MB);
2. prepare throughput (read, detectron2 resize, write into the store) with one worker
   and with all cores, page cache warmed first, in this one run; and one worker with
   `--resize cv2` against the default method;
3. the feed cost the store moves to inference time: `Store.batch` per image (uint8 ->
   float32 NCHW, mean subtracted, padding zeroed).
Every ratio printed is measured in this run. Nothing is asserted.
"""

import argparse
import os
import shutil
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from data_scripts.coco import layout, prepare  # noqa: E402
from tests.conftest import recipe_feed  # noqa: E402
from zoostage import store  # noqa: E402

FIXTURE = os.path.join(os.path.dirname(REPO), "shared", "fixtures", "coco-val2017-mini")
SEED_BIN_BYTES = 1 * 3 * 1344 * 1344 * 4  # float32 NCHW, one image per .bin


def timed_prepare(root, out, workers, limit, resize_with="auto"):
    os.makedirs(out)
    start = time.perf_counter()
    done, _ = prepare.prepare(
        out, root, recipe_feed("retinanet"), limit=limit, workers=workers, resize_with=resize_with
    )
    return done, time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=FIXTURE, help="COCO val2017 folder (the fixture)")
    parser.add_argument("--limit", type=int, default=0, help="first N images (0 = all)")
    parser.add_argument("--workers", type=int, default=0, help="'all cores' (0 = cpu_count)")
    args = parser.parse_args()
    if not os.path.isdir(args.root):
        print("skipped: %s is absent" % args.root)
        return
    cores = args.workers or os.cpu_count() or 1
    images = layout.list_images(args.root, limit=args.limit)
    folder = os.path.join(args.root, layout.IMAGES_DIR)
    for image in images:  # warm the page cache so both runs read from memory
        with open(os.path.join(folder, image["file_name"]), "rb") as handle:
            handle.read()
    work = tempfile.mkdtemp(prefix="bench_coco_")
    try:
        n, one = timed_prepare(args.root, os.path.join(work, "one"), 1, args.limit)
        _, many = timed_prepare(args.root, os.path.join(work, "all"), cores, args.limit)
        _, cv2_one = timed_prepare(args.root, os.path.join(work, "cv2"), 1, args.limit, "cv2")
        out = os.path.join(work, "all")
        size = os.path.getsize(os.path.join(out, store.IMAGES_FILE))
        index_size = os.path.getsize(os.path.join(out, store.INDEX_FILE))
        per_image = (size + index_size) / float(n)
        data = store.Store(out)
        data.batch([0])  # first touch of the memmap
        start = time.perf_counter()
        for i in range(len(data)):
            data.batch([i])
        feed_ms = 1000.0 * (time.perf_counter() - start) / len(data)
        method = data.index["resize"]["method"]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("COCO val2017 data stage, %d images from %s (resize: %s)" % (n, args.root, method))
    print(
        "store: %.0f bytes/image (images.npy + index.json) vs seed float32 .bin %d bytes: "
        "%.3fx the size (%.2fx smaller)"
        % (per_image, SEED_BIN_BYTES, per_image / SEED_BIN_BYTES, SEED_BIN_BYTES / per_image)
    )
    print(
        "prepare: 1 worker %.1f images/s, %d workers %.1f images/s: %.2fx"
        % (n / one, cores, n / many, one / many)
    )
    print(
        "resize: 1 worker with --resize cv2 %.1f images/s: %.2fx the %s run"
        % (n / cv2_one, one / cv2_one, method)
    )
    print("feed: Store.batch %.1f ms/image (uint8 -> float32 NCHW, pad after norm)" % feed_ms)


if __name__ == "__main__":
    main()
