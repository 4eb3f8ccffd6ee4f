"""A picture of a few images with their detections: boxes, class names, scores.

Drawn with OpenCV (imported when called): detections at or above a score in a colour per
class with "name score" labels, ground truth boxes (when given) as thin white lines,
each image fitted into one cell of a grid.
"""

import os

import numpy as np

from data_scripts.grid import fit_cell, px, write_grid


def _color(category_id):
    """A stable, saturated BGR colour per category."""
    import cv2

    hue = np.random.RandomState(int(category_id) * 7919 % 65536).randint(0, 180)
    hsv = np.uint8([[[hue, 220, 255]]])
    return tuple(int(c) for c in cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0])


def pick_images(image_ids, detections_by_image, score_threshold, count):
    """The first `count` ids (in order) with a detection at or above the threshold.

    When too few have one, images with any detection fill the rest.
    """
    confident, other = [], []
    for image_id in image_ids:
        dets = detections_by_image.get(image_id, [])
        if any(d["score"] >= score_threshold for d in dets):
            confident.append(image_id)
        elif dets:
            other.append(image_id)
    return (confident + other)[:count]


def _label(cv2, image, text, x, y, color):
    font, scale, thick = cv2.FONT_HERSHEY_SIMPLEX, 0.45, 1
    (tw, th), base = cv2.getTextSize(text, font, scale, thick)
    y = max(y, th + base + 1)
    cv2.rectangle(image, (x, y - th - base - 1), (x + tw + 2, y), color, thickness=-1)
    cv2.putText(image, text, (x + 1, y - base), font, scale, (0, 0, 0), thick, cv2.LINE_AA)


def draw_image(cv2, image, detections, names, score_threshold, gt_boxes=()):
    """Draw ground truth and detections (COCO x, y, w, h in image pixels) on a copy."""
    canvas = image.copy()
    for x, y, w, h in gt_boxes:
        cv2.rectangle(canvas, px(x, y), px(x + w, y + h), (255, 255, 255), 1)
    shown = [d for d in detections if d["score"] >= score_threshold]
    if not shown:  # nothing confident: show the best few so the picture says something
        shown = sorted(detections, key=lambda d: -d["score"])[:5]
    for det in sorted(shown, key=lambda d: d["score"]):
        x, y, w, h = det["bbox"]
        color = _color(det["category_id"])
        p1 = px(x, y)
        cv2.rectangle(canvas, p1, px(x + w, y + h), color, 2)
        name = names.get(det["category_id"], str(det["category_id"]))
        _label(cv2, canvas, "%s %.2f" % (name, det["score"]), p1[0], p1[1], color)
    return canvas


def draw_detections(
    path, image_files, detections_by_image, names, gt_by_image=None, score_threshold=0.5, count=4
):
    """Write a grid of up to `count` images with their detections to `path` (PNG).

    `image_files`: [(image id, image file path)] in the order to consider;
    `detections_by_image`: {id: [{"category_id", "bbox", "score"}]};
    `gt_by_image`: optional {id: [bbox]}. Returns the ids drawn ([] writes nothing:
    no image had a detection or none could be read).
    """
    import cv2

    files = dict(image_files)
    order = [image_id for image_id, _ in image_files]
    cells, drawn = [], []
    for image_id in pick_images(order, detections_by_image, score_threshold, len(order)):
        if len(drawn) >= count:
            break
        file_path = files[image_id]
        image = cv2.imread(file_path, cv2.IMREAD_COLOR) if os.path.isfile(file_path) else None
        if image is None:
            continue
        dets = detections_by_image.get(image_id, [])
        gt = (gt_by_image or {}).get(image_id, ())
        canvas = draw_image(cv2, image, dets, names, score_threshold, gt)
        kept = sum(1 for d in dets if d["score"] >= score_threshold)
        title = "%s: %d detections >= %.2f%s" % (
            os.path.basename(file_path),
            kept,
            score_threshold,
            ", white: ground truth" if gt else "",
        )
        cells.append(fit_cell(cv2, canvas, title))
        drawn.append(image_id)
    return drawn if write_grid(cv2, path, cells) else []
