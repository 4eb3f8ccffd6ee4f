"""Generate a small WIDER FACE val root: images with face-like ellipses, and ground truth.

The four .mat files have the official MATLAB structure (cell arrays of char arrays and
numeric arrays, written with scipy.io.savemat), so `layout` reads generated and real
files through the same code. Deterministic for a given seed.

    python -m data_scripts.widerface.sample --out ROOT [--events 3] [--per-event 4]
"""

import os

import numpy as np

from data_scripts import sample_cli
from data_scripts.widerface.layout import FACE_FILE, SETTING_FILES, SETTINGS

# Face height thresholds (pixels) that decide the settings of a generated face, loosely
# like the official split (easy: large faces; hard: nearly all, minus invalid ones).
EASY_MIN_H = 40
MEDIUM_MIN_H = 20


def _cell_column(items):
    """An n x 1 MATLAB cell array holding `items`."""
    cells = np.empty((len(items), 1), dtype=object)
    for i, item in enumerate(items):
        cells[i, 0] = item
    return cells


def write_ground_truth(gt_dir, ids, boxes, keep):
    """Write the four .mat files for images `ids` ("event/name", grouped by event).

    `boxes[i]`: (k, 4) x, y, w, h; `keep[setting][i]`: 0-based indices of counted faces.
    """
    from scipy.io import savemat

    events, members = [], {}
    for i, image_id in enumerate(ids):
        event, name = image_id.split("/", 1)
        if event not in members:
            events.append(event)
            members[event] = []
        members[event].append((i, name))
    event_list = _cell_column([np.array([e]) for e in events])
    file_list = _cell_column(
        [_cell_column([np.array([name]) for _, name in members[e]]) for e in events]
    )
    face_bbx_list = _cell_column(
        [
            _cell_column(
                [np.asarray(boxes[i], dtype=np.int32).reshape(-1, 4) for i, _ in members[e]]
            )
            for e in events
        ]
    )
    common = {"event_list": event_list, "file_list": file_list, "face_bbx_list": face_bbx_list}
    if not os.path.isdir(gt_dir):
        os.makedirs(gt_dir)
    savemat(os.path.join(gt_dir, FACE_FILE), common, format="5")
    for setting in SETTINGS:
        gt_list = _cell_column(
            [
                _cell_column(
                    [
                        (np.asarray(keep[setting][i], dtype=np.int64) + 1)
                        .astype(np.uint16)
                        .reshape(-1, 1)
                        for i, _ in members[e]
                    ]
                )
                for e in events
            ]
        )
        data = dict(common)
        data["gt_list"] = gt_list
        savemat(os.path.join(gt_dir, SETTING_FILES[setting]), data, format="5")


def _draw_image(rng, height, width, faces):
    """A noisy gradient background with one filled ellipse (plus eyes) per face box."""
    import cv2

    yy = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None]
    xx = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :]
    base = rng.uniform(40, 200, size=3)
    tilt = rng.uniform(-60, 60, size=(2, 3))
    image = base + yy[..., None] * tilt[0] + xx[..., None] * tilt[1]
    image = image + rng.normal(0.0, 8.0, size=(height, width, 3))
    image = np.clip(image, 0, 255).astype(np.uint8)
    for x, y, w, h in faces:
        center = (int(x + w // 2), int(y + h // 2))
        axes = (max(int(w // 2), 1), max(int(h // 2), 1))
        skin = tuple(int(v) for v in rng.uniform([60, 90, 140], [140, 180, 240]))
        cv2.ellipse(image, center, axes, 0, 0, 360, skin, -1)
        if w >= 12 and h >= 12:
            for dx in (-w // 5, w // 5):
                eye = (int(center[0] + dx), int(center[1] - h // 8))
                cv2.circle(image, eye, max(int(w // 12), 1), (30, 30, 30), -1)
    return image


def make_sample(root, events=3, per_event=4, seed=0, min_size=300, max_size=1200):
    """Write a WIDER-layout sample under `root`; returns the image ids in gt order.

    Images go to ROOT/images/<event>/<name>.jpg (random sizes in [min_size, max_size]),
    the four .mat files to ROOT.
    """
    import cv2

    rng = np.random.RandomState(seed)
    ids, boxes = [], []
    keep = {s: [] for s in SETTINGS}
    for e in range(events):
        event = "%d--Event%d" % (e, e)
        folder = os.path.join(root, "images", event)
        if not os.path.isdir(folder):
            os.makedirs(folder)
        for j in range(per_event):
            name = "%d_Event%d_sample_%d_%d" % (e, e, seed, j)
            height, width = (int(v) for v in rng.randint(min_size, max_size + 1, size=2))
            count = int(rng.randint(1, 13))
            faces = []
            for _ in range(count):
                h = int(min(rng.randint(8, 200), height - 2))
                w = int(max(4, min(round(h * rng.uniform(0.6, 1.0)), width - 2)))
                x = int(rng.randint(0, width - w))
                y = int(rng.randint(0, height - h))
                faces.append((x, y, w, h))
            faces = np.asarray(faces, dtype=np.int64).reshape(-1, 4)
            invalid = rng.uniform(size=len(faces)) < 0.1
            heights = faces[:, 3]
            keep["hard"].append(np.flatnonzero(~invalid))
            keep["medium"].append(np.flatnonzero(~invalid & (heights >= MEDIUM_MIN_H)))
            keep["easy"].append(np.flatnonzero(~invalid & (heights >= EASY_MIN_H)))
            image = _draw_image(rng, height, width, faces)
            cv2.imwrite(os.path.join(folder, name + ".jpg"), image, [cv2.IMWRITE_JPEG_QUALITY, 90])
            ids.append(event + "/" + name)
            boxes.append(faces)
    write_ground_truth(root, ids, boxes, keep)
    return ids


def main(argv=None):
    sample_cli.main(
        make_sample,
        "Generate a small WIDER FACE val sample.",
        [("--events", 3, "events"), ("--per-event", 4, "images per event")],
        argv,
    )


if __name__ == "__main__":
    main()
