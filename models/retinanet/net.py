"""RetinaNet R50-FPN with detectron2's module names, so its checkpoints load key for key.

    RetinaNet
      backbone            FPN
        bottom_up         ResNet-50: stem + res2..res5 (BottleneckBlock, FrozenBN,
                          stride in the 1x1 conv: MSRA weights)
        fpn_lateral3..5   1x1 convs on res3..res5       (bias, no norm)
        fpn_output3..5    3x3 convs giving P3..P5
        top_block.p6, p7  P6 = conv s2 (res5), P7 = conv s2 (relu(P6))  (LastLevelP6P7)
      head                RetinaNetHead: cls_subnet / bbox_subnet (4 x conv3x3 + ReLU),
                          cls_score (A * K), bbox_pred (A * 4)

Module names follow detectron2 (modeling/backbone/resnet.py, fpn.py, meta_arch/retinanet.py,
layers/batch_norm.py); the code is this project's. Test-time pre- and postprocessing stay
outside `forward` (detectron2's convention): forward takes the normalized, padded image and
returns the dense predictions, concatenated over levels.

Requires torch >= 1.5 APIs only (the export env runs torch 1.10.1).
"""

import math

import torch
from torch import nn
from torch.nn import functional as F

from models.retinanet import NUM_CLASSES
from models.retinanet.anchors import NUM_CELL_ANCHORS

# ResNet-50: blocks per stage res2..res5.
RESNET50_BLOCKS = (3, 4, 6, 3)


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm with fixed statistics and affine terms, all four kept as buffers.

    Keys: weight, bias, running_mean, running_var (no num_batches_tracked). Like
    detectron2's, a fresh one is the identity: running_var starts at 1 - eps.
    """

    def __init__(self, num_features, eps=1e-5):
        super(FrozenBatchNorm2d, self).__init__()
        self.num_features = num_features
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features) - eps)

    def forward(self, x):
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        shift = self.bias - self.running_mean * scale
        return x * scale.reshape(1, -1, 1, 1) + shift.reshape(1, -1, 1, 1)

    def extra_repr(self):
        return "%d, eps=%g" % (self.num_features, self.eps)


class Conv2dNorm(nn.Conv2d):
    """A conv followed by an optional `norm` submodule: detectron2's layers.Conv2d keys."""

    def __init__(self, *args, **kwargs):
        norm = kwargs.pop("norm", None)
        super(Conv2dNorm, self).__init__(*args, **kwargs)
        self.norm = norm

    def forward(self, x):
        x = super(Conv2dNorm, self).forward(x)
        if self.norm is not None:
            x = self.norm(x)
        return x


def _msra_fill(conv):
    """detectron2 c2_msra_fill: kaiming normal, fan_out, relu gain; zero bias."""
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    if conv.bias is not None:
        nn.init.constant_(conv.bias, 0)


def _xavier_fill(conv):
    """detectron2 c2_xavier_fill: kaiming uniform with a=1; zero bias."""
    nn.init.kaiming_uniform_(conv.weight, a=1)
    if conv.bias is not None:
        nn.init.constant_(conv.bias, 0)


class BasicStem(nn.Module):
    """conv 7x7 s2 + FrozenBN + ReLU, then max-pool 3x3 s2: stride 4."""

    def __init__(self, in_channels=3, out_channels=64):
        super(BasicStem, self).__init__()
        self.conv1 = Conv2dNorm(
            in_channels,
            out_channels,
            kernel_size=7,
            stride=2,
            padding=3,
            bias=False,
            norm=FrozenBatchNorm2d(out_channels),
        )
        _msra_fill(self.conv1)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        return F.max_pool2d(x, kernel_size=3, stride=2, padding=1)


class BottleneckBlock(nn.Module):
    """1x1 -> 3x3 -> 1x1 with a projection shortcut when channels change.

    stride_in_1x1 (MSRA / Caffe2 ResNets, detectron2's RESNETS.STRIDE_IN_1X1 default):
    a stride-2 block downsamples in its first 1x1 conv, not in the 3x3.
    """

    def __init__(
        self, in_channels, out_channels, bottleneck_channels, stride=1, stride_in_1x1=True
    ):
        super(BottleneckBlock, self).__init__()
        if in_channels != out_channels:
            self.shortcut = Conv2dNorm(
                in_channels,
                out_channels,
                kernel_size=1,
                stride=stride,
                bias=False,
                norm=FrozenBatchNorm2d(out_channels),
            )
        else:
            self.shortcut = None
        stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
        # Written out as detectron2's BottleneckBlock does (a deliberate repetition): the
        # attribute names conv1 / conv2 / conv3 are the checkpoint's keys.
        self.conv1 = Conv2dNorm(
            in_channels,
            bottleneck_channels,
            kernel_size=1,
            stride=stride_1x1,
            bias=False,
            norm=FrozenBatchNorm2d(bottleneck_channels),
        )
        self.conv2 = Conv2dNorm(
            bottleneck_channels,
            bottleneck_channels,
            kernel_size=3,
            stride=stride_3x3,
            padding=1,
            bias=False,
            norm=FrozenBatchNorm2d(bottleneck_channels),
        )
        self.conv3 = Conv2dNorm(
            bottleneck_channels,
            out_channels,
            kernel_size=1,
            bias=False,
            norm=FrozenBatchNorm2d(out_channels),
        )
        for conv in (self.conv1, self.conv2, self.conv3, self.shortcut):
            if conv is not None:
                _msra_fill(conv)

    def forward(self, x):
        out = F.relu(self.conv1(x))
        out = F.relu(self.conv2(out))
        out = self.conv3(out)
        shortcut = self.shortcut(x) if self.shortcut is not None else x
        return F.relu(out + shortcut)


class ResNet(nn.Module):
    """ResNet body: `stem`, `res2`..`res5` (nn.Sequential of blocks); returns res3..res5."""

    def __init__(
        self,
        blocks=RESNET50_BLOCKS,
        stem_channels=64,
        res2_channels=256,
        bottleneck_channels=64,
        stride_in_1x1=True,
    ):
        super(ResNet, self).__init__()
        self.stem = BasicStem(3, stem_channels)
        in_channels, out_channels, inner = stem_channels, res2_channels, bottleneck_channels
        for index, count in enumerate(blocks):
            stride = 1 if index == 0 else 2
            stage = []
            for block in range(count):
                stage.append(
                    BottleneckBlock(
                        in_channels,
                        out_channels,
                        inner,
                        stride=stride if block == 0 else 1,
                        stride_in_1x1=stride_in_1x1,
                    )
                )
                in_channels = out_channels
            self.add_module("res%d" % (index + 2), nn.Sequential(*stage))
            out_channels *= 2
            inner *= 2
        self.out_channels = in_channels

    def forward(self, x):
        x = self.stem(x)
        c2 = self.res2(x)
        c3 = self.res3(c2)
        c4 = self.res4(c3)
        c5 = self.res5(c4)
        return c3, c4, c5


class LastLevelP6P7(nn.Module):
    """P6 and P7 from C5 (in_feature "res5" for RetinaNet): conv s2, then conv s2 of relu."""

    def __init__(self, in_channels, out_channels):
        super(LastLevelP6P7, self).__init__()
        self.p6 = nn.Conv2d(in_channels, out_channels, 3, 2, 1)
        self.p7 = nn.Conv2d(out_channels, out_channels, 3, 2, 1)
        for conv in (self.p6, self.p7):
            _xavier_fill(conv)

    def forward(self, c5):
        p6 = self.p6(c5)
        p7 = self.p7(F.relu(p6))
        return p6, p7


class FPN(nn.Module):
    """Feature pyramid on res3..res5 (strides 8, 16, 32) plus P6, P7: five 256-channel maps.

    Top-down: P5' = lateral5(C5); P4' = lateral4(C4) + up2(P5'); P3' likewise; each output
    is a 3x3 conv of its merged map ("sum" fusion, nearest 2x upsampling).
    """

    def __init__(self, bottom_up, in_channels=(512, 1024, 2048), out_channels=256):
        super(FPN, self).__init__()
        self.bottom_up = bottom_up
        for stage, channels in zip((3, 4, 5), in_channels):
            lateral = nn.Conv2d(channels, out_channels, kernel_size=1)
            output = nn.Conv2d(out_channels, out_channels, kernel_size=3, stride=1, padding=1)
            _xavier_fill(lateral)
            _xavier_fill(output)
            self.add_module("fpn_lateral%d" % stage, lateral)
            self.add_module("fpn_output%d" % stage, output)
        self.top_block = LastLevelP6P7(in_channels[-1], out_channels)
        self.out_channels = out_channels

    def forward(self, x):
        c3, c4, c5 = self.bottom_up(x)
        m5 = self.fpn_lateral5(c5)
        m4 = self.fpn_lateral4(c4) + F.interpolate(m5, scale_factor=2.0, mode="nearest")
        m3 = self.fpn_lateral3(c3) + F.interpolate(m4, scale_factor=2.0, mode="nearest")
        p6, p7 = self.top_block(c5)
        return [self.fpn_output3(m3), self.fpn_output4(m4), self.fpn_output5(m5), p6, p7]


def permute_to_n_hwa_k(tensor, k):
    """(N, A * K, H, W) -> (N, H * W * A, K): location-major, then anchor, then K.

    The one place the dense head layout is flattened (detectron2's permute_to_N_HWA_K).
    """
    n, _, h, w = tensor.shape
    tensor = tensor.reshape(n, -1, k, h, w)
    tensor = tensor.permute(0, 3, 4, 1, 2)
    return tensor.reshape(n, -1, k)


class RetinaNetHead(nn.Module):
    """Shared over levels: two subnets of `num_convs` conv3x3 + ReLU, then the predictors.

    cls_score: (N, A * K, H, W) logits; bbox_pred: (N, A * 4, H, W) deltas. The
    classification bias starts at -log((1 - p) / p), p = prior_prob (focal-loss paper).
    """

    def __init__(
        self,
        in_channels=256,
        num_classes=NUM_CLASSES,
        num_anchors=NUM_CELL_ANCHORS,
        num_convs=4,
        prior_prob=0.01,
    ):
        super(RetinaNetHead, self).__init__()
        cls_subnet, bbox_subnet = [], []
        for _ in range(num_convs):
            cls_subnet += [nn.Conv2d(in_channels, in_channels, 3, 1, 1), nn.ReLU()]
            bbox_subnet += [nn.Conv2d(in_channels, in_channels, 3, 1, 1), nn.ReLU()]
        self.cls_subnet = nn.Sequential(*cls_subnet)
        self.bbox_subnet = nn.Sequential(*bbox_subnet)
        self.cls_score = nn.Conv2d(in_channels, num_anchors * num_classes, 3, 1, 1)
        self.bbox_pred = nn.Conv2d(in_channels, num_anchors * 4, 3, 1, 1)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, mean=0.0, std=0.01)
                nn.init.constant_(module.bias, 0.0)
        nn.init.constant_(self.cls_score.bias, -math.log((1 - prior_prob) / prior_prob))
        self.num_classes = num_classes

    def forward(self, features):
        """Per-level lists: logits (N, A * K, H, W) and deltas (N, A * 4, H, W)."""
        logits, deltas = [], []
        for feature in features:
            logits.append(self.cls_score(self.cls_subnet(feature)))
            deltas.append(self.bbox_pred(self.bbox_subnet(feature)))
        return logits, deltas


class RetinaNet(nn.Module):
    """The whole network; forward(images) -> (cls_logits, box_deltas).

    images: (N, 3, H, W) float32, BGR, PIXEL_MEAN_BGR subtracted (std 1), padded with 0
    after normalization; H and W multiples of 32 (FPN's 2x upsampling must line up).
    Returns cls_logits (N, R, num_classes) and box_deltas (N, R, 4), levels P3..P7
    concatenated in detectron2's (level, location, anchor) order; see anchors.py.
    """

    def __init__(self, num_classes=NUM_CLASSES):
        super(RetinaNet, self).__init__()
        self.backbone = FPN(ResNet())
        self.head = RetinaNetHead(self.backbone.out_channels, num_classes)
        self.num_classes = num_classes

    def forward_levels(self, images):
        """Per-level lists of (N, H_l * W_l * A, K) logits and (N, H_l * W_l * A, 4) deltas."""
        logits, deltas = self.head(self.backbone(images))
        return (
            [permute_to_n_hwa_k(x, self.num_classes) for x in logits],
            [permute_to_n_hwa_k(x, 4) for x in deltas],
        )

    def forward(self, images):
        logits, deltas = self.forward_levels(images)
        return torch.cat(logits, 1), torch.cat(deltas, 1)


class TopKCandidates(nn.Module):
    """RetinaNet plus the first, dense part of its test-time filtering, for export.

    The dense logits are R x 80 floats per image (108 MB at 1344 x 1344): copying them off
    a device costs more than the network on a fast one. This wrapper keeps, per level,
    the `topk` best (anchor, class) logits in the graph and returns

        logits      (N, C)      those logits, best first within each level
        indices     (N, C)      their flat indices r * K + k into the dense (R, K) grid
        box_deltas  (N, R, 4)   the dense deltas (5.4 MB at 1344)

    with C = sum over levels of min(topk, H_l * W_l * A * K). Logits, not scores: the host
    takes the sigmoid in float32 as it does for dense outputs, so a float16 device gives
    both paths the same scores. Top-k then threshold keeps exactly detectron2's
    threshold-then-top-k candidates (up to equal logits), so the host's decode and NMS
    (postprocess.Postprocessor.detect_candidates) give the same detections.
    """

    def __init__(self, model, input_hw, topk=1000):
        super(TopKCandidates, self).__init__()
        from models.retinanet.anchors import level_counts

        self.model = model
        self.num_classes = model.num_classes
        self.level_counts = level_counts(input_hw)
        self.topk = [min(int(topk), count * model.num_classes) for count in self.level_counts]

    def forward(self, images):
        logits, deltas = self.model.forward_levels(images)
        best, indices = [], []
        start = 0
        for level, count, k in zip(logits, self.level_counts, self.topk):
            values, index = level.reshape(level.shape[0], -1).topk(k, dim=1)
            best.append(values)
            indices.append(index + start * self.num_classes)
            start += count
        return torch.cat(best, 1), torch.cat(indices, 1), torch.cat(deltas, 1)


def build_model(weights=None, seed=None, num_classes=NUM_CLASSES):
    """A RetinaNet in eval mode, weights from the checkpoint file `weights` (detectron2
    .pkl or a torch checkpoint, models.retinanet.checkpoint) or its detectron2-style init,
    reproducible with `seed`."""
    if seed is not None:
        torch.manual_seed(int(seed))
    model = RetinaNet(num_classes)
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    if weights is not None:
        from models.retinanet.checkpoint import load_weights

        load_weights(model, weights)
    return model


def count_parameters(model):
    """Learnable parameters (FrozenBN statistics and affine terms are buffers, not counted)."""
    return int(sum(p.numel() for p in model.parameters()))
