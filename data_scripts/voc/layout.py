"""The VOC2007 test layout and its annotations.

    VOCdevkit/VOC2007/
        ImageSets/Main/test.txt     one image id per line (000001, ...; 4952 ids)
        JPEGImages/<id>.jpg
        Annotations/<id>.xml        <object>: name, difficult, bndbox xmin ymin xmax ymax

This is VOCtest_06-Nov-2007.tar extracted. `locate` accepts the VOCdevkit folder, the
VOC2007 folder itself, or a folder holding VOCdevkit.

Annotations are read as RefineDet.PyTorch's eval_refinedet.py `parse_rec` reads them:
the class name as written, `difficult` as an int, and the box corners as the XML's
1-based integers minus 1. The evaluation relies on that offset (see evaluate.py).
"""

import os
import xml.etree.ElementTree as ET

from zoostage.errors import UserError
from zoostage.safepath import check_name, child_path

# The reference's VOC_CLASSES order (data/voc0712.py); label i + 1 is class i (0 = background).
VOC_CLASSES = (
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)

IMAGE_SET = "test"
GET_VOC2007_TEST = (
    "get VOC2007 test: VOCtest_06-Nov-2007.tar from "
    "http://host.robots.ox.ac.uk/pascal/VOC/voc2007/ and pass the VOCdevkit folder it "
    "extracts to as the data root"
)


def _image_set_file(voc_dir, image_set=IMAGE_SET):
    return os.path.join(voc_dir, "ImageSets", "Main", image_set + ".txt")


def _looks_like_voc_dir(path):
    return any(os.path.isdir(os.path.join(path, sub)) for sub in ("Annotations", "JPEGImages"))


def locate(root, image_set=IMAGE_SET):
    """The VOC2007 folder under `root` (VOCdevkit, VOC2007 itself, or VOCdevkit's parent)."""
    root = os.path.abspath(root)
    if not os.path.isdir(root):
        raise UserError("VOC2007 data root %s does not exist; %s" % (root, GET_VOC2007_TEST))
    candidates = [root, os.path.join(root, "VOC2007"), os.path.join(root, "VOCdevkit", "VOC2007")]
    for candidate in candidates:
        if os.path.isfile(_image_set_file(candidate, image_set)):
            return candidate
    # Say where the list should be, in the layout the folder seems to have.
    if _looks_like_voc_dir(root):
        expected = root
    elif os.path.isdir(os.path.join(root, "VOCdevkit")):
        expected = candidates[2]
    else:
        expected = candidates[1]
    raise UserError(
        "no VOC2007 %s image list: %s is missing; %s"
        % (image_set, _image_set_file(expected, image_set), GET_VOC2007_TEST)
    )


class VOCLayout(object):
    """Paths and image ids of one VOC2007 image set."""

    def __init__(self, root, image_set=IMAGE_SET):
        self.voc_dir = locate(root, image_set)
        self.image_set = image_set
        self.list_file = _image_set_file(self.voc_dir, image_set)
        with open(self.list_file) as handle:
            self.ids = [line.strip() for line in handle if line.strip()]
        if not self.ids:
            raise UserError("%s lists no images; %s" % (self.list_file, GET_VOC2007_TEST))
        for number, image_id in enumerate(self.ids):
            # An id names <id>.jpg and <id>.xml: one file name, never a path.
            check_name(image_id, "image id on line %d" % (number + 1), self.list_file, single=True)

    def image_file(self, image_id):
        """The image's path relative to the VOC2007 folder."""
        return "JPEGImages/%s.jpg" % image_id

    def image_path(self, image_id):
        check_name(image_id, "VOC image id", self.list_file, single=True)
        folder = os.path.join(self.voc_dir, "JPEGImages")
        return child_path(folder, image_id + ".jpg", "VOC image id")

    def annotation_path(self, image_id):
        check_name(image_id, "VOC image id", self.list_file, single=True)
        folder = os.path.join(self.voc_dir, "Annotations")
        return child_path(folder, image_id + ".xml", "VOC image id")

    def check_images(self, ids=None):
        """UserError naming the first listed image that is not there."""
        ids = self.ids if ids is None else ids
        for image_id in ids:
            path = self.image_path(image_id)
            if not os.path.isfile(path):
                raise UserError(
                    "image %s listed in %s is missing (incomplete extraction? %s)"
                    % (path, self.list_file, GET_VOC2007_TEST)
                )

    def annotations(self, ids=None):
        """{image id: parse_annotation(...)} for `ids` (default: the whole image set)."""
        ids = self.ids if ids is None else ids
        return dict(
            (image_id, parse_annotation(self.annotation_path(image_id))) for image_id in ids
        )


def _text(element, tag, path):
    child = element.find(tag)
    if child is None or child.text is None:
        raise UserError("annotation %s: an <object> has no <%s>; re-extract it" % (path, tag))
    return child.text


def _int(text, tag, path):
    try:
        return int(text)
    except ValueError:
        try:  # a few hand-made files write "273.0"
            return int(float(text))
        except ValueError:
            raise UserError("annotation %s: <%s> is %r, not a number" % (path, tag, text)) from None


def parse_annotation(path):
    """The objects of one annotation XML, as the reference's parse_rec reads them.

    Returns [{"name": str, "difficult": 0 or 1, "truncated": 0 or 1,
    "bbox": [xmin - 1, ymin - 1, xmax - 1, ymax - 1]}, ...] in file order.
    """
    if not os.path.isfile(path):
        raise UserError("annotation %s is missing; %s" % (path, GET_VOC2007_TEST))
    try:
        tree = ET.parse(path)
    except ET.ParseError as error:
        raise UserError(
            "annotation %s does not parse (%s); re-extract it" % (path, error)
        ) from None
    objects = []
    for obj in tree.findall("object"):
        bndbox = obj.find("bndbox")
        if bndbox is None:
            raise UserError("annotation %s: an <object> has no <bndbox>; re-extract it" % path)
        difficult = obj.find("difficult")
        truncated = obj.find("truncated")
        objects.append(
            {
                "name": _text(obj, "name", path),
                "difficult": _int(difficult.text, "difficult", path)
                if difficult is not None and difficult.text
                else 0,
                "truncated": _int(truncated.text, "truncated", path)
                if truncated is not None and truncated.text
                else 0,
                "bbox": [
                    _int(_text(bndbox, tag, path), tag, path) - 1
                    for tag in ("xmin", "ymin", "xmax", "ymax")
                ],
            }
        )
    return objects
