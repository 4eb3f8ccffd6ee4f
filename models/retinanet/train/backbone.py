"""The ImageNet backbone a training run starts from, frozen stages, and random init.

Backbone weights (`--weights`): the MSRA ResNet-50 that detectron2's RetinaNet configs
start from (ImageNetPretrained/MSRA/R-50.pkl, Caffe2 blob names, BGR input with the pixel
mean subtracted and std 1, stride in the 1x1 convs: what this network is), or any file in
detectron2's layout (a converted backbone with keys `stem.*` / `res2.*`..., or a whole
RetinaNet checkpoint, whose FPN and head are then loaded as well). torchvision's
ResNet-50 (mmdetection's `torchvision://resnet50`) has another structure (stride in the
3x3 convs) and input normalization (RGB, divided by the std): it is refused with a
UserError rather than loaded into the wrong places.

Without weights the run starts from a random init made trainable by `calibrate`: a
random ResNet-50's FrozenBN layers start as identities, so on mean-subtracted (not
std-scaled) input its features reach a std of ~1000 and the first losses are in the
thousands, then NaN. `calibrate` sets every FrozenBN's statistics from a first forward
pass over real training images, so each layer's output starts normalized, as a
pretrained backbone's is (a data-dependent init; the layers stay frozen after it).
"""

import os
import re

from zoostage.errors import UserError

MSRA_R50_URL = "https://dl.fbaipublicfiles.com/detectron2/ImageNetPretrained/MSRA/R-50.pkl"
BOTTOM_UP = "backbone.bottom_up."
# Frozen like mmdet's frozen_stages=1 / detectron2's FREEZE_AT=2: the stem and res2.
FROZEN_PREFIXES = (BOTTOM_UP + "stem.", BOTTOM_UP + "res2.")

_C2_BLOCK = re.compile(r"^res(\d)_(\d+)_branch(1|2a|2b|2c)_(w|b|bn_s|bn_b|bn_rm|bn_riv)$")
_C2_BRANCH = {"1": "shortcut", "2a": "conv1", "2b": "conv2", "2c": "conv3"}
_C2_PART = {
    "w": "weight",
    "b": "bias",
    "bn_s": "norm.weight",
    "bn_b": "norm.bias",
    "bn_rm": "norm.running_mean",
    "bn_riv": "norm.running_var",
}
_C2_STEM = {
    "conv1_w": "stem.conv1.weight",
    "res_conv1_bn_s": "stem.conv1.norm.weight",
    "res_conv1_bn_b": "stem.conv1.norm.bias",
    "res_conv1_bn_rm": "stem.conv1.norm.running_mean",
    "res_conv1_bn_riv": "stem.conv1.norm.running_var",
}


def caffe2_to_detectron2(name):
    """A Caffe2 ResNet blob name -> the detectron2 ResNet key, or None (not a ResNet blob)."""
    if name in _C2_STEM:
        return _C2_STEM[name]
    found = _C2_BLOCK.match(name)
    if not found:
        return None
    stage, block, branch, part = found.groups()
    return "res%s.%s.%s.%s" % (stage, block, _C2_BRANCH[branch], _C2_PART[part])


def _looks_torchvision(keys):
    return any(k.startswith("layer1.") or k.startswith("bn1.") for k in keys)


def backbone_state(weights):
    """{model key: array} from a checkpoint's flat dict (see the module doc); notes too."""
    keys = list(weights)
    notes = {"format": None, "ignored": []}
    mapped = {}
    if any(k in _C2_STEM or _C2_BLOCK.match(k) for k in keys):
        notes["format"] = "caffe2 (MSRA)"
        for key in keys:
            target = caffe2_to_detectron2(key)
            if target is None:
                notes["ignored"].append(key)
            else:
                mapped[BOTTOM_UP + target] = weights[key]
    elif any(k.startswith("backbone.") or k.startswith("head.") for k in keys):
        notes["format"] = "detectron2 (model)"
        mapped = dict(weights)
    elif any(k.startswith("stem.") or re.match(r"^res\d\.", k) for k in keys):
        notes["format"] = "detectron2 (backbone)"
        for key in keys:
            if key.startswith("stem.") or re.match(r"^res\d\.", key):
                mapped[BOTTOM_UP + key] = weights[key]
            else:
                notes["ignored"].append(key)
    elif _looks_torchvision(keys):
        raise UserError(
            "the weights file holds a torchvision-style ResNet (conv1 / bn1 / layer1..4): "
            "this RetinaNet has detectron2's MSRA ResNet (stride in the 1x1 convs, BGR input "
            "with the mean subtracted, std 1). Start from the MSRA ResNet-50 instead: %s"
            % MSRA_R50_URL
        )
    else:
        raise UserError(
            "the weights file holds no ResNet backbone this RetinaNet knows (first keys: %s); "
            "use the MSRA ResNet-50 (%s) or a detectron2 checkpoint"
            % (", ".join(sorted(keys)[:4]), MSRA_R50_URL)
        )
    return mapped, notes


def load_backbone(model, path):
    """Load ImageNet (or detectron2) weights into `model`; returns notes for train.json.

    Every key of the backbone's ResNet must be found (the FrozenBN running statistics may
    be absent, as in the MSRA file, whose BN is folded into scale and bias: they keep the
    identity values). Keys for the FPN and head are loaded when the file has them.
    """
    import torch

    from models.retinanet.checkpoint import clean_state_dict, read_checkpoint

    weights, _ = clean_state_dict(read_checkpoint(path))
    mapped, notes = backbone_state(weights)
    expected = model.state_dict()
    missing = [
        k
        for k in expected
        if k.startswith(BOTTOM_UP)
        and k not in mapped
        and not k.endswith(("running_mean", "running_var"))
    ]
    if missing:
        raise UserError(
            "weights file %s lacks %d backbone keys (e.g. %s): not a ResNet-50"
            % (path, len(missing), ", ".join(sorted(missing)[:3]))
        )
    unknown = sorted(k for k in mapped if k not in expected)
    wrong = sorted(
        k
        for k in mapped
        if k in expected and tuple(getattr(mapped[k], "shape", ())) != tuple(expected[k].shape)
    )
    if wrong:
        raise UserError(
            "weights file %s has %d keys of the wrong shape (e.g. %s %s, expected %s): not a "
            "ResNet-50 / this RetinaNet"
            % (
                path,
                len(wrong),
                wrong[0],
                list(getattr(mapped[wrong[0]], "shape", ())),
                list(expected[wrong[0]].shape),
            )
        )
    import numpy as np

    from models.common.checkpoint import check_finite

    check_finite(dict((k, v) for k, v in mapped.items() if k in expected), "weights file %s" % path)

    state = {}
    for key, value in mapped.items():
        if key in expected:
            if isinstance(value, np.ndarray):
                value = np.array(value, copy=True)  # pickled arrays may be read-only
            state[key] = torch.as_tensor(value).to(expected[key].dtype).clone()
    model.load_state_dict(state, strict=False)
    notes.update(
        file=os.path.abspath(path),
        loaded=len(state),
        unknown=unknown[:20],
        head_loaded=any(k.startswith("head.") for k in state),
    )
    notes["ignored"] = sorted(notes["ignored"])[:20]
    return notes


def freeze(model, prefixes=FROZEN_PREFIXES):
    """requires_grad: False for the stem and res2, True for every other parameter."""
    frozen = 0
    for name, parameter in model.named_parameters():
        stop = name.startswith(tuple(prefixes))
        parameter.requires_grad_(not stop)
        frozen += parameter.numel() if stop else 0
    return frozen


def calibrate(resnet, inputs, eps=1e-2):
    """Set every FrozenBN statistic of `resnet` (the bottom-up ResNet) from one forward
    pass over `inputs` (N, 3, H, W): each layer then normalizes what it sees.

    Layer by layer in forward order, so each sees its input normalized by the layers
    before it; `eps` keeps a dead channel (variance 0) from dividing by ~0.
    """
    import torch

    from models.retinanet import net

    def set_statistics(module, args):
        module.running_mean.copy_(args[0].mean(dim=(0, 2, 3)))
        module.running_var.copy_(args[0].var(dim=(0, 2, 3)) + eps)

    hooks = [
        m.register_forward_pre_hook(set_statistics)
        for m in resnet.modules()
        if isinstance(m, net.FrozenBatchNorm2d)
    ]
    try:
        with torch.no_grad():
            resnet(inputs)
    finally:
        for hook in hooks:
            hook.remove()
    return len(hooks)


def calibrated_backbone(inputs, seed=1):
    """A random ResNet-50's state dict (detectron2 backbone keys), calibrated on `inputs`:
    a backbone file for tests and benchmarks without ImageNet weights."""
    from models.retinanet import net

    resnet = net.build_model(seed=seed).backbone.bottom_up
    calibrate(resnet, inputs)
    return resnet.state_dict()
