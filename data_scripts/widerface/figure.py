"""A picture of faces found on a few images: boxes, the five landmarks, scores.

Drawn with OpenCV (imported when called). Each face at or above the infer stage's figure
score gets a green box, its score, and its five landmarks (eyes, nose, mouth corners,
each in its own colour, as Pytorch_Retinaface's detect.py draws them); the ground-truth
faces of the image, when known, are thin white boxes. Images are fitted into a grid.

The faces come from the infer stage's faces.json: {"score_threshold": t, "images":
{"event/name": {"file": "event/name.jpg", "faces": [[x1, y1, x2, y2, score, 10 landmark
coordinates], ...]}}}, in original-image pixels.
"""

import math
import os

import numpy as np

CELL_W, CELL_H = 640, 480
COLUMNS = 2
# BGR: left eye, right eye, nose, left and right mouth corner.
LANDMARK_COLORS = ((0, 0, 255), (0, 255, 255), (255, 0, 255), (0, 255, 0), (255, 0, 0))


def _px(x, y):
    return math.floor(x + 0.5), math.floor(y + 0.5)


def draw_faces_on(cv2, image, faces, gt_boxes=()):
    """A copy of `image` with ground truth (x, y, w, h) and faces drawn."""
    canvas = image.copy()
    for x, y, w, h in gt_boxes:
        cv2.rectangle(canvas, _px(x, y), _px(x + w, y + h), (255, 255, 255), 1)
    thick = max(1, round(max(image.shape[:2]) / 500.0))
    for face in faces:
        x1, y1, x2, y2, score = face[:5]
        cv2.rectangle(canvas, _px(x1, y1), _px(x2, y2), (0, 220, 0), thick + 1)
        cv2.putText(
            canvas,
            "%.2f" % score,
            _px(x1, y1 - 3),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.4 * thick,
            (0, 220, 0),
            thick,
            cv2.LINE_AA,
        )
        points = np.asarray(face[5:15], dtype=np.float64).reshape(-1, 2)
        for (x, y), color in zip(points, LANDMARK_COLORS):
            cv2.circle(canvas, _px(x, y), thick + 1, color, -1)
    return canvas


def _cell(cv2, image, title):
    h, w = image.shape[:2]
    scale = min(CELL_W / float(w), CELL_H / float(h))
    size = (max(1, int(w * scale)), max(1, int(h * scale)))
    cell = np.full((CELL_H + 20, CELL_W, 3), 32, dtype=np.uint8)
    cell[20 : 20 + size[1], : size[0]] = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    cv2.putText(
        cell, title, (4, 15), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (230, 230, 230), 1, cv2.LINE_AA
    )
    return cell


def draw_faces(path, images_dir, faces_doc, gt_by_image=None, count=4, order=None):
    """Write a grid of up to `count` images with their faces to `path` (PNG).

    `order`: image ids in the order to consider (default: sorted). Returns the ids drawn
    ([] writes nothing: no listed image could be read).
    """
    import cv2

    images = faces_doc.get("images") or {}
    threshold = faces_doc.get("score_threshold", 0.5)
    ids = [i for i in (order or sorted(images)) if i in images]
    cells, drawn = [], []
    for image_id in ids:
        if len(drawn) >= count:
            break
        entry = images[image_id]
        relative = str(entry.get("file", ""))
        if os.path.isabs(relative) or ".." in relative.split("/"):
            continue  # not a name inside the image folder: never read
        file_path = os.path.join(images_dir, relative)
        image = cv2.imread(file_path, cv2.IMREAD_COLOR) if os.path.isfile(file_path) else None
        if image is None:
            continue
        gt = (gt_by_image or {}).get(image_id, ())
        canvas = draw_faces_on(cv2, image, entry["faces"], gt)
        title = "%s: %d faces >= %.2f%s" % (
            os.path.basename(file_path),
            len(entry["faces"]),
            threshold,
            ", white: ground truth" if len(gt) else "",
        )
        cells.append(_cell(cv2, canvas, title))
        drawn.append(image_id)
    if not cells:
        return []
    while len(cells) % COLUMNS:
        cells.append(np.full_like(cells[0], 32))
    rows = [np.concatenate(cells[i : i + COLUMNS], axis=1) for i in range(0, len(cells), COLUMNS)]
    if not cv2.imwrite(path, np.concatenate(rows, axis=0)):
        return []
    return drawn
