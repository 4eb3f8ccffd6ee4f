"""RetinaFace prior (anchor) boxes, as the reference's layers/functions/prior_box.py.

For each level k (stride steps[k]) the feature map is ceil(H / step) x ceil(W / step);
positions run row by row (i over rows, j over columns) and, at each position, one prior per
min_size in min_sizes[k]. A prior is (cx, cy, w, h) normalized by the image size:
cx = (j + 0.5) * step / W, cy = (i + 0.5) * step / H, w = min_size / W, h = min_size / H.
The order matches the network's flattened (N, A, K) outputs.
"""

import numpy as np

from models.retinaface import CFG_MNET

_CACHE = {}


def feature_maps(image_hw, steps=None):
    """[(rows, cols)] per level for an (H, W) input."""
    steps = CFG_MNET["steps"] if steps is None else steps
    height, width = image_hw
    # ceil(size / step) as the reference, in integer arithmetic.
    return [(-(-int(height) // int(s)), -(-int(width) // int(s))) for s in steps]


def prior_count(image_hw, cfg=None):
    """How many priors (= network anchors) an (H, W) input has: 41236 at 1000x1000."""
    cfg = CFG_MNET if cfg is None else cfg
    return sum(
        rows * cols * len(sizes)
        for (rows, cols), sizes in zip(feature_maps(image_hw, cfg["steps"]), cfg["min_sizes"])
    )


def prior_box(image_hw, cfg=None):
    """(A, 4) float32 priors (cx, cy, w, h), normalized, in the reference's order.

    Computed in float64 like the reference's Python floats, then stored as float32 like
    its torch.Tensor. Results are cached per size and config; do not modify them.
    """
    cfg = CFG_MNET if cfg is None else cfg
    height, width = int(image_hw[0]), int(image_hw[1])
    key = (height, width, repr(cfg["min_sizes"]), repr(cfg["steps"]), bool(cfg.get("clip")))
    if key in _CACHE:
        return _CACHE[key]
    levels = []
    for (rows, cols), step, sizes in zip(
        feature_maps((height, width), cfg["steps"]), cfg["steps"], cfg["min_sizes"]
    ):
        cy = (np.arange(rows, dtype=np.float64) + 0.5) * step / height
        cx = (np.arange(cols, dtype=np.float64) + 0.5) * step / width
        sizes = np.asarray(sizes, dtype=np.float64)
        count = rows * cols * len(sizes)
        level = np.empty((rows, cols, len(sizes), 4), dtype=np.float64)
        level[..., 0] = cx[None, :, None]
        level[..., 1] = cy[:, None, None]
        level[..., 2] = (sizes / width)[None, None, :]
        level[..., 3] = (sizes / height)[None, None, :]
        levels.append(level.reshape(count, 4))
    priors = np.concatenate(levels, axis=0).astype(np.float32)
    if cfg.get("clip"):
        np.clip(priors, 0.0, 1.0, out=priors)
    priors.setflags(write=False)
    _CACHE[key] = priors
    return priors
