"""A small generated dataset in the COCO val2017 layout, for tests and dry runs.

    python -m data_scripts.coco.sample --out ROOT [--images 6] [--seed 0]

writes ROOT/val2017/<id:012d>.jpg and ROOT/annotations/instances_val2017.json with the
real file's structure: `info`, `licenses`, `images` (id, file_name, height, width, ...),
`annotations` (bbox x, y, w, h, area, iscrowd, segmentation: polygons, or an
uncompressed RLE for the crowd one) and `categories` (the 80 COCO ids and names).
Each image holds a few filled rectangles and ellipses of random categories on a noisy
gradient. The last image is a one-channel (grayscale) JPEG, and the first has one crowd
annotation. Everything follows from the seed.
"""

import json
import os

import numpy as np

from data_scripts import sample_cli
from data_scripts.coco import layout
from zoostage.errors import UserError

# Image sizes (h, w) of real val2017 images; 360 x 640 is wide enough that the
# 1333-pixel cap of the detectron2 resize applies.
_SIZES = ((480, 640), (427, 640), (640, 480), (500, 375), (360, 640), (640, 427))


def _rle(mask):
    """Uncompressed COCO RLE of a boolean mask (column-major runs, zeros first)."""
    height, width = mask.shape
    flat = np.asarray(mask, dtype=np.uint8).flatten(order="F")
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = [int(v) for v in np.diff(bounds)]
    if flat[0] == 1:
        counts.insert(0, 0)
    return {"counts": counts, "size": [int(height), int(width)]}


def _background(rng, height, width):
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = rng.uniform(40, 200, size=3).astype(np.float32)
    slope = rng.uniform(-0.15, 0.15, size=(2, 3)).astype(np.float32)
    image = base + yy[..., None] * slope[0] + xx[..., None] * slope[1]
    image += rng.normal(0, 6, size=image.shape).astype(np.float32)
    return np.clip(image, 0, 255).astype(np.uint8)


def _object(rng, height, width):
    """A random box (x, y, w, h), even sizes so an ellipse fills it exactly."""
    w = 2 * rng.randint(max(6, width // 20), width // 4)
    h = 2 * rng.randint(max(6, height // 20), height // 4)
    x = rng.randint(0, width - w)
    y = rng.randint(0, height - h)
    return int(x), int(y), int(w), int(h)


def _draw(cv2, rng, image, box, shape):
    """Draw one filled shape; return its COCO polygon and area."""
    x, y, w, h = box
    color = tuple(int(c) for c in rng.randint(0, 256, size=3))
    if shape == "rectangle":
        cv2.rectangle(image, (x, y), (x + w - 1, y + h - 1), color, thickness=-1)
        polygon = [x, y, x + w, y, x + w, y + h, x, y + h]
        return [float(v) for v in polygon], float(w * h)
    center, axes = (x + w // 2, y + h // 2), (w // 2, h // 2)
    cv2.ellipse(image, center, axes, 0, 0, 360, color, thickness=-1)
    points = cv2.ellipse2Poly(center, axes, 0, 0, 360, 10)
    return [float(v) for v in points.reshape(-1)], float(np.pi * axes[0] * axes[1])


def _crowd(cv2, rng, pixels, image_id, annotation_id):
    """A crowd: a region of small blobs drawn into `pixels`, annotated as one coarse mask."""
    height, width = pixels.shape[:2]
    x, y, w, h = _object(rng, height, width)
    mask = np.zeros((height, width), dtype=bool)
    mask[y : y + h, x : x + w] = True
    for _ in range(12):
        cx, cy = x + rng.randint(0, w), y + rng.randint(0, h)
        cv2.circle(pixels, (int(cx), int(cy)), 4, (30, 30, 200), thickness=-1)
    return {
        "id": annotation_id,
        "image_id": image_id,
        "category_id": 1,
        "bbox": [float(x), float(y), float(w), float(h)],
        "area": float(mask.sum()),
        "iscrowd": 1,
        "segmentation": _rle(mask),
    }


def make_sample(root, images=6, seed=0):
    """Write a generated COCO-layout dataset under `root`; return the annotation dict."""
    import cv2  # imported here: only generating images needs OpenCV

    images = int(images)
    if images < 1:
        raise UserError("a sample needs at least one image, not %d" % images)
    rng = np.random.RandomState(seed)
    image_dir = os.path.join(root, layout.IMAGES_DIR)
    ann_path = os.path.join(root, layout.ANNOTATION_FILE)
    for folder in (image_dir, os.path.dirname(ann_path)):
        if not os.path.isdir(folder):
            os.makedirs(folder)
    ids = sorted(int(v) for v in rng.choice(np.arange(1, 600000), size=images, replace=False))
    entries, annotations = [], []
    for index, image_id in enumerate(ids):
        height, width = _SIZES[index % len(_SIZES)]
        name = "%012d.jpg" % image_id
        pixels = _background(rng, height, width)
        for _ in range(rng.randint(1, 5)):
            box = _object(rng, height, width)
            category = layout.COCO_CATEGORIES[rng.randint(len(layout.COCO_CATEGORIES))][0]
            shape = "rectangle" if rng.rand() < 0.5 else "ellipse"
            polygon, area = _draw(cv2, rng, pixels, box, shape)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": int(category),
                    "bbox": [float(v) for v in box],
                    "area": area,
                    "iscrowd": 0,
                    "segmentation": [polygon],
                }
            )
        if index == 0:
            annotations.append(_crowd(cv2, rng, pixels, image_id, len(annotations) + 1))
        if index == images - 1 and images > 1:
            pixels = cv2.cvtColor(pixels, cv2.COLOR_BGR2GRAY)  # written as 1-channel JPEG
        if not cv2.imwrite(os.path.join(image_dir, name), pixels, [cv2.IMWRITE_JPEG_QUALITY, 90]):
            raise UserError("cannot write %s" % os.path.join(image_dir, name))
        entries.append(
            {
                "license": 1,
                "file_name": name,
                "coco_url": "",
                "height": height,
                "width": width,
                "date_captured": "2013-11-14 17:02:52",
                "flickr_url": "",
                "id": image_id,
            }
        )
    data = {
        "info": {
            "description": "zoobox generated COCO val2017 sample (seed %d)" % seed,
            "version": "1.0",
            "year": 2017,
        },
        "licenses": [{"id": 1, "name": "generated", "url": ""}],
        "images": entries,
        "annotations": annotations,
        "categories": [
            {"supercategory": sup, "id": cid, "name": name}
            for cid, name, sup in layout.COCO_CATEGORIES
        ],
    }
    with open(ann_path + ".tmp", "w") as handle:
        json.dump(data, handle)
    os.replace(ann_path + ".tmp", ann_path)
    return data


def main(argv=None):
    sample_cli.main(
        make_sample,
        "Generate a small COCO val2017-layout sample.",
        [("--images", 6, "number of images")],
        argv,
    )


if __name__ == "__main__":
    main()
