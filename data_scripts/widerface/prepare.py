"""The data stage for RetinaFace: WIDER FACE val images preprocessed into a store.

Profile `seed` (the default) follows the ModelZoo Torch_AIE seed's
AscendIE/TorchAIE/built-in/cv/face/retinaface/data_preprocess.py step by step:

1. line 42: `cv2.imread(path, IMREAD_COLOR).astype(np.float32)` -- here the uint8 BGR
   image (`store.read_image`, which also refuses truncated or corrupt files);
2. lines 44-47: resize = 1000 / max(h, w) (float64; S = --input-size, 1000 by default);
   line 48 keeps it as float32 for the postprocess (here: the record's "scale", cast to
   float32 by `postprocess.detect`);
3. lines 55-57: `cv2.resize(img, None, None, fx=resize, fy=resize, INTER_NEAREST)`.
   Nearest-neighbour copies source pixels, so resizing the uint8 image and converting
   gives exactly the seed's float32 values (tests/test_widerface.py shows it), and the
   store can keep uint8;
4. lines 58-66: zero padding at the right and bottom to S x S;
5. line 68: ToTensor (HWC -> CHW, no scaling for a float32 array) and
   Normalize((104, 117, 123), (1, 1, 1)): BGR minus the mean, the padding included.
   That is the store's feed (--mean-bgr 104,117,123 --pad before_norm, from the recipe's
   `input` block), applied per batch.

Profile `upstream` resizes with INTER_LINEAR (Pytorch_Retinaface's test_widerface.py,
which converts to float32 first; the store resizes the uint8 image, OpenCV's
fixed-point bilinear: at most ~0.76, on average ~0.26 grey levels away, measured on a
COCO image at S = 1000 and 300). Its script evaluates at the original size
(`--origin_size True`); a fixed-shape export cannot, so both profiles feed S x S.

Records: {"id": "event/name", "file": "event/name.jpg", "orig_hw": [h, w], "scale":
resize}. Which images: `data_scripts.widerface.select` (--subset, --image-list, --limit
spread over events); the store's index records the choice.

    python -m data_scripts.widerface.prepare --out OUT --root DATA --mean-bgr 104,117,123 \
        [--input-size 1000] [--profile seed|upstream] [--subset all|present] \
        [--image-list FILE] [--limit N] [--workers N] [--skip-bad]
"""

from data_scripts.widerface import layout
from data_scripts.widerface.select import SUBSETS, select
from zoostage import cli
from zoostage.store import (
    add_prepare_arguments,
    check_prepare_arguments,
    read_image,
    write_store_for,
)

DEFAULT_INPUT_SIZE = 1000


INTERPOLATION = {"seed": "INTER_NEAREST", "upstream": "INTER_LINEAR"}


def resize_scale(height, width, size):
    """The seed's factor: the longer side becomes `size`."""
    return float(size) / float(max(height, width))


def resize_image(image, size, profile="seed"):
    """(resized uint8 image, scale): fx = fy = scale, the profile's interpolation."""
    import cv2  # imported here: only the data stages need OpenCV

    height, width = image.shape[:2]
    scale = resize_scale(height, width, size)
    interpolation = getattr(cv2, INTERPOLATION[profile])
    resized = cv2.resize(image, None, None, fx=scale, fy=scale, interpolation=interpolation)
    # round(max side * size / max side) is `size`; the guard only keeps a rounding surprise
    # from overflowing the padded frame.
    return resized[:size, :size], scale


def prepare_image(item):
    """One store entry; item = (path, image_id, relative file, size, profile). Picklable."""
    path, image_id, relative, size, profile = item
    image = read_image(path, reference="cv2")  # both the seed and Pytorch_Retinaface: cv2.imread
    height, width = image.shape[:2]
    resized, scale = resize_image(image, size, profile)
    meta = {"id": image_id, "file": relative, "orig_hw": [int(height), int(width)], "scale": scale}
    return resized, meta


def items_for(dataset, size, positions, profile="seed"):
    """Store items for the ground-truth `positions` (data_scripts.widerface.select)."""
    return [
        (
            dataset.image_path(i),
            dataset.ids[i],
            dataset.relative_file(dataset.ids[i]),
            int(size),
            profile,
        )
        for i in positions
    ]


def main(args):
    feed = check_prepare_arguments(args)
    dataset = layout.load(args.root, images=True)
    size = int(args.input_size)
    positions, chosen = select(dataset, args.subset, args.image_list, args.limit)
    items = items_for(dataset, size, positions, args.profile)
    extra = {
        "dataset": "widerface-val",
        "input_size": size,
        "profile": args.profile,
        "interpolation": INTERPOLATION[args.profile],
        "images_in_ground_truth": len(dataset),
        "selection": chosen,
    }
    skipped = write_store_for(
        args,
        items,
        prepare_image,
        feed,
        label="preprocess widerface",
        extra=extra,
    )
    kept = len(items) - skipped
    print(
        "preprocessed %d of %d WIDER FACE val images to %dx%d (%s) in %s%s%s"
        % (
            kept,
            len(dataset),
            size,
            size,
            INTERPOLATION[args.profile],
            args.out,
            ", skipped %d unreadable" % skipped if skipped else "",
            ", %d not in the image folder" % chosen["missing"] if chosen["missing"] else "",
        )
    )


def build_parser():
    parser = cli.parser("WIDER FACE val preprocessing for RetinaFace (resize, pad, BGR - mean)")
    add_prepare_arguments(
        parser,
        "WIDER FACE val root (images + .mat)",
        input_size=DEFAULT_INPUT_SIZE,
        limit_help="N images spread evenly over the chosen ones, so over the events (0: all)",
    )
    parser.add_argument(
        "--profile",
        default="seed",
        choices=sorted(INTERPOLATION),
        help="seed: data_preprocess.py (INTER_NEAREST); upstream: INTER_LINEAR",
    )
    parser.add_argument(
        "--subset",
        default="all",
        choices=SUBSETS,
        help="all: every ground-truth image must be there; present: those that are",
    )
    parser.add_argument("--image-list", help="only these images: event/name per line")
    return parser


if __name__ == "__main__":
    cli.run(main, build_parser())
