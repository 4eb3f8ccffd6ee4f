"""A picture of faces found on a few images: boxes, the five landmarks, scores.

Drawn with OpenCV (imported when called). Each face at or above the infer stage's figure
score gets a green box, its score, and its five landmarks (eyes, nose, mouth corners,
each in its own colour, as Pytorch_Retinaface's detect.py draws them); the ground-truth
faces of the image, when known, are thin white boxes. Images are fitted into a grid.

The faces come from the infer stage's faces.json: {"score_threshold": t, "images":
{"event/name": {"file": "event/name.jpg", "faces": [[x1, y1, x2, y2, score, 10 landmark
coordinates], ...]}}}, in original-image pixels.
"""

import os

import numpy as np

from data_scripts.grid import fit_cell, px, write_grid

# BGR: left eye, right eye, nose, left and right mouth corner.
LANDMARK_COLORS = ((0, 0, 255), (0, 255, 255), (255, 0, 255), (0, 255, 0), (255, 0, 0))


def draw_faces_on(cv2, image, faces, gt_boxes=()):
    """A copy of `image` with ground truth (x, y, w, h) and faces drawn."""
    canvas = image.copy()
    for x, y, w, h in gt_boxes:
        cv2.rectangle(canvas, px(x, y), px(x + w, y + h), (255, 255, 255), 1)
    thick = max(1, round(max(image.shape[:2]) / 500.0))
    for face in faces:
        x1, y1, x2, y2, score = face[:5]
        cv2.rectangle(canvas, px(x1, y1), px(x2, y2), (0, 220, 0), thick + 1)
        cv2.putText(
            canvas,
            "%.2f" % score,
            px(x1, y1 - 3),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.4 * thick,
            (0, 220, 0),
            thick,
            cv2.LINE_AA,
        )
        points = np.asarray(face[5:15], dtype=np.float64).reshape(-1, 2)
        for (x, y), color in zip(points, LANDMARK_COLORS):
            cv2.circle(canvas, px(x, y), thick + 1, color, -1)
    return canvas


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
        cells.append(fit_cell(cv2, canvas, title))
        drawn.append(image_id)
    return drawn if write_grid(cv2, path, cells) else []
