"""RetinaFace mobilenet0.25: MobileNetV1-0.25 body, FPN, SSH context modules, three heads.

State-dict keys are those of biubug6/Pytorch_Retinaface checkpoints (mobilenet0.25_Final.pth,
300 keys, 426,608 parameters): `body.stage1.0.0.weight`, `fpn.output1.0.weight`,
`ssh1.conv7x7_3.1.running_var`, `ClassHead.0.conv1x1.weight`, ... The reference wraps its
MobileNetV1 in torchvision's IntermediateLayerGetter, which keeps the children up to the last
returned stage; `Body` reproduces that key layout (stage1..stage3, no avg / fc) without
torchvision.

The forward is the reference's test phase: (loc, softmaxed conf, landms). Decoding against
the priors and NMS are test-time postprocessing, kept outside (see `postprocess`).

Runs on torch 1.5 and newer, Python 3.7 and newer.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.retinaface import CFG_MNET

# The reference's leaky ReLU slope: every conv block of mobilenet0.25 uses it (the FPN and
# SSH use it because out_channel <= 64; wider variants use plain ReLU there).
LEAKY = 0.1


def conv_bn(inp, oup, stride=1, leaky=0.0):
    """3x3 conv (no bias) + BatchNorm + LeakyReLU; keys .0 conv, .1 bn."""
    return nn.Sequential(
        nn.Conv2d(inp, oup, 3, stride, 1, bias=False),
        nn.BatchNorm2d(oup),
        nn.LeakyReLU(negative_slope=leaky, inplace=True),
    )


def conv_bn_no_relu(inp, oup, stride=1):
    """3x3 conv (no bias) + BatchNorm, no activation."""
    return nn.Sequential(
        nn.Conv2d(inp, oup, 3, stride, 1, bias=False),
        nn.BatchNorm2d(oup),
    )


def conv_bn1x1(inp, oup, stride=1, leaky=0.0):
    """1x1 conv (no bias) + BatchNorm + LeakyReLU."""
    return nn.Sequential(
        nn.Conv2d(inp, oup, 1, stride, 0, bias=False),
        nn.BatchNorm2d(oup),
        nn.LeakyReLU(negative_slope=leaky, inplace=True),
    )


def conv_dw(inp, oup, stride, leaky=LEAKY):
    """Depthwise-separable block: 3x3 depthwise + bn + act (.0-.2), 1x1 + bn + act (.3-.5)."""
    return nn.Sequential(
        nn.Conv2d(inp, inp, 3, stride, 1, groups=inp, bias=False),
        nn.BatchNorm2d(inp),
        nn.LeakyReLU(negative_slope=leaky, inplace=True),
        nn.Conv2d(inp, oup, 1, 1, 0, bias=False),
        nn.BatchNorm2d(oup),
        nn.LeakyReLU(negative_slope=leaky, inplace=True),
    )


class Body(nn.Module):
    """MobileNetV1 x0.25, cut after stage3 (as IntermediateLayerGetter leaves it).

    Input (N, 3, H, W). Returns (c3, c4, c5):
    c3 (N, 64, H/8, W/8), c4 (N, 128, H/16, W/16), c5 (N, 256, H/32, W/32), each spatial
    size rounded up per stride-2 conv (1000 -> 125, 63, 32).
    """

    def __init__(self, width=8):
        super(Body, self).__init__()
        w = width  # 8 for x0.25 (32 * 0.25)
        # Layer by layer, as Pytorch_Retinaface's MobileNetV1 lists them (a deliberate
        # repetition): the Sequential indices are the checkpoint's keys (stage2.5.3.weight).
        self.stage1 = nn.Sequential(
            conv_bn(3, w, 2, leaky=LEAKY),
            conv_dw(w, 2 * w, 1),
            conv_dw(2 * w, 4 * w, 2),
            conv_dw(4 * w, 4 * w, 1),
            conv_dw(4 * w, 8 * w, 2),
            conv_dw(8 * w, 8 * w, 1),
        )
        self.stage2 = nn.Sequential(
            conv_dw(8 * w, 16 * w, 2),
            conv_dw(16 * w, 16 * w, 1),
            conv_dw(16 * w, 16 * w, 1),
            conv_dw(16 * w, 16 * w, 1),
            conv_dw(16 * w, 16 * w, 1),
            conv_dw(16 * w, 16 * w, 1),
        )
        self.stage3 = nn.Sequential(
            conv_dw(16 * w, 32 * w, 2),
            conv_dw(32 * w, 32 * w, 1),
        )

    def forward(self, x):
        c3 = self.stage1(x)
        c4 = self.stage2(c3)
        c5 = self.stage3(c4)
        return c3, c4, c5


class FPN(nn.Module):
    """Top-down pyramid over (c3, c4, c5): 1x1 laterals, nearest upsampling, 3x3 merges.

    Inputs with `in_channels_list` channels; returns three maps of `out_channels` channels
    at the inputs' resolutions.
    """

    def __init__(self, in_channels_list, out_channels):
        super(FPN, self).__init__()
        leaky = LEAKY if out_channels <= 64 else 0.0
        self.output1 = conv_bn1x1(in_channels_list[0], out_channels, leaky=leaky)
        self.output2 = conv_bn1x1(in_channels_list[1], out_channels, leaky=leaky)
        self.output3 = conv_bn1x1(in_channels_list[2], out_channels, leaky=leaky)
        self.merge1 = conv_bn(out_channels, out_channels, leaky=leaky)
        self.merge2 = conv_bn(out_channels, out_channels, leaky=leaky)

    def forward(self, features):
        output1 = self.output1(features[0])
        output2 = self.output2(features[1])
        output3 = self.output3(features[2])
        up3 = F.interpolate(output3, size=[output2.size(2), output2.size(3)], mode="nearest")
        output2 = self.merge2(output2 + up3)
        up2 = F.interpolate(output2, size=[output1.size(2), output1.size(3)], mode="nearest")
        output1 = self.merge1(output1 + up2)
        return output1, output2, output3


class SSH(nn.Module):
    """SSH context module: 3x3, 5x5 (two 3x3) and 7x7 (three 3x3) branches, concatenated.

    (N, in_channel, H, W) -> (N, out_channel, H, W): out/2 + out/4 + out/4 channels, ReLU.
    The reference names the last branch's convs `conv7X7_2` and `conv7x7_3` (sic).
    """

    def __init__(self, in_channel, out_channel):
        super(SSH, self).__init__()
        if out_channel % 4:
            raise ValueError("SSH out_channel must be a multiple of 4, not %d" % out_channel)
        leaky = LEAKY if out_channel <= 64 else 0.0
        quarter = out_channel // 4
        self.conv3X3 = conv_bn_no_relu(in_channel, out_channel // 2)
        self.conv5X5_1 = conv_bn(in_channel, quarter, leaky=leaky)
        self.conv5X5_2 = conv_bn_no_relu(quarter, quarter)
        self.conv7X7_2 = conv_bn(quarter, quarter, leaky=leaky)
        self.conv7x7_3 = conv_bn_no_relu(quarter, quarter)

    def forward(self, x):
        branch3 = self.conv3X3(x)
        mid = self.conv5X5_1(x)
        branch5 = self.conv5X5_2(mid)
        branch7 = self.conv7x7_3(self.conv7X7_2(mid))
        return F.relu(torch.cat([branch3, branch5, branch7], dim=1))


class _Head(nn.Module):
    """1x1 conv predicting `values` numbers per anchor, flattened to (N, H*W*anchors, values).

    The permute-to-(N, HWA, K) step is written once here; anchors vary fastest after the
    spatial position, matching the priors' order.
    """

    values = 1

    def __init__(self, inchannels=64, num_anchors=2):
        super(_Head, self).__init__()
        self.conv1x1 = nn.Conv2d(inchannels, num_anchors * self.values, kernel_size=1)

    def forward(self, x):
        out = self.conv1x1(x).permute(0, 2, 3, 1).contiguous()
        return out.view(out.shape[0], -1, self.values)


class ClassHead(_Head):
    """Face / background logits: (N, H*W*A, 2)."""

    values = 2


class BboxHead(_Head):
    """Box deltas (dx, dy, dw, dh) against the priors: (N, H*W*A, 4)."""

    values = 4


class LandmarkHead(_Head):
    """Five landmark offsets (x, y pairs) against the prior centres: (N, H*W*A, 10)."""

    values = 10


class RetinaFace(nn.Module):
    """RetinaFace with a MobileNetV1-0.25 body, the reference's test phase.

    Input: (N, 3, H, W) float32 BGR pixels minus the mean (104, 117, 123).
    Output: (loc, conf, landms) with A = sum over strides s in (8, 16, 32) of
    ceil(H/s) * ceil(W/s) * num_anchors anchors (41236 at 1000x1000, 4200 at 320x320):
        loc    (N, A, 4)  box deltas, decoded by `postprocess` with variances (0.1, 0.2);
        conf   (N, A, 2)  softmax over (background, face) when `softmax` (the default),
                          raw logits otherwise (the reference's train phase);
        landms (N, A, 10) landmark deltas.
    """

    def __init__(self, in_channel=32, out_channel=64, num_anchors=2, softmax=True):
        super(RetinaFace, self).__init__()
        self.softmax = softmax
        self.body = Body(width=in_channel // 4)
        self.fpn = FPN([in_channel * 2, in_channel * 4, in_channel * 8], out_channel)
        self.ssh1 = SSH(out_channel, out_channel)
        self.ssh2 = SSH(out_channel, out_channel)
        self.ssh3 = SSH(out_channel, out_channel)
        self.ClassHead = nn.ModuleList([ClassHead(out_channel, num_anchors) for _ in range(3)])
        self.BboxHead = nn.ModuleList([BboxHead(out_channel, num_anchors) for _ in range(3)])
        self.LandmarkHead = nn.ModuleList(
            [LandmarkHead(out_channel, num_anchors) for _ in range(3)]
        )

    @classmethod
    def from_config(cls, cfg=None, softmax=True):
        """Build from a reference-style config dict (`cfg_mnet`; the default)."""
        cfg = dict(CFG_MNET if cfg is None else cfg)
        name = cfg.get("name", "mobilenet0.25")
        if name != "mobilenet0.25":
            raise ValueError("only the mobilenet0.25 body is implemented, not %r" % (name,))
        anchors = set(len(sizes) for sizes in cfg.get("min_sizes", CFG_MNET["min_sizes"]))
        if len(anchors) != 1:
            raise ValueError("every level needs the same number of min_sizes")
        return cls(
            in_channel=int(cfg.get("in_channel", 32)),
            out_channel=int(cfg.get("out_channel", 64)),
            num_anchors=anchors.pop(),
            softmax=softmax,
        )

    def forward(self, x):
        c3, c4, c5 = self.body(x)
        p3, p4, p5 = self.fpn((c3, c4, c5))
        features = (self.ssh1(p3), self.ssh2(p4), self.ssh3(p5))
        loc = torch.cat([head(f) for head, f in zip(self.BboxHead, features)], dim=1)
        conf = torch.cat([head(f) for head, f in zip(self.ClassHead, features)], dim=1)
        landms = torch.cat([head(f) for head, f in zip(self.LandmarkHead, features)], dim=1)
        if self.softmax:
            conf = F.softmax(conf, dim=-1)
        return loc, conf, landms


OUTPUT_NAMES = ("loc", "conf", "landms")


def _fill_batch_counters(model, state_dict):
    """Checkpoints saved before torch 0.4.1 lack BatchNorm's num_batches_tracked: add them.

    Any other missing key is left for load_strict to report.
    """
    state_dict = dict(state_dict)
    for key, value in model.state_dict().items():
        if key.endswith(".num_batches_tracked") and key not in state_dict:
            state_dict[key] = torch.zeros_like(value)
    return state_dict


def build_model(weights=None, seed=0, cfg=None):
    """A RetinaFace in eval mode: from a checkpoint file, or seeded random init when None.

    The checkpoint may carry DataParallel's `module.` prefix or a {'state_dict': ...}
    wrapper. A file that is not a torch checkpoint, or whose keys or shapes do not fit,
    raises UserError naming the file and the offending keys.
    """
    from models.common.checkpoint import load_strict, read_torch_checkpoint

    if weights is None:
        torch.manual_seed(int(seed or 0))
        return RetinaFace.from_config(cfg).eval()
    model = RetinaFace.from_config(cfg)
    state_dict = read_torch_checkpoint(weights)
    load_strict(model, _fill_batch_counters(model, state_dict), source="checkpoint %s" % weights)
    return model.eval()
