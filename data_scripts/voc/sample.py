"""A small generated dataset in the VOC2007 test layout, for tests and dry runs.

    python -m data_scripts.voc.sample --out ROOT [--images 6] [--seed 0]

writes ROOT/VOCdevkit/VOC2007/{JPEGImages,Annotations,ImageSets/Main/test.txt}: images
with drawn objects (filled rectangles and ellipses on a noisy background) and their
annotation XML in the real VOC format (1-based inclusive corners, pose, truncated,
difficult). The first image always holds a difficult object. Same seed, same files.
"""

import os

import numpy as np

from data_scripts import sample_cli
from data_scripts.voc.layout import VOC_CLASSES

POSES = ("Unspecified", "Frontal", "Left", "Right", "Rear")


def _annotation_xml(image_id, width, height, objects):
    lines = [
        "<annotation>",
        "\t<folder>VOC2007</folder>",
        "\t<filename>%s.jpg</filename>" % image_id,
        "\t<source>",
        "\t\t<database>The VOC2007 Database</database>",
        "\t\t<annotation>PASCAL VOC2007</annotation>",
        "\t\t<image>zoobox sample</image>",
        "\t</source>",
        "\t<size>",
        "\t\t<width>%d</width>" % width,
        "\t\t<height>%d</height>" % height,
        "\t\t<depth>3</depth>",
        "\t</size>",
        "\t<segmented>0</segmented>",
    ]
    for obj in objects:
        xmin, ymin, xmax, ymax = obj["bndbox"]
        lines += [
            "\t<object>",
            "\t\t<name>%s</name>" % obj["name"],
            "\t\t<pose>%s</pose>" % obj["pose"],
            "\t\t<truncated>%d</truncated>" % obj["truncated"],
            "\t\t<difficult>%d</difficult>" % obj["difficult"],
            "\t\t<bndbox>",
            "\t\t\t<xmin>%d</xmin>" % xmin,
            "\t\t\t<ymin>%d</ymin>" % ymin,
            "\t\t\t<xmax>%d</xmax>" % xmax,
            "\t\t\t<ymax>%d</ymax>" % ymax,
            "\t\t</bndbox>",
            "\t</object>",
        ]
    lines.append("</annotation>")
    return "\n".join(lines) + "\n"


def _random_objects(rng, width, height, count, with_difficult):
    objects = []
    for k in range(count):
        w = int(rng.randint(max(8, width // 8), max(9, width // 2)))
        h = int(rng.randint(max(8, height // 8), max(9, height // 2)))
        x0 = int(rng.randint(0, width - w + 1))  # 0-based left pixel
        y0 = int(rng.randint(0, height - h + 1))
        truncated = int(x0 == 0 or y0 == 0 or x0 + w == width or y0 + h == height)
        objects.append(
            {
                "name": VOC_CLASSES[int(rng.randint(len(VOC_CLASSES)))],
                "pose": POSES[int(rng.randint(len(POSES)))],
                "truncated": truncated,
                "difficult": int(with_difficult and k == count - 1),
                # VOC corners are 1-based and inclusive.
                "bndbox": (x0 + 1, y0 + 1, x0 + w, y0 + h),
                "shape": "ellipse" if rng.rand() < 0.5 else "rectangle",
                "color": tuple(int(c) for c in rng.randint(0, 256, size=3)),
            }
        )
    return objects


def _draw(rng, width, height, objects):
    import cv2  # only sample generation draws

    base = rng.randint(40, 216, size=3)
    noise = rng.randint(-24, 25, size=(height, width, 3))
    image = np.clip(base[None, None, :] + noise, 0, 255).astype(np.uint8)
    for obj in objects:
        xmin, ymin, xmax, ymax = obj["bndbox"]
        x0, y0, x1, y1 = xmin - 1, ymin - 1, xmax - 1, ymax - 1
        if obj["shape"] == "rectangle":
            cv2.rectangle(image, (x0, y0), (x1, y1), obj["color"], -1)
        else:
            center = ((x0 + x1) // 2, (y0 + y1) // 2)
            axes = (max(1, (x1 - x0) // 2), max(1, (y1 - y0) // 2))
            cv2.ellipse(image, center, axes, 0, 0, 360, obj["color"], -1)
    return image


def make_sample(root, images=6, seed=0):
    """Write a VOC2007-layout sample under `root`; returns its VOCdevkit folder.

    Image ids are 000001, 000002, ...; each image has 1 to 4 objects of random VOC
    classes, and image 000001 has a difficult one (its last object).
    """
    import cv2

    rng = np.random.RandomState(seed)
    devkit = os.path.join(root, "VOCdevkit")
    voc_dir = os.path.join(devkit, "VOC2007")
    for sub in ("JPEGImages", "Annotations", os.path.join("ImageSets", "Main")):
        path = os.path.join(voc_dir, sub)
        if not os.path.isdir(path):
            os.makedirs(path)
    ids = []
    for i in range(images):
        image_id = "%06d" % (i + 1)
        width = int(rng.randint(160, 321))
        height = int(rng.randint(120, 241))
        count = int(rng.randint(1, 5))
        objects = _random_objects(rng, width, height, max(count, 2) if i == 0 else count, i == 0)
        pixels = _draw(rng, width, height, objects)
        if not cv2.imwrite(os.path.join(voc_dir, "JPEGImages", image_id + ".jpg"), pixels):
            raise IOError("cannot write %s.jpg under %s" % (image_id, voc_dir))
        with open(os.path.join(voc_dir, "Annotations", image_id + ".xml"), "w") as handle:
            handle.write(_annotation_xml(image_id, width, height, objects))
        ids.append(image_id)
    with open(os.path.join(voc_dir, "ImageSets", "Main", "test.txt"), "w") as handle:
        handle.write("\n".join(ids) + "\n")
    return devkit


def main(argv=None):
    sample_cli.main(
        make_sample,
        "Write a small VOC2007-layout sample (pass its folder as --root).",
        [("--images", 6, "number of images")],
        argv,
    )


if __name__ == "__main__":
    main()
