"""RefineDet320 prior boxes, in the order of the reference PriorBox (voc_refinedet['320']).

For each feature map k, for each cell row i then column j: one square box of side
min_sizes[k], then for each aspect ratio ar a (w, h) = (s*sqrt(ar), s/sqrt(ar)) box and
its transpose. Boxes are (cx, cy, w, h) relative to the image, clipped to [0, 1].
40x40 + 20x20 + 10x10 + 5x5 cells x 3 boxes = 6375 priors.
"""

import numpy as np

IMAGE_SIZE = 320
FEATURE_MAPS = (40, 20, 10, 5)
STEPS = (8, 16, 32, 64)
MIN_SIZES = (32, 64, 128, 256)
ASPECT_RATIOS = ((2,), (2,), (2,), (2,))
VARIANCES = (0.1, 0.2)
CLIP = True
NUM_PRIORS = 6375


def boxes_per_cell(aspect_ratios=ASPECT_RATIOS):
    """Boxes at each cell of each feature map: 1 + 2 per aspect ratio."""
    return [1 + 2 * len(ratios) for ratios in aspect_ratios]


def prior_boxes(
    image_size=IMAGE_SIZE,
    feature_maps=FEATURE_MAPS,
    steps=STEPS,
    min_sizes=MIN_SIZES,
    aspect_ratios=ASPECT_RATIOS,
    clip=CLIP,
):
    """(N, 4) float32 priors (cx, cy, w, h), reference order and values.

    Computed in float64 with the reference's arithmetic, then rounded to float32 as the
    reference's torch.Tensor(list) does, then clipped.
    """
    levels = []
    for f, step, min_size, ratios in zip(feature_maps, steps, min_sizes, aspect_ratios):
        f_k = image_size / float(step)
        rows, cols = np.meshgrid(np.arange(f), np.arange(f), indexing="ij")
        cx = ((cols.reshape(-1) + 0.5) / f_k)[:, None]
        cy = ((rows.reshape(-1) + 0.5) / f_k)[:, None]
        s_k = min_size / float(image_size)
        sizes = [(s_k, s_k)]
        for ar in ratios:
            root = np.sqrt(ar)
            sizes.append((s_k * root, s_k / root))
            sizes.append((s_k / root, s_k * root))
        per_box = [
            np.concatenate([cx, cy, np.full_like(cx, w), np.full_like(cy, h)], axis=1)
            for w, h in sizes
        ]
        # (cells, boxes, 4): the boxes of one cell are consecutive.
        levels.append(np.stack(per_box, axis=1).reshape(-1, 4))
    priors = np.concatenate(levels, axis=0).astype(np.float32)
    if clip:
        np.clip(priors, 0.0, 1.0, out=priors)
    return priors
