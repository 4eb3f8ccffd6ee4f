"""The data stage for RetinaFace: WIDER FACE val images preprocessed into a store.

As the ModelZoo RetinaFace seed prepares its fixed-size input (Pytorch_Retinaface's
test-time resize, pinned to one square size): each image is scaled by
scale = S / max(h, w) with cv2.resize(img, None, fx=scale, fy=scale, INTER_LINEAR) -- so
the output is round(w * scale) x round(h * scale) and OpenCV maps pixels with the factor
itself --, padded with zeros at the right and bottom to S x S, and fed as BGR minus
(104, 117, 123). The store keeps the uint8 pixels; the feed recipe subtracts the mean
from the padding too, so the padding reaches the network at minus the mean, as in the
seed. The mean, and that the padding is normalized too, are the model's: the recipe passes
its `input` block (--mean-bgr 104,117,123 --pad before_norm). Records: {"id":
"event/name", "file": "event/name.jpg", "orig_hw": [h, w], "scale": scale}; the infer
stage divides boxes by "scale".

One known difference: Pytorch_Retinaface's test_widerface.py converts the image to
float32 before cv2.resize, so its resized pixels are not rounded; the store resizes the
uint8 image (OpenCV's fixed-point bilinear), which differs by at most ~0.76 and on
average ~0.26 grey levels (measured on a COCO image at S = 1000 and 300).

Only the images listed in the ground truth are taken, in its order (the first --limit).

    python -m data_scripts.widerface.prepare --out OUT --root DATA --mean-bgr 104,117,123 \
        [--input-size 1000] [--limit N] [--workers N] [--skip-bad]
"""

import os

from data_scripts.store import (
    add_prepare_arguments,
    check_prepare_arguments,
    read_image,
    write_store,
)
from data_scripts.widerface import layout
from zoostage import cli
from zoostage.errors import UserError

DEFAULT_INPUT_SIZE = 1000


def resize_scale(height, width, size):
    """The seed's factor: the longer side becomes `size`."""
    return float(size) / float(max(height, width))


def resize_image(image, size):
    """(resized uint8 image, scale) as the seed resizes: fx = fy = scale, bilinear."""
    import cv2  # imported here: only the data stages need OpenCV

    height, width = image.shape[:2]
    scale = resize_scale(height, width, size)
    resized = cv2.resize(image, None, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
    # round(max side * size / max side) is `size`; the guard only keeps a rounding surprise
    # from overflowing the padded frame.
    return resized[:size, :size], scale


def prepare_image(item):
    """One store entry; item = (path, image_id, relative file, input size). Picklable."""
    path, image_id, relative, size = item
    image = read_image(path, reference="cv2")  # Pytorch_Retinaface reads with cv2.imread
    height, width = image.shape[:2]
    resized, scale = resize_image(image, size)
    meta = {"id": image_id, "file": relative, "orig_hw": [int(height), int(width)], "scale": scale}
    return resized, meta


def items_for(dataset, size, limit=0):
    """Store items for the first `limit` (0: all) ground-truth images, in gt order.

    An image the ground truth lists but the image folder lacks is a UserError.
    """
    count = len(dataset) if not limit else min(int(limit), len(dataset))
    items, missing = [], []
    for i in range(count):
        path = dataset.image_path(i)
        if not os.path.isfile(path):
            missing.append(path)
            continue
        items.append((path, dataset.ids[i], dataset.relative_file(dataset.ids[i]), int(size)))
    if missing:
        more = " (and %d more)" % (len(missing) - 1) if len(missing) > 1 else ""
        raise UserError(
            "WIDER FACE image listed in the ground truth is missing: %s%s; %s"
            % (missing[0], more, layout.GET_IMAGES)
        )
    return items


def main(args):
    feed = check_prepare_arguments(args)
    dataset = layout.load(args.root, images=True)
    size = int(args.input_size)
    items = items_for(dataset, size, args.limit)
    extra = {
        "dataset": "widerface-val",
        "input_size": size,
        "images_in_ground_truth": len(dataset),
    }
    skipped = write_store(
        args.out,
        items,
        (size, size),
        prepare_image,
        feed,
        workers=args.workers or None,
        skip_bad=args.skip_bad,
        label="preprocess widerface",
        extra=extra,
    )
    kept = len(items) - skipped
    print(
        "preprocessed %d of %d WIDER FACE val images to %dx%d in %s%s"
        % (
            kept,
            len(dataset),
            size,
            size,
            args.out,
            ", skipped %d unreadable" % skipped if skipped else "",
        )
    )


def build_parser():
    parser = cli.parser("WIDER FACE val preprocessing for RetinaFace (resize, pad, BGR - mean)")
    return add_prepare_arguments(
        parser, "WIDER FACE val root (images + .mat)", input_size=DEFAULT_INPUT_SIZE
    )


if __name__ == "__main__":
    cli.run(main, build_parser())
