"""RetinaNet training losses: sigmoid focal loss and L1 on the deltas, as mmdetection v2.9.

mmdet's RetinaHead (FocalLoss use_sigmoid, gamma 2, alpha 0.25, loss_weight 1; L1Loss
loss_weight 1; PseudoSampler, so `avg_factor` = num_total_pos):

    loss_cls = sum over non-ignored anchors a and classes k of FL(x_ak, t_ak) / N
    loss_box = sum over positive anchors a of |d_a - d*_a|_1 / N
    N = sum over the images i of the batch of max(num_pos_i, 1)

with t_ak = 1 when anchor a is a positive of class k, else 0 (negatives are all zeros),
and FL(x, t) = BCE(x, t) * (alpha t + (1 - alpha)(1 - t)) * |t - sigmoid(x)|^gamma.
N is counted on each device for its own images (mmdet v2.9 does not average it across
devices); DistributedDataParallel then averages the gradients.

Everything is computed in float32 with static shapes (masks, no boolean indexing), so
the step suits graph-mode devices (NPU) and autocast alike.
"""

import torch
from torch.nn import functional as F

ALPHA = 0.25
GAMMA = 2.0


def sigmoid_focal_loss(logits, targets, weights=None, alpha=ALPHA, gamma=GAMMA):
    """Element-wise focal loss (same shape as logits); targets are 0/1 floats.

    `weights` broadcasts against the loss (e.g. (N, R, 1) for per-anchor weights).
    """
    logits = logits.float()
    targets = targets.to(logits.dtype)
    prob = torch.sigmoid(logits)
    one_minus_pt = prob * (1 - targets) + (1 - prob) * targets
    focal = (alpha * targets + (1 - alpha) * (1 - targets)) * one_minus_pt.pow(gamma)
    loss = F.binary_cross_entropy_with_logits(logits, targets, reduction="none") * focal
    if weights is not None:
        loss = loss * weights
    return loss


def normalizer(cls_targets, num_classes):
    """N = sum over images of max(number of positive anchors, 1), as a float tensor."""
    positive = (cls_targets >= 0) & (cls_targets < num_classes)
    return positive.sum(dim=1).clamp(min=1).sum().float()


def retinanet_losses(
    cls_logits, box_deltas, cls_targets, box_targets, num_classes, alpha=ALPHA, gamma=GAMMA
):
    """{"loss_cls", "loss_box", "loss", "num_pos"} for one batch.

    cls_logits (N, R, K), box_deltas (N, R, 4): the network's outputs;
    cls_targets (N, R) int: label, K for background, < 0 ignored; box_targets (N, R, 4).
    """
    cls_targets = cls_targets.long()
    valid = (cls_targets >= 0).unsqueeze(-1).float()
    positive = ((cls_targets >= 0) & (cls_targets < num_classes)).unsqueeze(-1).float()
    classes = torch.arange(num_classes, device=cls_targets.device).view(1, 1, -1)
    onehot = (cls_targets.unsqueeze(-1) == classes).float()
    norm = normalizer(cls_targets, num_classes)
    loss_cls = sigmoid_focal_loss(cls_logits, onehot, valid, alpha, gamma).sum() / norm
    diff = (box_deltas.float() - box_targets.float()).abs() * positive
    loss_box = diff.sum() / norm
    return {
        "loss_cls": loss_cls,
        "loss_box": loss_box,
        "loss": loss_cls + loss_box,
        "num_pos": positive.sum(),
    }
