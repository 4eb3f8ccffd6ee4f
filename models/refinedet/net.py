"""RefineDet320 VGG16 for VOC (21 classes), with the reference checkpoint's key names.

The state-dict keys are the public contract with RefineDet320_VOC_final.pth
(luuuyi/RefineDet.PyTorch): `vgg.<i>`, `conv4_3_L2Norm.weight`, `conv5_3_L2Norm.weight`,
`extras.<i>`, `arm_loc.<i>`, `arm_conf.<i>`, `odm_loc.<i>`, `odm_conf.<i>`, `tcb0.<i>`,
`tcb1.<i>`, `tcb2.<i>`, every `<i>` an index into an nn.ModuleList laid out as the
reference builds it (ReLU and pooling layers take indices too).

forward(image (N, 3, 320, 320)) returns, in this order (the export contract):
    arm_loc  (N, 6375, 4)   anchor refinement deltas
    arm_conf (N, 6375, 2)   softmax: background / object
    odm_loc  (N, 6375, 4)   detection deltas, relative to the refined anchors
    odm_conf (N, 6375, 21)  softmax over background + 20 VOC classes
Priors, decoding and NMS are test-time postprocessing, outside the network
(models.refinedet.priors and .postprocess).

Runs on torch 1.5 .. newest: no API newer than 1.5 here.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

NUM_CLASSES = 21
INPUT_SIZE = 320

# VGG16 up to conv5_3: channels, 'M' max-pool, 'C' max-pool with ceil_mode.
VGG_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "C", 512, 512, 512, "M", 512, 512, 512)
# Indices in `vgg` of conv4_3's and conv5_3's ReLU: their outputs, L2-normalized, are sources.
CONV4_3_RELU = 22
CONV5_3_RELU = 29
# Channels of the four sources: conv4_3, conv5_3, fc7, extras' last conv.
SOURCE_CHANNELS = (512, 512, 1024, 512)
BOXES_PER_CELL = (3, 3, 3, 3)
TCB_CHANNELS = 256
L2NORM_SCALES = (10.0, 8.0)


class L2Norm(nn.Module):
    """Channel-wise L2 normalization with a learned per-channel scale (SSD's conv4_3)."""

    def __init__(self, channels, scale, eps=1e-10):
        super(L2Norm, self).__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.full((channels,), float(scale)))

    def forward(self, x):
        norm = x.pow(2).sum(dim=1, keepdim=True).sqrt() + self.eps
        return x / norm * self.weight.view(1, -1, 1, 1)


def vgg_layers(cfg=VGG_CFG, in_channels=3):
    """VGG16 conv1_1 .. conv5_3, then pool5, dilated fc6 and fc7 as convolutions."""
    layers = []
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        elif v == "C":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True))
        else:
            layers += [nn.Conv2d(in_channels, v, kernel_size=3, padding=1), nn.ReLU()]
            in_channels = v
    layers += [
        nn.MaxPool2d(kernel_size=2, stride=2, padding=0),  # pool5
        nn.Conv2d(512, 1024, kernel_size=3, padding=3, dilation=3),  # fc6
        nn.ReLU(),
        nn.Conv2d(1024, 1024, kernel_size=1),  # fc7
        nn.ReLU(),
    ]
    return layers


def extra_layers(in_channels=1024):
    """conv6_1 (1x1, 256) and conv6_2 (3x3 stride 2, 512): the 5x5 source."""
    return [
        nn.Conv2d(in_channels, 256, kernel_size=1),
        nn.Conv2d(256, 512, kernel_size=3, stride=2, padding=1),
    ]


def head(in_channels, boxes, values):
    """One 3x3 prediction conv per source: `boxes * values` outputs per cell."""
    return [nn.Conv2d(c, n * values, kernel_size=3, padding=1) for c, n in zip(in_channels, boxes)]


def tcb_layers(channels=SOURCE_CHANNELS, width=TCB_CHANNELS):
    """Transfer connection blocks, as three flat lists indexed like the reference.

    tcb0[3k .. 3k+2]: conv3x3(c_k -> 256), ReLU, conv3x3 on source k;
    tcb1[k]: 2x2 stride-2 deconvolution of level k+1's TCB output (k < last);
    tcb2[3k .. 3k+2]: ReLU, conv3x3, ReLU after the sum.
    """
    scale, upsample, predict = [], [], []
    for k, c in enumerate(channels):
        scale += [
            nn.Conv2d(c, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1),
        ]
        predict += [nn.ReLU(), nn.Conv2d(width, width, 3, padding=1), nn.ReLU()]
        if k != len(channels) - 1:
            upsample.append(nn.ConvTranspose2d(width, width, 2, 2))
    return scale, upsample, predict


def _flatten_levels(outputs, values):
    """Per-level (N, A*values, H, W) maps -> (N, sum(H*W*A), values), cell-major order."""
    flat = [o.permute(0, 2, 3, 1).contiguous().view(o.size(0), -1) for o in outputs]
    joined = torch.cat(flat, 1)
    return joined.view(joined.size(0), -1, values)


class RefineDet(nn.Module):
    """RefineDet320 VGG16; see the module docstring for inputs, outputs and key names."""

    def __init__(self, num_classes=NUM_CLASSES, boxes_per_cell=BOXES_PER_CELL):
        super(RefineDet, self).__init__()
        self.num_classes = num_classes
        self.vgg = nn.ModuleList(vgg_layers())
        self.conv4_3_L2Norm = L2Norm(512, L2NORM_SCALES[0])
        self.conv5_3_L2Norm = L2Norm(512, L2NORM_SCALES[1])
        self.extras = nn.ModuleList(extra_layers())
        self.arm_loc = nn.ModuleList(head(SOURCE_CHANNELS, boxes_per_cell, 4))
        self.arm_conf = nn.ModuleList(head(SOURCE_CHANNELS, boxes_per_cell, 2))
        tcb_in = [TCB_CHANNELS] * len(SOURCE_CHANNELS)
        self.odm_loc = nn.ModuleList(head(tcb_in, boxes_per_cell, 4))
        self.odm_conf = nn.ModuleList(head(tcb_in, boxes_per_cell, num_classes))
        scale, upsample, predict = tcb_layers()
        self.tcb0 = nn.ModuleList(scale)
        self.tcb1 = nn.ModuleList(upsample)
        self.tcb2 = nn.ModuleList(predict)

    def sources(self, x):
        """The four ARM sources: L2-normed conv4_3 and conv5_3, fc7, conv6_2."""
        found = []
        for k, layer in enumerate(self.vgg):
            x = layer(x)
            if k == CONV4_3_RELU:
                found.append(self.conv4_3_L2Norm(x))
            elif k == CONV5_3_RELU:
                found.append(self.conv5_3_L2Norm(x))
        found.append(x)
        for k, layer in enumerate(self.extras):
            x = F.relu(layer(x))
            if k % 2 == 1:
                found.append(x)
        return found

    def transfer(self, sources):
        """TCB features, top-down: each level adds the upsampled level above it."""
        levels = len(sources)
        above = None
        result = [None] * levels
        for level in range(levels - 1, -1, -1):
            s = sources[level]
            for i in range(3):
                s = self.tcb0[level * 3 + i](s)
            if above is not None:
                s = s + self.tcb1[level](above)
            for i in range(3):
                s = self.tcb2[level * 3 + i](s)
            result[level] = s
            above = s
        return result

    def forward(self, image):
        sources = self.sources(image)
        arm_loc = _flatten_levels([m(s) for m, s in zip(self.arm_loc, sources)], 4)
        arm_conf = _flatten_levels([m(s) for m, s in zip(self.arm_conf, sources)], 2)
        tcb = self.transfer(sources)
        odm_loc = _flatten_levels([m(s) for m, s in zip(self.odm_loc, tcb)], 4)
        odm_conf = _flatten_levels([m(s) for m, s in zip(self.odm_conf, tcb)], self.num_classes)
        return arm_loc, F.softmax(arm_conf, dim=-1), odm_loc, F.softmax(odm_conf, dim=-1)


OUTPUT_NAMES = ("arm_loc", "arm_conf", "odm_loc", "odm_conf")


def build_model(weights=None, seed=0):
    """RefineDet in eval mode: weights from the checkpoint file `weights`, or a seeded
    random init."""
    from models.common.checkpoint import load_strict, read_torch_checkpoint

    if weights is None:
        torch.manual_seed(int(seed))
        model = RefineDet()
    else:
        model = RefineDet()
        load_strict(model, read_torch_checkpoint(weights), source=weights)
    return model.eval()
