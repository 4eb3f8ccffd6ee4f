"""RetinaFace test-time postprocessing, as Pytorch_Retinaface's test_widerface.py.

For one image: keep priors whose face score is > 0.02, decode their boxes and landmarks
with variances (0.1, 0.2), scale from normalized to network-input pixels and back to the
original image by the preprocessing's resize factor, keep the 5000 best, NMS at IoU 0.4,
keep the 750 best. Vectorized numpy; float32 arithmetic like the reference's tensors.

The reference's NMS (py_cpu_nms) measures boxes in inclusive pixels: widths are
x2 - x1 + 1 (`pixel_offset=1` of the shared nms).
"""

import numpy as np

from models.common.boxes import decode_center_variance, nms
from models.retinaface import CFG_MNET

CONFIDENCE_THRESHOLD = 0.02
TOP_K = 5000
NMS_THRESHOLD = 0.4
KEEP_TOP_K = 750


def decode_landmarks(pre, priors, variances):
    """(N, 10) landmark deltas -> (N, 10) x, y pairs in the priors' (normalized) units."""
    pre = np.asarray(pre, dtype=np.float32).reshape(-1, 5, 2)
    priors = np.asarray(priors, dtype=np.float32)
    points = priors[:, None, :2] + pre * variances[0] * priors[:, None, 2:]
    return points.reshape(-1, 10)


def detect(
    loc,
    conf,
    landms,
    priors,
    input_hw,
    scale=1.0,
    variances=None,
    confidence_threshold=CONFIDENCE_THRESHOLD,
    top_k=TOP_K,
    nms_threshold=NMS_THRESHOLD,
    keep_top_k=KEEP_TOP_K,
):
    """Detections of one image from the network's outputs.

    loc (A, 4), conf (A, 2) softmaxed (column 1 is the face score), landms (A, 10),
    priors (A, 4) normalized (cx, cy, w, h) for the (H, W) network input `input_hw`;
    `scale` is the resize factor original -> input (input pixels = original * scale).

    Returns (dets, landmarks): dets (K, 5) float32 x1, y1, x2, y2, score in original-image
    pixels, sorted by score (highest first); landmarks (K, 10) float32 x, y pairs. K = 0
    gives arrays of shape (0, 5) and (0, 10).
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
    scale = float(scale)
    # Decoding is per prior, so thresholding first gives the reference's numbers faster.
    inds = np.nonzero(scores > confidence_threshold)[0]
    order = inds[np.argsort(-scores[inds], kind="stable")[:top_k]]
    box_scale = np.array([width, height, width, height], dtype=np.float32)
    boxes = decode_center_variance(loc[order], priors[order], variances) * box_scale / scale
    points = decode_landmarks(landms[order], priors[order], variances)
    points = points * np.tile(box_scale[:2], 5) / scale
    kept_scores = scores[order]
    keep = nms(boxes, kept_scores, nms_threshold, pixel_offset=1)
    keep = keep[:keep_top_k]
    dets = np.concatenate([boxes[keep], kept_scores[keep, None]], axis=1).astype(np.float32)
    return dets.reshape(-1, 5), points[keep].astype(np.float32).reshape(-1, 10)
