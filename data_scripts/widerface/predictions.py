"""WIDER FACE prediction files: one txt per image, the official evaluation's input.

    <image name without .jpg>
    <number of faces>
    x y w h score          (one line per face, pixels of the original image)

stored as PRED_ROOT/<event>/<image name>.txt; an image id is "<event>/<image name>".
"""

import os

import numpy as np

from zoostage.safepath import check_name, child_path


def write_image_predictions(pred_root, image_id, detections):
    """Write one image's detections, (N, 5) x1, y1, x2, y2, score (float32), atomically."""
    event, _, name = image_id.partition("/")
    # Image ids come from the dataset: neither part may lead out of pred_root.
    folder = child_path(pred_root, event, "WIDER FACE event", single=True, writing=True)
    check_name(name, "WIDER FACE image name", folder, single=True)
    path = child_path(folder, name + ".txt", "WIDER FACE image name", single=True, writing=True)
    if not os.path.isdir(folder):
        try:
            os.makedirs(folder)
        except OSError:  # another worker made it first
            if not os.path.isdir(folder):
                raise
    dets = np.asarray(detections, dtype=np.float32).reshape(-1, 5)
    lines = [name, str(len(dets))]
    for x1, y1, x2, y2, score in dets:
        # As the seed's postprocess.py (lines 115-120) and Pytorch_Retinaface's
        # test_widerface.py write them from their float32 dets: corners truncated to
        # integers, w = int(x2) - int(x1), the score as str() of the float32 (the
        # evaluation's numbers depend on the truncation; the score text only on ties).
        x, y = int(x1), int(y1)
        lines.append("%d %d %d %d %s" % (x, y, int(x2) - x, int(y2) - y, str(np.float32(score))))
    with open(path + ".tmp", "w") as handle:
        handle.write("\n".join(lines) + "\n")
    os.replace(path + ".tmp", path)


def read_image_predictions(path):
    """(N, 5) x, y, w, h, score from one prediction file."""
    with open(path) as handle:
        lines = handle.read().splitlines()
    count = int(lines[1]) if len(lines) > 1 and lines[1].strip() else 0
    rows = [[float(v) for v in line.split()[:5]] for line in lines[2 : 2 + count] if line.strip()]
    return np.asarray(rows, dtype=np.float64).reshape(-1, 5)


def read_predictions(pred_root):
    """{image_id: (N, 5) x, y, w, h, score} for every prediction file under pred_root."""
    result = {}
    for event in sorted(os.listdir(pred_root)):
        folder = os.path.join(pred_root, event)
        if not os.path.isdir(folder):
            continue
        for filename in sorted(os.listdir(folder)):
            if filename.endswith(".txt"):
                result[event + "/" + filename[:-4]] = read_image_predictions(
                    os.path.join(folder, filename)
                )
    return result
