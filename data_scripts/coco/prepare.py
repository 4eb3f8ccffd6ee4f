"""COCO val2017 -> the RetinaNet input store, as the profile's reference preprocesses it.

    python -m data_scripts.coco.prepare --out OUT --root DATA \
        --mean-bgr 103.53,116.28,123.675 --pad after_norm [--input-size 1344]
        [--profile seed|upstream] [--limit N] [--workers N] [--skip-bad]
        [--resize auto|pil|cv2]

Both profiles (INPUT.FORMAT BGR, shorter side 800, longer at most 1333, PIXEL_MEAN
103.53 116.28 123.675, PIXEL_STD 1):

1. read the image as BGR (a grayscale JPEG becomes three equal channels);
2. the resized size (`resized_hw`):
   - seed (ACL_PyTorch/contrib/cv/detection/Retinanet/Retinanet_preprocess.py, resize()):
     the short side to 800, the long side to int(np.floor(800 / short * long)); if the
     long side then passes 1333 both are scaled by 1333 / long; each rounded with
     int(x + 0.5) (`seed_resized_hw`; 640 x 480 -> 1066 x 800);
   - upstream (detectron2 ResizeShortestEdge.get_transform): the same without the floor
     (`resized_hw`; 640 x 480 -> 1067 x 800);
3. the resize itself, on the uint8 image:
   - seed: `cv2.resize(img, (new_w, new_h), interpolation=cv2.INTER_LINEAR)`
     (Retinanet_preprocess.py resize(); gen_input_bin reads with cv2.imread, uint8);
   - upstream: detectron2's ResizeTransform, Pillow's bilinear;
4. subtract the mean (std 1), then pad right / bottom with zeros to the fixed input size
   (the seed: cv2.subtract, then cv2.copyMakeBorder(..., value=0) on the float image;
   detectron2 pads the normalized tensor: padding is 0 after normalization either way).

Steps 1-3 are stored as uint8 pixels (`zoostage.store`): the seed converts to float32
only after the resize, so its float values are these uint8 ones exactly; step 4 is the
store's feed recipe (mean, std, pad after normalization), applied when batches are read;
those are the model's facts, passed by the recipe from its `input` block.

Resize method (`--resize`): `auto` (the default) is the profile's own (cv2 for seed; pil
for upstream when Pillow is importable, else cv2 with a note); `pil` or `cv2` force one.
On COCO (every image is upscaled) cv2 differs from Pillow by one grey level on about 19%
of the values, never more (measured on the 79-image fixture, opencv 4.x vs Pillow 10-11);
for downscaling the two differ more. The rule and method used are recorded in index.json.

Records (index.json, in image id order, `--limit N` keeps the first N):
    {"id": image id, "file": "val2017/<name>.jpg", "orig_hw": [h, w],
     "resized_hw": [newh, neww], "valid_hw": [newh, neww]}
A box predicted on the input maps back to the original image by the profile's rule
(models/retinanet/infer.py).
"""

import os
import sys

import numpy as np

from data_scripts.coco import layout
from zoostage import cli, store
from zoostage.errors import UserError

MIN_SIZE = 800
MAX_SIZE = 1333
INPUT_SIZE = 1344
# The largest FPN stride: detectron2 pads every input to a multiple of it.
SIZE_DIVISIBILITY = 32
RESIZE_METHODS = ("auto", "pil", "cv2")
PROFILES = ("seed", "upstream")


def resized_hw(height, width, min_size=MIN_SIZE, max_size=MAX_SIZE):
    """(newh, neww) of detectron2's ResizeShortestEdge(min_size, max_size) at test time."""
    size = min_size * 1.0
    scale = size / min(height, width)
    if height < width:
        newh, neww = size, scale * width
    else:
        newh, neww = scale * height, size
    if max(newh, neww) > max_size:
        scale = max_size * 1.0 / max(newh, neww)
        newh = newh * scale
        neww = neww * scale
    return int(newh + 0.5), int(neww + 0.5)


def seed_resized_hw(height, width, min_size=MIN_SIZE, max_size=MAX_SIZE):
    """(newh, neww) of the seed's Retinanet_preprocess.py resize(): the long side floored.

    The seed computes in float64 (np.floor of a Python float), then scales both sides
    when the long one passes max_size, and rounds each with int(x + 0.5).
    """
    import math

    scale = min_size * 1.0 / min(height, width)
    if height < width:
        newh, neww = float(min_size), float(math.floor(scale * width))
    else:
        newh, neww = float(math.floor(scale * height)), float(min_size)
    if max(newh, neww) > max_size:
        scale = max_size * 1.0 / max(newh, neww)
        newh = newh * scale
        neww = neww * scale
    return int(newh + 0.5), int(neww + 0.5)


def size_rule(profile):
    """The resized-size function of a profile."""
    if profile not in PROFILES:
        raise UserError("--profile must be seed or upstream, not %r" % (profile,))
    return seed_resized_hw if profile == "seed" else resized_hw


def _have_pil():
    try:
        import PIL.Image  # noqa: F401
    except ImportError:
        return False
    return True


def resize_method(requested, profile="upstream"):
    """The resize method to use for `requested` (auto / pil / cv2) under `profile`."""
    if requested not in RESIZE_METHODS:
        raise UserError(
            "--resize must be one of %s, not %r" % ("/".join(RESIZE_METHODS), requested)
        )
    if requested == "cv2" or (requested == "auto" and profile == "seed"):
        return "cv2"
    if _have_pil():
        return "pil"
    if requested == "pil":
        raise UserError(
            "--resize pil needs Pillow, which is not installed here: pip install pillow, "
            "or pass --resize cv2 (within one grey level of it on COCO)"
        )
    sys.stderr.write(
        "note: Pillow is not installed: resizing with cv2 INTER_LINEAR, within one grey level "
        "of detectron2's Pillow bilinear (install pillow for the exact method)\n"
    )
    return "cv2"


def resize(image, hw, method):
    """Resize a uint8 HxWx3 image to `hw` = (newh, neww) with `method` (pil or cv2)."""
    newh, neww = int(hw[0]), int(hw[1])
    if method == "pil":
        from PIL import Image

        bilinear = getattr(Image, "Resampling", Image).BILINEAR
        return np.asarray(Image.fromarray(image).resize((neww, newh), bilinear))
    import cv2

    return cv2.resize(image, (neww, newh), interpolation=cv2.INTER_LINEAR)


def prepare_image(item):
    """Read, check and resize one image: (uint8 pixels, record). Runs in the workers."""
    path, rel, image_id, expected_hw, min_size, max_size, method, profile = item
    # The seed's Retinanet_preprocess.py reads with cv2.imread, detectron2 with PIL.
    image = store.read_image(path, reference="cv2" if profile == "seed" else "pil")
    height, width = image.shape[:2]
    if [height, width] != list(expected_hw):
        raise UserError(
            "image %s is %dx%d (h x w) but %s says %dx%d: a replaced or rotated file; "
            "restore the original val2017 image"
            % (path, height, width, layout.ANNOTATION_FILE, expected_hw[0], expected_hw[1])
        )
    newh, neww = size_rule(profile)(height, width, min_size, max_size)
    pixels = resize(image, (newh, neww), method)
    record = {
        "id": image_id,
        "file": rel,
        "orig_hw": [int(height), int(width)],
        "resized_hw": [int(newh), int(neww)],
    }
    return pixels, record


def prepare(
    out,
    root,
    feed,
    input_size=INPUT_SIZE,
    limit=0,
    workers=0,
    skip_bad=False,
    resize_with="auto",
    min_size=MIN_SIZE,
    max_size=MAX_SIZE,
    profile="seed",
):
    """Preprocess COCO val2017 at `root` into a store at `out`; return (images, skipped).

    `feed` is the model's input recipe (zoostage.store.feed_spec); `profile` picks the
    size rule and the default resize method (module docstring).
    """
    size_rule(profile)  # a UserError for an unknown profile, before any work
    if min_size < 1 or max_size < min_size:
        raise UserError("need 1 <= --min-size <= --max-size, not %d, %d" % (min_size, max_size))
    if input_size < max_size:
        raise UserError(
            "--input-size %d is smaller than --max-size %d: resized images would not fit"
            % (input_size, max_size)
        )
    if input_size % SIZE_DIVISIBILITY:
        raise UserError(
            "--input-size %d is not a multiple of %d (RetinaNet's largest stride; detectron2 "
            "pads inputs to it): use e.g. %d"
            % (
                input_size,
                SIZE_DIVISIBILITY,
                -(-input_size // SIZE_DIVISIBILITY) * SIZE_DIVISIBILITY,
            )
        )
    method = resize_method(resize_with, profile)
    images = layout.list_images(root, limit=limit)
    folder = os.path.join(root, layout.IMAGES_DIR)
    items = [
        (
            layout.image_file(folder, image["file_name"]),
            layout.IMAGES_DIR + "/" + image["file_name"],
            image["id"],
            [image["height"], image["width"]],
            int(min_size),
            int(max_size),
            method,
            profile,
        )
        for image in images
    ]
    extra = {
        "dataset": "coco-val2017",
        "profile": profile,
        "resize": {
            "rule": (
                "seed Retinanet_preprocess.py (long side floored)"
                if profile == "seed"
                else "detectron2 ResizeShortestEdge"
            ),
            "min_size": int(min_size),
            "max_size": int(max_size),
            "method": method,
        },
        # label k of the model's 80 outputs is COCO category category_ids[k]
        "category_ids": list(layout.CATEGORY_IDS),
    }
    skipped = store.write_store(
        out,
        items,
        (input_size, input_size),
        prepare_image,
        feed,
        workers=workers or None,
        skip_bad=skip_bad,
        label="coco val2017",
        extra=extra,
    )
    return len(items) - skipped, skipped


def main(args):
    feed = store.check_prepare_arguments(args)
    done, skipped = cli.call(prepare, args, feed=feed, resize_with=args.resize)
    print(
        "prepared %d COCO val2017 images%s into %s"
        % (done, " (%d skipped)" % skipped if skipped else "", args.out)
    )


def build_parser():
    parser = cli.parser(__doc__.splitlines()[0])
    store.add_prepare_arguments(
        parser, "COCO folder: val2017/, annotations/", input_size=INPUT_SIZE
    )
    parser.add_argument(
        "--resize",
        default="auto",
        choices=RESIZE_METHODS,
        help="auto: the profile's (seed: cv2; upstream: pil if installed); pil: detectron2's "
        "exact method; cv2: the seed's",
    )
    parser.add_argument(
        "--profile",
        choices=PROFILES,
        default="seed",
        help="seed: the ModelZoo script's resize; upstream: detectron2's",
    )
    parser.add_argument("--min-size", type=int, default=MIN_SIZE, help="short side (800)")
    parser.add_argument("--max-size", type=int, default=MAX_SIZE, help="long side cap (1333)")
    return parser


if __name__ == "__main__":
    cli.run(main, build_parser())
