"""Locate a WIDER FACE val root and read its ground truth.

A root holds the images and the four ground-truth files of the official evaluation tools:

    ROOT/images/<event>/<name>.jpg          (or ROOT/WIDER_val/images/...)
    wider_face_val.mat, wider_easy_val.mat, wider_medium_val.mat, wider_hard_val.mat
        in ROOT, ROOT/ground_truth, ROOT/eval_tools/ground_truth or ROOT/wider_face_split

The .mat files are MATLAB 5 files read with scipy.io.loadmat: `event_list` (E x 1 cells of
event names), `file_list` (per event, n x 1 cells of image names without .jpg),
`face_bbx_list` (per event, per image, k x 4 boxes x, y, w, h in pixels), and in each
setting file `gt_list` (per event, per image, the 1-based indices of the faces that count
in that setting; the others are ignored by the evaluation).
"""

import os

import numpy as np

from zoostage.errors import UserError
from zoostage.safepath import check_name, child_path

SETTINGS = ("easy", "medium", "hard")
FACE_FILE = "wider_face_val.mat"
SETTING_FILES = {s: "wider_%s_val.mat" % s for s in SETTINGS}
GT_FILES = tuple([FACE_FILE] + [SETTING_FILES[s] for s in SETTINGS])
GT_SUBDIRS = ("", "ground_truth", os.path.join("eval_tools", "ground_truth"), "wider_face_split")
IMAGE_SUBDIRS = ("images", os.path.join("WIDER_val", "images"))

GET_IMAGES = (
    "unzip the official WIDER_val.zip (http://shuoyang1213.me/WIDERFACE/) so that "
    "ROOT/images/<event>/<name>.jpg exists"
)
GET_GT = (
    "put wider_face_val.mat and wider_{easy,medium,hard}_val.mat from the official WIDER FACE "
    "evaluation tools (eval_tools.zip, ground_truth/) in ROOT or ROOT/ground_truth"
)


class WiderFaceVal(object):
    """The val ground truth, one entry per image in the official (event, file) order.

    - `ids[i]`: "event/name" (name without .jpg)
    - `boxes[i]`: (k, 4) float64 x, y, w, h
    - `keep[setting][i]`: int64 0-based indices into `boxes[i]` of the faces that count in
      that setting ("easy", "medium", "hard")
    - `gt_dir`: folder the .mat files were read from; `images_dir`: image folder or None
    """

    def __init__(self, ids, boxes, keep, gt_dir, images_dir=None):
        self.ids = ids
        self.boxes = boxes
        self.keep = keep
        self.gt_dir = gt_dir
        self.images_dir = images_dir
        self._index = None

    def __len__(self):
        return len(self.ids)

    def index(self, image_id):
        """Position of `image_id` ("event/name"), or None."""
        if self._index is None:
            self._index = {image_id: i for i, image_id in enumerate(self.ids)}
        return self._index.get(image_id)

    @staticmethod
    def relative_file(image_id):
        """The image's path relative to the images folder: "event/name.jpg"."""
        return image_id + ".jpg"

    def image_path(self, i):
        if self.images_dir is None:
            raise ValueError("images were not located")
        return child_path(self.images_dir, self.relative_file(self.ids[i]), "WIDER FACE image")

    def face_count(self, setting=None):
        """Faces in all images (setting None) or counted in one setting."""
        if setting is None:
            return int(sum(len(b) for b in self.boxes))
        return int(sum(len(k) for k in self.keep[setting]))


def _check_root(root):
    if not root:
        raise UserError("no WIDER FACE folder given (pass --root): " + GET_IMAGES)
    if not os.path.isdir(root):
        raise UserError(
            "WIDER FACE folder %s does not exist: %s, and %s" % (root, GET_IMAGES, GET_GT)
        )


def find_gt_dir(root):
    """The first of ROOT, ROOT/ground_truth, ... that holds all four ground-truth files."""
    _check_root(root)
    best, best_missing = None, None
    for sub in GT_SUBDIRS:
        folder = os.path.join(root, sub) if sub else root
        if not os.path.isdir(folder):
            continue
        missing = [f for f in GT_FILES if not os.path.isfile(os.path.join(folder, f))]
        if not missing:
            return folder
        if len(missing) < len(GT_FILES) and (best is None or len(missing) < len(best_missing)):
            best, best_missing = folder, missing
    if best is not None:
        raise UserError(
            "WIDER FACE ground truth incomplete in %s: missing %s; %s"
            % (best, ", ".join(best_missing), GET_GT)
        )
    raise UserError(
        "WIDER FACE ground truth not found in %s (looked in %s): missing %s; %s"
        % (root, ", ".join(s or "." for s in GT_SUBDIRS), ", ".join(GT_FILES), GET_GT)
    )


def find_images_dir(root):
    """ROOT/images or ROOT/WIDER_val/images, the first that exists."""
    _check_root(root)
    for sub in IMAGE_SUBDIRS:
        folder = os.path.join(root, sub)
        if os.path.isdir(folder):
            return folder
    raise UserError(
        "WIDER FACE val images not found in %s (no %s): %s"
        % (root, " or ".join(IMAGE_SUBDIRS), GET_IMAGES)
    )


def _loadmat(path, names):
    from scipy.io import loadmat  # imported here: only WIDER FACE code needs scipy

    try:
        data = loadmat(path, variable_names=list(names))
    except Exception as error:  # scipy raises several types for a damaged file
        raise UserError(
            "cannot read WIDER FACE ground truth %s (%s: %s); download it again"
            % (path, type(error).__name__, error)
        ) from error
    for name in names:
        if name not in data:
            raise UserError(
                "%s has no variable %r: not a WIDER FACE ground-truth file; %s"
                % (path, name, GET_GT)
            )
    return data


def _cell_str(cell, path, what):
    """A MATLAB char array inside a cell, as loadmat gives it: array(['text']).

    The text names a folder or a file (an event, an image): it must be one safe path
    component, or the file is damaged or crafted (a UserError naming the entry).
    """
    values = np.asarray(cell).ravel()
    text = str(values[0]) if values.size else ""
    check_name(text, what, path, single=True)
    return text


def _event_cells(array, path, name, count=None):
    cells = np.asarray(array, dtype=object).ravel()
    if count is not None and len(cells) != count:
        raise UserError(
            "%s: %s has %d events, %s has %d; the ground-truth files do not belong together; %s"
            % (path, name, len(cells), FACE_FILE, count, GET_GT)
        )
    return [np.asarray(c, dtype=object).ravel() for c in cells]


def read_ground_truth(gt_dir):
    """Read the four .mat files in `gt_dir` into a WiderFaceVal (images_dir None)."""
    face_path = os.path.join(gt_dir, FACE_FILE)
    face = _loadmat(face_path, ("event_list", "file_list", "face_bbx_list"))
    events = [
        _cell_str(c, face_path, "event name #%d" % (e + 1))
        for e, c in enumerate(np.asarray(face["event_list"], dtype=object).ravel())
    ]
    files = _event_cells(face["file_list"], face_path, "file_list", len(events))
    bbx = _event_cells(face["face_bbx_list"], face_path, "face_bbx_list", len(events))
    ids, boxes = [], []
    for e, event in enumerate(events):
        if len(files[e]) != len(bbx[e]):
            raise UserError(
                "%s: event %s lists %d images but %d box lists; %s"
                % (face_path, event, len(files[e]), len(bbx[e]), GET_GT)
            )
        for j, cell in enumerate(files[e]):
            name = _cell_str(cell, face_path, "image name #%d of event %s" % (j + 1, event))
            ids.append(event + "/" + name)
            b = np.asarray(bbx[e][j], dtype=np.float64)
            boxes.append(b.reshape(-1, 4))
    keep = {}
    for setting in SETTINGS:
        path = os.path.join(gt_dir, SETTING_FILES[setting])
        cells = _event_cells(_loadmat(path, ("gt_list",))["gt_list"], path, "gt_list", len(events))
        lists = []
        for e, event in enumerate(events):
            if len(cells[e]) != len(files[e]):
                raise UserError(
                    "%s: event %s has %d images, %s has %d; %s"
                    % (path, event, len(cells[e]), FACE_FILE, len(files[e]), GET_GT)
                )
            for j in range(len(cells[e])):
                k = np.asarray(cells[e][j]).astype(np.int64).ravel() - 1
                i = len(lists)
                if k.size and (k.min() < 0 or k.max() >= len(boxes[i])):
                    raise UserError(
                        "%s: image %s keeps face %d of %d; %s"
                        % (path, ids[i], int(k.max()) + 1, len(boxes[i]), GET_GT)
                    )
                lists.append(k)
        keep[setting] = lists
    return WiderFaceVal(ids, boxes, keep, gt_dir)


def load(root, images=True):
    """Locate and read a WIDER FACE val root; with `images`, also locate the image folder.

    Missing pieces raise UserError with one line saying what is missing and how to get it.
    """
    images_dir = find_images_dir(root) if images else None
    dataset = read_ground_truth(find_gt_dir(root))
    dataset.images_dir = images_dir
    return dataset
