"""The VOC2007 test data stage: RefineDet.PyTorch's test-time preprocessing into a store.

    python -m data_scripts.voc.prepare --out OUT --root DATA --mean-bgr 104,117,123 \
        --channels rgb [--input-size 320] [--limit N] [--workers N] [--skip-bad]

The reference (RefineDet.PyTorch data/__init__.py BaseTransform, as the ModelZoo
RefineDet_preprocess.py runs it through VOCDetection.pull_item) does, per image:

    x = cv2.resize(bgr_image, (320, 320)).astype(np.float32)   # INTER_LINEAR (default)
    x -= (104, 117, 123)                                       # in BGR channel order
    x = x[:, :, (2, 1, 0)]                                     # then to RGB, then CHW

cv2.resize of a uint8 image gives uint8 pixels, so the store keeps them exactly and the
feed recipe (mean_bgr=(104, 117, 123), channels="rgb") repeats the last two steps at
feed time: the network sees the same float32 tensor. No padding: the resize fills the
whole input. The mean and the RGB order are the model's: the recipe passes its `input`
block. Records: {"id": "000001", "file": "JPEGImages/000001.jpg", "orig_hw": [h, w]}
(the original size scales the normalized boxes back to pixels).
"""

import json
import os
import sys

from data_scripts.voc.layout import VOC_CLASSES, VOCLayout
from zoostage import cli
from zoostage.store import (
    INDEX_FILE,
    add_prepare_arguments,
    check_prepare_arguments,
    read_image,
    write_store_for,
)


def prepare_image(item):
    """(path, image id, file relative to VOC2007, input size) -> (uint8 BGR pixels, record)."""
    import cv2  # only the data stage needs OpenCV

    path, image_id, file_rel, size = item
    image = read_image(path, reference="cv2")  # RefineDet.PyTorch reads with cv2.imread
    height, width = image.shape[:2]
    pixels = cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR)
    return pixels, {"id": image_id, "file": file_rel, "orig_hw": [int(height), int(width)]}


def build_parser():
    parser = cli.parser("Preprocess VOC2007 test for RefineDet (resize, mean, RGB) into a store.")
    return add_prepare_arguments(parser, "VOCdevkit folder (or VOC2007 itself)", input_size=320)


def main(args):
    feed = check_prepare_arguments(args)
    layout = VOCLayout(args.root)
    ids = layout.ids[: args.limit] if args.limit and args.limit > 0 else layout.ids
    if not args.skip_bad:
        layout.check_images(ids)
    # Parse the annotations now: a broken one fails here, not after the inference.
    layout.annotations(ids)
    size = args.input_size
    items = [(layout.image_path(i), i, layout.image_file(i), size) for i in ids]
    skipped = write_store_for(
        args,
        items,
        prepare_image,
        feed,
        label="VOC2007 %s" % layout.image_set,
        extra={
            "dataset": "voc2007",
            "image_set": layout.image_set,
            "voc_dir": layout.voc_dir,
            "classes": list(VOC_CLASSES),
        },
    )
    line = "prepared %d of %d VOC2007 %s images (%dx%d) into %s" % (
        len(ids) - skipped,
        len(layout.ids),
        layout.image_set,
        size,
        size,
        args.out,
    )
    if skipped:
        line += "; skipped %d unreadable image%s:" % (skipped, "" if skipped == 1 else "s")
        with open(os.path.join(args.out, INDEX_FILE)) as handle:
            reasons = json.load(handle)["skipped"]
        line += "".join("\n  " + reason for reason in reasons)
    sys.stdout.write(line + "\n")


if __name__ == "__main__":
    cli.run(main, build_parser())
