"""RetinaNet anchors on the host (numpy), as detectron2's DefaultAnchorGenerator makes them.

Per level l (P3..P7, strides 8..128), every feature-map location (row-major) carries
A = 9 cell anchors ordered size-major: sizes s, s * 2^(1/3), s * 2^(2/3) with s = 32 * 2^l'
(l' = 0..4), and for each size the aspect ratios (h / w) 0.5, 1, 2. A cell anchor of size
s and ratio a is centred on 0: w = sqrt(s^2 / a), h = a * w, (-w/2, -h/2, w/2, h/2).
Location (y, x) shifts it by (x * stride, y * stride) + offset * stride, and the
retinanet_R_50_FPN config leaves MODEL.ANCHOR_GENERATOR.OFFSET at its default, 0.0.

Feature-map sizes follow the network's arithmetic (every stride-2 layer maps n to
ceil(n / 2)), so anchors fit the exported model for any input size.
"""

import math

import numpy as np

STRIDES = (8, 16, 32, 64, 128)
BASE_SIZES = (32, 64, 128, 256, 512)
OCTAVE_SCALES = (1.0, 2 ** (1.0 / 3), 2 ** (2.0 / 3))
# Per level: the 3 sizes of Base-RetinaNet.yaml, [x, x * 2**(1/3), x * 2**(2/3)].
SIZES = tuple(tuple(base * scale for scale in OCTAVE_SCALES) for base in BASE_SIZES)
ASPECT_RATIOS = (0.5, 1.0, 2.0)
OFFSET = 0.0
NUM_CELL_ANCHORS = len(OCTAVE_SCALES) * len(ASPECT_RATIOS)


def cell_anchors(sizes, aspect_ratios=ASPECT_RATIOS):
    """(len(sizes) * len(aspect_ratios), 4) float32 anchors centred on 0, size-major.

    Computed in Python floats then stored as float32, as detectron2's
    `torch.tensor(anchors).float()` does.
    """
    boxes = []
    for size in sizes:
        area = size**2.0
        for ratio in aspect_ratios:
            w = math.sqrt(area / ratio)
            h = ratio * w
            boxes.append([-w / 2.0, -h / 2.0, w / 2.0, h / 2.0])
    return np.asarray(boxes, dtype=np.float32)


def _halve(n):
    """Output size of a stride-2 conv / pool layer of this network (k3 p1, k1 p0, k7 p3)."""
    return (int(n) - 1) // 2 + 1


def feature_sizes(input_hw):
    """[(H, W)] of P3..P7 for an input of `input_hw`.

    stem conv (/2) and max-pool (/2) give res2, then res3, res4, res5 halve once each
    (P3..P5 keep their sizes), P6 = conv s2 of res5, P7 = conv s2 of P6.
    """
    h, w = int(input_hw[0]), int(input_hw[1])
    sizes = []
    for level in range(7):  # stem, pool, res3, res4, res5, p6, p7
        h, w = _halve(h), _halve(w)
        if level >= 2:
            sizes.append((h, w))
    return sizes


def grid_anchors(
    input_hw, strides=STRIDES, sizes=SIZES, aspect_ratios=ASPECT_RATIOS, offset=OFFSET
):
    """Per level, the (H * W * A, 4) float32 anchors in network-input pixels."""
    result = []
    for (height, width), stride, level_sizes in zip(feature_sizes(input_hw), strides, sizes):
        base = cell_anchors(level_sizes, aspect_ratios)
        shifts_x = np.arange(width, dtype=np.float32) * np.float32(stride)
        shifts_y = np.arange(height, dtype=np.float32) * np.float32(stride)
        shifts_x += np.float32(offset * stride)
        shifts_y += np.float32(offset * stride)
        shift_y, shift_x = np.meshgrid(shifts_y, shifts_x, indexing="ij")
        shift_x = shift_x.reshape(-1)
        shift_y = shift_y.reshape(-1)
        shifts = np.stack([shift_x, shift_y, shift_x, shift_y], axis=1)
        result.append((shifts[:, None, :] + base[None, :, :]).reshape(-1, 4))
    return result


def level_counts(input_hw, num_cell_anchors=NUM_CELL_ANCHORS):
    """Number of anchors (H * W * A) of each level, in output order."""
    return [h * w * num_cell_anchors for h, w in feature_sizes(input_hw)]


def num_anchors(input_hw):
    """R: rows of the network's outputs for an input of `input_hw`."""
    return int(sum(level_counts(input_hw)))
