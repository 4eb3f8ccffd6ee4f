"""Training checkpoints (atomic, resumable) and the ImageNet backbone the training starts from.

Work folder (`--work-dir`, the recipe's {work}/train, kept across runs):

    epoch_0001.pth ...      after every epoch (kept)
    iter_0000040.pth ...    every --checkpoint-every iterations (the newest two kept)
    last_checkpoint         the file name of the newest complete checkpoint

A checkpoint is {"model": state dict with detectron2 keys, "optimizer", "schedule",
"scaler", "iteration" (steps done), "epoch", "rng": {python, numpy, torch, device},
"config": the settings that make a resumed run continue exactly, "history": the loss log
so far}. Each is written to a temporary file in the same folder, flushed to disk and
renamed over its final name (os.replace), then `last_checkpoint` is rewritten the same
way: a run killed at any moment leaves the previous checkpoint intact and named. A
leftover temporary file is never read.

Backbone weights (`--weights`): the MSRA ResNet-50 that detectron2's RetinaNet configs
start from (ImageNetPretrained/MSRA/R-50.pkl, Caffe2 blob names, BGR input with the pixel
mean subtracted and std 1, stride in the 1x1 convs: what this network is), or any file in
detectron2's layout (a converted backbone with keys `stem.*` / `res2.*`..., or a whole
RetinaNet checkpoint, whose FPN and head are then loaded as well). torchvision's
ResNet-50 (mmdetection's `torchvision://resnet50`) has another structure (stride in the
3x3 convs) and input normalization (RGB, divided by the std): it is refused with a
UserError rather than loaded into the wrong places.
"""

import glob
import os
import re

from zoostage.errors import UserError
from zoostage.safepath import safe_name

POINTER = "last_checkpoint"
KEEP_ITER_CHECKPOINTS = 2
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


def _torch_load(path):
    # Our own files hold optimizer state and the numpy random state: tensors, numpy
    # arrays and plain containers, nothing that runs code (zoostage.unpickle).
    from zoostage.unpickle import load_torch_file

    return load_torch_file(path, numpy=True)


def save_atomic(obj, path):
    """torch.save through a temporary file in the same folder, fsync, then os.replace."""
    import torch

    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        os.makedirs(folder)
    tmp = os.path.join(folder, ".%s.tmp-%d" % (os.path.basename(path), os.getpid()))
    try:
        with open(tmp, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def _write_pointer(work_dir, name):
    tmp = os.path.join(work_dir, ".%s.tmp-%d" % (POINTER, os.getpid()))
    with open(tmp, "w") as handle:
        handle.write(name + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, os.path.join(work_dir, POINTER))


def checkpoint_name(iteration, epoch_end=None):
    if epoch_end is not None:
        return "epoch_%04d.pth" % epoch_end
    return "iter_%07d.pth" % iteration


def save_checkpoint(work_dir, state, epoch_end=None):
    """Write `state` (see the module doc) and point `last_checkpoint` at it."""
    name = checkpoint_name(state["iteration"], epoch_end)
    save_atomic(state, os.path.join(work_dir, name))
    _write_pointer(work_dir, name)
    iters = sorted(glob.glob(os.path.join(work_dir, "iter_*.pth")))
    for old in iters[:-KEEP_ITER_CHECKPOINTS]:
        if os.path.basename(old) != name:
            os.remove(old)
    return os.path.join(work_dir, name)


def _candidates(work_dir):
    """Checkpoint files, newest (most iterations) first, the pointer's choice leading."""
    files = glob.glob(os.path.join(work_dir, "iter_*.pth"))
    files += glob.glob(os.path.join(work_dir, "epoch_*.pth"))
    pointed = None
    pointer = os.path.join(work_dir, POINTER)
    if os.path.isfile(pointer):
        with open(pointer) as handle:
            name = handle.read().strip()
        # The pointer names a file in work_dir; anything else is not ours: ignored.
        if safe_name(name, single=True) and os.path.isfile(os.path.join(work_dir, name)):
            pointed = os.path.join(work_dir, name)
    files = sorted(set(files), key=os.path.getmtime, reverse=True)
    if pointed:
        files = [pointed] + [f for f in files if f != pointed]
    return files


def load_latest(work_dir):
    """(path, state) of the newest readable checkpoint in `work_dir`, or (None, None).

    An unreadable file (it cannot be a complete one: they are renamed into place) is
    skipped with a note, and the next newest is tried.
    """
    import sys

    if not os.path.isdir(work_dir):
        return None, None
    for path in _candidates(work_dir):
        try:
            state = _torch_load(path)
        except Exception as error:  # a damaged file: torch raises many types
            sys.stderr.write("note: skipping unreadable checkpoint %s (%s)\n" % (path, error))
            continue
        if isinstance(state, dict) and "model" in state and "iteration" in state:
            return path, state
    return None, None


def clear(work_dir):
    """Remove this module's checkpoint files (a fresh start with --resume no)."""
    removed = []
    for pattern in ("iter_*.pth", "epoch_*.pth", POINTER, ".*.tmp-*"):
        for path in glob.glob(os.path.join(work_dir, pattern)):
            os.remove(path)
            removed.append(os.path.basename(path))
    return removed


# -- backbone weights ----------------------------------------------------------------------
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


def calibrated_backbone(inputs, seed=1):
    """A random ResNet-50's state dict (detectron2 backbone keys) with FrozenBN statistics
    set from one forward pass over `inputs` (N, 3, H, W): each BN normalizes what it sees.

    For smoke tests and benchmarks without ImageNet weights: a plain random ResNet with
    identity FrozenBN lets activations grow through 50 layers (first losses in the
    thousands, then NaN), where a pretrained one keeps them normalized.
    """
    import torch

    from models.retinanet import net

    resnet = net.build_model(seed=seed).backbone.bottom_up

    def calibrate(module, args):
        module.running_mean.copy_(args[0].mean(dim=(0, 2, 3)))
        module.running_var.copy_(args[0].var(dim=(0, 2, 3)) + 1e-2)

    hooks = [
        m.register_forward_pre_hook(calibrate)
        for m in resnet.modules()
        if isinstance(m, net.FrozenBatchNorm2d)
    ]
    try:
        with torch.no_grad():
            resnet(inputs)
    finally:
        for hook in hooks:
            hook.remove()
    return resnet.state_dict()
