"""Loading reference checkpoints into our modules, strictly, with readable errors.

State-dict key names are the public contract with the reference checkpoints: a file
with missing, unexpected or wrongly shaped keys is the wrong file, and the error says
which keys, expected vs found.
"""

import os
import zipfile

from zoostage.errors import UserError
from zoostage.unpickle import Refused, load_torch_file

# How many offending keys an error lists before it says "and N more".
_SHOWN = 5


def _listing(keys):
    keys = sorted(keys)
    shown = ", ".join(keys[:_SHOWN])
    if len(keys) > _SHOWN:
        shown += ", and %d more" % (len(keys) - _SHOWN)
    return shown


def strip_prefix(state_dict, prefix="module."):
    """Drop a prefix every key carries (DataParallel checkpoints add `module.`)."""
    if state_dict and all(key.startswith(prefix) for key in state_dict):
        return dict((key[len(prefix) :], value) for key, value in state_dict.items())
    return dict(state_dict)


def cache_hint(path):
    """'; it came from the weights cache: delete X ...' when the weights stage said so."""
    import json

    try:
        with open(os.path.join(os.path.dirname(path), "weights.json")) as handle:
            cached = json.load(handle).get("cache_file")
    except (IOError, OSError, ValueError, AttributeError):
        return ""
    if not cached:
        return ""
    return "; it came from the weights cache: delete %s and rerun to fetch it again" % cached


def _is_torchscript(path):
    """A TorchScript archive (torch.load would hand it to torch.jit.load)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("/constants.pkl") for name in archive.namelist())


def refused(path, error):
    """The UserError for a checkpoint whose pickle names a global outside the allowed set."""
    return UserError(
        "refusing checkpoint %s: %s; a checkpoint must hold only tensors and plain "
        "containers (a state dict). Use the published file, or re-save yours with "
        "torch.save(model.state_dict(), path)" % (path, error)
    )


def read_torch_checkpoint(path, numpy=False):
    """A state dict from a torch checkpoint file, unwrapping {'state_dict': ...}.

    The file is read without running code it may carry (zoostage.unpickle): only
    tensors, storages, OrderedDict and plain containers (and numpy arrays with `numpy`).
    """
    if not os.path.isfile(path):
        raise UserError("weights file not found: %s" % path)
    if _is_torchscript(path):
        raise UserError(
            "%s is a TorchScript model, not a checkpoint: pass the state dict (.pth) it "
            "was exported from" % path
        )
    try:
        data = load_torch_file(path, numpy=numpy)
    except Refused as error:
        raise refused(path, error) from None
    except Exception as error:  # torch raises many types for a damaged file
        raise UserError(
            "cannot read checkpoint %s (truncated or not a torch file): %s%s"
            % (
                path,
                str(error).splitlines()[0] if str(error) else type(error).__name__,
                cache_hint(path),
            )
        ) from None
    if isinstance(data, dict) and "state_dict" in data and isinstance(data["state_dict"], dict):
        data = data["state_dict"]
    if isinstance(data, dict) and "model" in data and isinstance(data["model"], dict):
        data = data["model"]
    if not isinstance(data, dict):
        raise UserError("checkpoint %s holds a %s, not a state dict" % (path, type(data).__name__))
    return strip_prefix(data)


def _bad_values(value):
    """(values that are nan or inf, values) of a tensor or array; (0, n) unless float."""
    if hasattr(value, "detach"):  # a torch tensor
        if not value.is_floating_point():
            return 0, int(value.numel())
        import torch

        return int((~torch.isfinite(value.detach())).sum()), int(value.numel())
    import numpy as np

    array = np.asarray(value)
    if array.dtype.kind not in "fc":
        return 0, int(array.size)
    return int((~np.isfinite(array)).sum()), int(array.size)


def check_finite(state_dict, source="checkpoint", fix="use another checkpoint"):
    """A UserError naming the first key (in the file's order) whose weights hold nan or inf.

    Such weights make every output nan: the export would then blame its own tracing, and
    inference would find nothing. The file is damaged or comes from a training run that
    diverged; nothing downstream can fix it.
    """
    for key in state_dict:
        bad, size = _bad_values(state_dict[key])
        if bad:
            raise UserError(
                "%s holds weights that are not finite numbers: %s has %d nan or inf values "
                "(of %d); the file is damaged or comes from a training run that diverged: "
                "%s" % (source, key, bad, size, fix)
            )


def load_strict(module, state_dict, source="checkpoint"):
    """Load `state_dict` into `module`; a key or shape mismatch, or a weight that is nan
    or inf, is a UserError."""
    import torch

    expected = module.state_dict()
    missing = set(expected) - set(state_dict)
    unexpected = set(state_dict) - set(expected)
    problems = []
    if missing:
        problems.append("%d missing keys (%s)" % (len(missing), _listing(missing)))
    if unexpected:
        problems.append("%d unexpected keys (%s)" % (len(unexpected), _listing(unexpected)))
    shapes = []
    for key in sorted(set(expected) & set(state_dict)):
        found = tuple(getattr(state_dict[key], "shape", ()))
        wanted = tuple(expected[key].shape)
        if found != wanted:
            shapes.append("%s expected %s found %s" % (key, list(wanted), list(found)))
    if shapes:
        problems.append(
            "%d keys of the wrong shape (%s%s)"
            % (
                len(shapes),
                "; ".join(shapes[:_SHOWN]),
                "; and %d more" % (len(shapes) - _SHOWN) if len(shapes) > _SHOWN else "",
            )
        )
    if problems:
        raise UserError(
            "%s does not fit %s: %s" % (source, type(module).__name__, "; ".join(problems))
        )
    check_finite(state_dict, source)
    tensors = dict(
        (key, value if isinstance(value, torch.Tensor) else torch.as_tensor(value))
        for key, value in state_dict.items()
    )
    module.load_state_dict(tensors, strict=True)
    return module
