"""RetinaNet R50-FPN in detectron2's layout (`retinanet_R_50_FPN_3x`), stage side.

| module         | what it holds                                   | imports  |
| -------------- | ----------------------------------------------- | -------- |
| net.py         | ResNet-50 (FrozenBN) + FPN P3..P7 + heads        | torch    |
| anchors.py     | detectron2 DefaultAnchorGenerator, on the host   | numpy    |
| postprocess.py | RetinaNet.inference_single_image + rescale, COCO | numpy    |
| checkpoint.py  | detectron2 .pkl / .pth into net.RetinaNet        | torch    |
| export.py      | the export stage: TorchScript (and ONNX)         | torch    |
| infer.py       | the infer stage: backend -> postprocess -> COCO  | numpy    |

The network's contract (what export writes and every backend runs): input the
normalized, padded BGR image (N, 3, S, S) float32 (detectron2's pixel mean subtracted,
std 1, padding 0 after normalization); outputs, by export --outputs:

    dense   cls_logits (N, R, 80)  class logits, before the sigmoid
            box_deltas (N, R, 4)   (dx, dy, dw, dh), Box2BoxTransform weights (1, 1, 1, 1)
    topk    logits (N, C), indices (N, C): each level's 1000 best (anchor, class) logits
            and their flat indices r * 80 + k (net.TopKCandidates), box_deltas (N, R, 4)

with R = sum over levels P3..P7 of H_l * W_l * 9, in detectron2's order: level, then
location (row-major), then anchor (size-major, then aspect ratio). anchors.py gives the
matching (R, 4) anchors; score filtering, decoding and NMS run on the host
(postprocess.py), with the same detections from either output kind.
"""

NUM_CLASSES = 80

# detectron2 MODEL.PIXEL_MEAN / PIXEL_STD (BGR) for MSRA weights: std is folded into conv1.
# The recipe's `input` block passes the same to the data stage (tests check they agree).
PIXEL_MEAN_BGR = (103.530, 116.280, 123.675)
PIXEL_STD_BGR = (1.0, 1.0, 1.0)
