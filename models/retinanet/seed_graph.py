"""The seed's RetinaNet graph up to its NMS operator, for export (`--outputs class_topk`).

ACL_PyTorch/contrib/cv/detection/Retinanet/Retinanet.diff (and Retina_aie.diff, the
Torch_AIE seed) turn detectron2's RetinaNet.inference_single_image into a traceable
graph: per level a sigmoid, the 200 best anchors of every class (torch.topk, dim 0),
their boxes decoded, the levels concatenated; the graph then ends in BatchMultiClassNMS
(an Ascend operator, torch.ops.aie.batch_nms in the Torch_AIE seed, which needs the
seed's own compiled mmdet_ops library). `ClassTopK` is that graph without the last
operator: it returns the operator's inputs,

    boxes   (N, M, K, 4)  decoded x1, y1, x2, y2 in input pixels
    scores  (N, M, K)     sigmoid scores

with M = sum over levels P3..P7 of min(200, H_l * W_l * A) (1000 at 1344 x 1344): row
l * 200 + r holds, for every class, its r-th best anchor of level l. The host finishes
with seed_postprocess.SeedPostprocessor.detect_nms_inputs (float16 rounding and the
operator's NMS). What leaves the device is 1.6 MB per image at 1344 (float32), against
114 MB of dense outputs.

Differences from the seed's graph, none of which changes which detections a correct
reading of the seed allows: batched (the seed traces one image); the top-k taken of the
logits, then the sigmoid (the seed: sigmoid, then top-k), which picks the same pairs and
orders equal float32 scores (sigmoid saturates at 1.0 from logit ~17) by logit, where the
seed leaves their order to the runtime, so that this graph and the host's dense path
agree; float32 outputs (the seed casts to float16 in the graph; the host does the same
rounding).
"""

import torch
from torch import nn

from models.common.boxes import DEFAULT_SCALE_CLAMP
from models.retinanet import anchors as anchor_lib

TOPK_PER_CLASS = 200


def decode(deltas, anchors, scale_clamp=DEFAULT_SCALE_CLAMP):
    """Box2BoxTransform.apply_deltas (weights 1) in torch, in the order of the float32
    operations of models.common.boxes.decode_deltas; deltas and anchors (..., 4).

    A deliberate fork of that numpy function: this one runs inside the exported graph
    (the seed decodes on the device), the numpy one on the host; tests/test_retinanet_seed.py
    checks that the two give the same boxes."""
    widths = anchors[..., 2] - anchors[..., 0]
    heights = anchors[..., 3] - anchors[..., 1]
    ctr_x = anchors[..., 0] + 0.5 * widths
    ctr_y = anchors[..., 1] + 0.5 * heights
    dw = torch.clamp(deltas[..., 2], max=scale_clamp)
    dh = torch.clamp(deltas[..., 3], max=scale_clamp)
    pred_ctr_x = deltas[..., 0] * widths + ctr_x
    pred_ctr_y = deltas[..., 1] * heights + ctr_y
    pred_w = torch.exp(dw) * widths
    pred_h = torch.exp(dh) * heights
    return torch.stack(
        [
            pred_ctr_x - 0.5 * pred_w,
            pred_ctr_y - 0.5 * pred_h,
            pred_ctr_x + 0.5 * pred_w,
            pred_ctr_y + 0.5 * pred_h,
        ],
        dim=-1,
    )


class ClassTopK(nn.Module):
    """RetinaNet plus the seed's per-class top-200 and box decoding (see module doc)."""

    def __init__(self, model, input_hw, topk=TOPK_PER_CLASS):
        super(ClassTopK, self).__init__()
        self.model = model
        self.num_classes = model.num_classes
        self.topk = []
        for level, anchors in enumerate(anchor_lib.grid_anchors(input_hw)):
            self.register_buffer("anchors%d" % level, torch.from_numpy(anchors.copy()))
            self.topk.append(min(int(topk), len(anchors)))

    def forward(self, images):
        logits, deltas = self.model.forward_levels(images)
        boxes, scores = [], []
        for level, (level_logits, level_deltas) in enumerate(zip(logits, deltas)):
            k = self.topk[level]
            anchors = getattr(self, "anchors%d" % level)
            # topk of the logits, then their sigmoid: the pairs topk of the scores picks,
            # with equal float32 scores (sigmoid saturates at 1.0) ordered by logit.
            best, index = level_logits.topk(k, dim=1)  # (N, k, K): per class

            flat = index.reshape(index.shape[0], -1)  # (N, k * K), rank-major
            picked = torch.gather(level_deltas, 1, flat.unsqueeze(-1).expand(-1, -1, 4))
            level_boxes = decode(picked, anchors[flat])  # (N, k * K, 4)
            boxes.append(level_boxes.reshape(index.shape[0], k, self.num_classes, 4))
            scores.append(best.sigmoid())
        return torch.cat(boxes, 1), torch.cat(scores, 1)
