"""COCO val2017 on disk, its annotation file, and the 80 categories.

The layout of the official download (and of the test fixture):

    ROOT/val2017/000000000139.jpg ...            from val2017.zip
    ROOT/annotations/instances_val2017.json      from annotations_trainval2017.zip

The annotation file is read with `json` (pycocotools is only needed to evaluate).
Detectors trained on COCO predict a contiguous label 0..79; the COCO category ids are
1..90 with gaps. Label k is the k-th smallest category id (detectron2's
`thing_dataset_id_to_contiguous_id`, the seed's `coco_labels`).
"""

import json
import os
import sys

from zoostage.errors import UserError
from zoostage.safepath import check_name, child_path

IMAGES_DIR = "val2017"
ANNOTATION_FILE = "annotations/instances_val2017.json"
IMAGES_URL = "http://images.cocodataset.org/zips/val2017.zip"
ANNOTATIONS_URL = "http://images.cocodataset.org/annotations/annotations_trainval2017.zip"

# (category id, name, supercategory), as in instances_val2017.json.
COCO_CATEGORIES = (
    (1, "person", "person"),
    (2, "bicycle", "vehicle"),
    (3, "car", "vehicle"),
    (4, "motorcycle", "vehicle"),
    (5, "airplane", "vehicle"),
    (6, "bus", "vehicle"),
    (7, "train", "vehicle"),
    (8, "truck", "vehicle"),
    (9, "boat", "vehicle"),
    (10, "traffic light", "outdoor"),
    (11, "fire hydrant", "outdoor"),
    (13, "stop sign", "outdoor"),
    (14, "parking meter", "outdoor"),
    (15, "bench", "outdoor"),
    (16, "bird", "animal"),
    (17, "cat", "animal"),
    (18, "dog", "animal"),
    (19, "horse", "animal"),
    (20, "sheep", "animal"),
    (21, "cow", "animal"),
    (22, "elephant", "animal"),
    (23, "bear", "animal"),
    (24, "zebra", "animal"),
    (25, "giraffe", "animal"),
    (27, "backpack", "accessory"),
    (28, "umbrella", "accessory"),
    (31, "handbag", "accessory"),
    (32, "tie", "accessory"),
    (33, "suitcase", "accessory"),
    (34, "frisbee", "sports"),
    (35, "skis", "sports"),
    (36, "snowboard", "sports"),
    (37, "sports ball", "sports"),
    (38, "kite", "sports"),
    (39, "baseball bat", "sports"),
    (40, "baseball glove", "sports"),
    (41, "skateboard", "sports"),
    (42, "surfboard", "sports"),
    (43, "tennis racket", "sports"),
    (44, "bottle", "kitchen"),
    (46, "wine glass", "kitchen"),
    (47, "cup", "kitchen"),
    (48, "fork", "kitchen"),
    (49, "knife", "kitchen"),
    (50, "spoon", "kitchen"),
    (51, "bowl", "kitchen"),
    (52, "banana", "food"),
    (53, "apple", "food"),
    (54, "sandwich", "food"),
    (55, "orange", "food"),
    (56, "broccoli", "food"),
    (57, "carrot", "food"),
    (58, "hot dog", "food"),
    (59, "pizza", "food"),
    (60, "donut", "food"),
    (61, "cake", "food"),
    (62, "chair", "furniture"),
    (63, "couch", "furniture"),
    (64, "potted plant", "furniture"),
    (65, "bed", "furniture"),
    (67, "dining table", "furniture"),
    (70, "toilet", "furniture"),
    (72, "tv", "electronic"),
    (73, "laptop", "electronic"),
    (74, "mouse", "electronic"),
    (75, "remote", "electronic"),
    (76, "keyboard", "electronic"),
    (77, "cell phone", "electronic"),
    (78, "microwave", "appliance"),
    (79, "oven", "appliance"),
    (80, "toaster", "appliance"),
    (81, "sink", "appliance"),
    (82, "refrigerator", "appliance"),
    (84, "book", "indoor"),
    (85, "clock", "indoor"),
    (86, "vase", "indoor"),
    (87, "scissors", "indoor"),
    (88, "teddy bear", "indoor"),
    (89, "hair drier", "indoor"),
    (90, "toothbrush", "indoor"),
)

# label (0..79) -> COCO category id, and back; category id -> name.
CATEGORY_IDS = tuple(sorted(c[0] for c in COCO_CATEGORIES))
LABEL_OF_CATEGORY = dict((cid, label) for label, cid in enumerate(CATEGORY_IDS))
CATEGORY_NAMES = dict((c[0], c[1]) for c in COCO_CATEGORIES)

# How many names an error message lists before "...".
_SHOWN = 5


def label_to_category(label):
    """The COCO category id of contiguous label `label` (0..79)."""
    return CATEGORY_IDS[int(label)]


def category_to_label(category_id):
    """The contiguous label (0..79) of COCO category id `category_id`."""
    return LABEL_OF_CATEGORY[int(category_id)]


def _names(names):
    names = list(names)
    shown = ", ".join(str(n) for n in names[:_SHOWN])
    return shown + (", ..." if len(names) > _SHOWN else "")


def _how_to_get(root):
    return "download %s and %s and unzip both into %s" % (IMAGES_URL, ANNOTATIONS_URL, root)


def _under_root(root, relative, is_dir, what, url):
    """ROOT/relative, or a UserError saying which is missing and what to download."""
    if not os.path.isdir(root):
        raise UserError("COCO val2017 folder %s does not exist; %s" % (root, _how_to_get(root)))
    path = os.path.join(root, relative)
    if not (os.path.isdir(path) if is_dir else os.path.isfile(path)):
        raise UserError(
            "COCO val2017 at %s has no %s; download %s and unzip it into %s"
            % (root, what, url, root)
        )
    return path


def annotation_path(root):
    """ROOT/annotations/instances_val2017.json; a missing root or file is a UserError."""
    return _under_root(root, ANNOTATION_FILE, False, ANNOTATION_FILE, ANNOTATIONS_URL)


def images_dir(root):
    """ROOT/val2017; a missing folder is a UserError."""
    return _under_root(root, IMAGES_DIR, True, IMAGES_DIR + "/ image folder", IMAGES_URL)


def load_annotations(root):
    """The parsed annotation file, checked for the structure this package relies on.

    Checked: `images` (unique ids, file names, sizes), `annotations` (image ids that
    exist, 4-number bboxes), and `categories` equal to the 80 COCO categories (the
    label <-> category id mapping depends on it).
    """
    path = annotation_path(root)
    try:
        with open(path) as handle:
            data = json.load(handle)
    except ValueError as error:
        raise UserError("%s is not valid JSON (%s); download it again" % (path, error)) from None
    except (IOError, OSError) as error:
        raise UserError("cannot read %s: %s" % (path, error.strerror or error)) from None
    if not isinstance(data, dict):
        raise UserError("%s is not a COCO annotation file (not a JSON object)" % path)
    missing = [k for k in ("images", "annotations", "categories") if k not in data]
    if missing:
        raise UserError(
            "%s is not a COCO instances file: no %s; use instances_val2017.json from %s"
            % (path, " / ".join(missing), ANNOTATIONS_URL)
        )
    ids = set()
    for image in data["images"]:
        try:
            image_id = int(image["id"])
            str(image["file_name"])
            int(image["height"]), int(image["width"])
        except (KeyError, TypeError, ValueError):
            raise UserError("%s: malformed image entry %r" % (path, _short(image))) from None
        if image_id in ids:
            raise UserError("%s: image id %d is listed twice" % (path, image_id))
        check_name(image["file_name"], "file_name of image %d" % image_id, path)
        ids.add(image_id)
    for ann in data["annotations"]:
        try:
            ok = int(ann["image_id"]) in ids and len(ann["bbox"]) == 4
            int(ann["category_id"])
        except (KeyError, TypeError, ValueError):
            ok = False
        if not ok:
            raise UserError("%s: malformed annotation %r" % (path, _short(ann)))
    check_categories(data["categories"], path)
    return data


def _short(entry):
    text = repr(entry)
    return text if len(text) <= 120 else text[:117] + "..."


def check_categories(categories, where):
    """The categories of an annotation file must be the 80 COCO ones (ids and names)."""
    try:
        found = sorted((int(c["id"]), str(c["name"])) for c in categories)
    except (KeyError, TypeError, ValueError):
        raise UserError("%s: malformed categories list" % where) from None
    expected = sorted((c[0], c[1]) for c in COCO_CATEGORIES)
    if found != expected:
        extra = sorted(set(found) - set(expected))
        lost = sorted(set(expected) - set(found))
        raise UserError(
            "%s does not list the 80 COCO categories (%d found; unexpected: %s; missing: %s): "
            "the 80-label model output cannot be mapped to it"
            % (where, len(found), _names(extra) or "none", _names(lost) or "none")
        )


def image_file(folder, file_name):
    """FOLDER/file_name for a file_name from an annotation file, refused if it leaves FOLDER."""
    return child_path(folder, file_name, "COCO file_name")


def sorted_images(annotations):
    """The image entries of an annotation file, sorted by image id."""
    return sorted(annotations["images"], key=lambda image: int(image["id"]))


def list_images(root, annotations=None, limit=0, stream=None):
    """The images to run: entries {id, file_name, height, width}, sorted by image id.

    `limit` > 0 keeps the first `limit`. Every kept image must be on disk: absent ones
    are one UserError naming how many and the first few. Files in val2017/ that the
    annotation file does not list are ignored, with a note on `stream` (stderr).
    """
    if annotations is None:
        annotations = load_annotations(root)
    folder = images_dir(root)
    images = sorted_images(annotations)
    if limit and limit > 0:
        images = images[: int(limit)]
    on_disk = set(os.listdir(folder))
    absent = [image["file_name"] for image in images if image["file_name"] not in on_disk]
    if absent:
        raise UserError(
            "%d of the %d images listed in %s are missing from %s: %s; %s"
            % (
                len(absent),
                len(images),
                ANNOTATION_FILE,
                folder,
                _names(absent),
                "download %s and unzip it into %s" % (IMAGES_URL, root),
            )
        )
    listed = set(image["file_name"] for image in annotations["images"])
    extra = sorted(name for name in on_disk if name.lower().endswith(".jpg") and name not in listed)
    if extra:
        stream = stream if stream is not None else sys.stderr
        stream.write(
            "note: %d .jpg files in %s are not in %s and are ignored: %s\n"
            % (len(extra), folder, ANNOTATION_FILE, _names(extra))
        )
    return [
        {
            "id": int(image["id"]),
            "file_name": str(image["file_name"]),
            "height": int(image["height"]),
            "width": int(image["width"]),
        }
        for image in images
    ]
