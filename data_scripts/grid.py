"""The picture grids that evaluate stages draw: images fitted into titled cells.

OpenCV is passed in (imported by the caller when it draws), so this module imports
without it.
"""

import math

import numpy as np

CELL_W, CELL_H = 640, 480
COLUMNS = 2


def px(x, y):
    """A point in whole pixels, as OpenCV's drawing functions take it."""
    return math.floor(x + 0.5), math.floor(y + 0.5)


def fit_cell(cv2, image, title):
    """`image` scaled into one CELL_W x CELL_H cell, under a one-line title."""
    h, w = image.shape[:2]
    scale = min(CELL_W / float(w), CELL_H / float(h))
    size = (max(1, int(w * scale)), max(1, int(h * scale)))
    cell = np.full((CELL_H + 20, CELL_W, 3), 32, dtype=np.uint8)
    cell[20 : 20 + size[1], : size[0]] = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    cv2.putText(
        cell, title, (4, 15), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (230, 230, 230), 1, cv2.LINE_AA
    )
    return cell


def write_grid(cv2, path, cells):
    """The cells, COLUMNS to a row, as one PNG at `path`; False when there are none or it
    cannot be written."""
    cells = list(cells)
    if not cells:
        return False
    while len(cells) % COLUMNS:
        cells.append(np.full_like(cells[0], 32))
    rows = [np.concatenate(cells[i : i + COLUMNS], axis=1) for i in range(0, len(cells), COLUMNS)]
    return bool(cv2.imwrite(path, np.concatenate(rows, axis=0)))
