"""RetinaFace test-time postprocessing: one image's outputs -> faces in original pixels.

Both profiles run the same steps; they differ only in the optional cuts:

- `seed` (the default): the ModelZoo Torch_AIE seed's
  AscendIE/TorchAIE/built-in/cv/face/retinaface/postprocess.py, which has no cut at all
  (its line 85 comment says "keep top-K before NMS" but nothing is cut);
- `upstream`: Pytorch_Retinaface's test_widerface.py (the commit the seed pins,
  b984b4b), whose cuts `--top_k 5000` and `--keep_top_k 750` are commented out there
  (`# order = scores.argsort()[::-1][:args.top_k]`, `# dets = dets[:args.keep_top_k, :]`):
  off by default, available as top_k / keep_top_k.

Step by step (seed postprocess.py line numbers; test_widerface.py has the same steps):

1. lines 66-69: priors of the network input (PriorBox, `priors.prior_box`); boxes decoded
   with variances (0.1, 0.2) (`decode`: x1 = c - s / 2, x2 = x1 + s; here
   `boxes.decode_center_variance`), float32;
2. line 70: `boxes * scale / resize`: times the input size (1000), divided by the
   resize factor as float32 (the seed reads it back from a float32 .bin; here the
   store's scale cast to float32);
3. lines 72-79: scores = conf[:, 1]; landmarks decoded (`decode_landm`) and scaled the
   same way;
4. lines 81-84: keep scores > 0.02 (strict). The seed decodes every prior first; here
   only the kept ones are decoded: each prior is decoded on its own, so the numbers
   are the same;
5. lines 86-89: `order = scores.argsort()[::-1]` -- numpy's default sort, reversed,
   called exactly so (ties follow numpy's sort, as in the seed on the same machine);
6. lines 92-95: dets = [boxes, scores] as float32; `py_cpu_nms(dets, 0.4)`, which sorts
   again by `dets[:, 4].argsort()[::-1]` and measures inclusive pixels (x2 - x1 + 1):
   `boxes.nms_in_order` with that order and pixel_offset 1 gives its keep list;
7. lines 96-99: the kept rows, in py_cpu_nms's order, with their landmarks.

Writing them (lines 109-133: x, y truncated to int, w = int(x2) - int(x1), the score as
`str(np.float32)`) is `data_scripts.widerface.predictions`.
"""

import numpy as np

from models.common.boxes import decode_center_variance, nms_in_order
from models.retinaface import CFG_MNET
from models.retinaface.params import UPSTREAM_KEEP_TOP_K, UPSTREAM_TOP_K
from zoostage.params import PROFILES

CONFIDENCE_THRESHOLD = 0.02
NMS_THRESHOLD = 0.4


def decode_landmarks(pre, priors, variances):
    """(N, 10) landmark deltas -> (N, 10) x, y pairs in the priors' (normalized) units."""
    pre = np.asarray(pre, dtype=np.float32).reshape(-1, 5, 2)
    priors = np.asarray(priors, dtype=np.float32)
    points = priors[:, None, :2] + pre * variances[0] * priors[:, None, 2:]
    return points.reshape(-1, 10)


def check_cuts(profile, top_k, keep_top_k):
    """The seed has no cuts; the upstream script's are optional (0: off). ValueError else."""
    if profile not in PROFILES:
        raise ValueError("profile must be one of %s, not %r" % (", ".join(PROFILES), profile))
    if top_k < 0 or keep_top_k < 0:
        raise ValueError("top_k and keep_top_k take 0 (no cut) or a positive number")
    if profile == "seed" and (top_k or keep_top_k):
        raise ValueError(
            "the seed's postprocess cuts nothing: top_k / keep_top_k are upstream options "
            "(test_widerface.py's commented-out --top_k %d / --keep_top_k %d); pass "
            "profile=upstream to use them" % (UPSTREAM_TOP_K, UPSTREAM_KEEP_TOP_K)
        )


def detect(
    loc,
    conf,
    landms,
    priors,
    input_hw,
    scale=1.0,
    variances=None,
    confidence_threshold=CONFIDENCE_THRESHOLD,
    nms_threshold=NMS_THRESHOLD,
    top_k=0,
    keep_top_k=0,
):
    """Detections of one image from the network's outputs (steps 1-7 above).

    loc (A, 4), conf (A, 2) softmaxed (column 1 is the face score), landms (A, 10),
    priors (A, 4) normalized (cx, cy, w, h) for the (H, W) network input `input_hw`;
    `scale` is the resize factor original -> input (input pixels = original * scale).
    `top_k` / `keep_top_k` (0: off) cut before / after NMS, as test_widerface.py would
    with its cuts enabled.

    Returns (dets, landmarks): dets (K, 5) float32 x1, y1, x2, y2, score in original-image
    pixels, in NMS order (highest score first); landmarks (K, 10) float32 x, y pairs.
    K = 0 gives arrays of shape (0, 5) and (0, 10).
    """
    variances = CFG_MNET["variance"] if variances is None else variances
    loc = np.asarray(loc, dtype=np.float32).reshape(-1, 4)
    scores = np.asarray(conf, dtype=np.float32).reshape(loc.shape[0], -1)[:, 1]
    landms = np.asarray(landms, dtype=np.float32).reshape(-1, 10)
    priors = np.asarray(priors, dtype=np.float32)
    if not (loc.shape[0] == scores.shape[0] == landms.shape[0] == priors.shape[0]):
        raise ValueError(
            "outputs and priors disagree: loc %d, conf %d, landms %d, priors %d"
            % (loc.shape[0], scores.shape[0], landms.shape[0], priors.shape[0])
        )
    height, width = float(input_hw[0]), float(input_hw[1])
    resize = np.float32(scale)
    inds = np.where(scores > confidence_threshold)[0]  # step 4
    order = scores[inds].argsort()[::-1]  # step 5: the scripts' own call
    if top_k:
        order = order[:top_k]
    rows = inds[order]
    box_scale = np.array([width, height, width, height], dtype=np.float32)
    boxes = decode_center_variance(loc[rows], priors[rows], variances) * box_scale / resize
    points = decode_landmarks(landms[rows], priors[rows], variances)
    points = points * np.tile(box_scale[:2], 5) / resize
    dets = np.hstack((boxes, scores[rows, None])).astype(np.float32, copy=False)
    keep = nms_in_order(dets[:, :4], dets[:, 4].argsort()[::-1], nms_threshold, pixel_offset=1)
    if keep_top_k:
        keep = keep[:keep_top_k]
    return dets[keep].reshape(-1, 5), points[keep].astype(np.float32).reshape(-1, 10)
