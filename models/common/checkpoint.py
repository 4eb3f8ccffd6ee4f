"""Loading reference checkpoints into our modules, strictly, with readable errors.

State-dict key names are the public contract with the reference checkpoints: a file
with missing, unexpected or wrongly shaped keys is the wrong file, and the error says
which keys, expected vs found.
"""

import os

from zoostage.errors import UserError

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


def read_torch_checkpoint(path):
    """A state dict from a torch checkpoint file, unwrapping {'state_dict': ...}."""
    import torch

    if not os.path.isfile(path):
        raise UserError("weights file not found: %s" % path)
    try:
        data = torch.load(path, map_location="cpu")
    except Exception as error:  # torch raises many types for a damaged file
        if "weights only" in str(error).lower():
            # torch >= 2.6 loads weights_only by default: a file holding other Python
            # objects is not damaged, it would run code from the file to load.
            raise UserError(
                "checkpoint %s holds Python objects besides tensors (e.g. a training "
                "checkpoint with optimizer or numpy RNG state from an older version), which "
                "torch will only load by running code from the file: load it yourself if you "
                "trust it and torch.save its model state dict" % path
            ) from None
        raise UserError(
            "cannot read checkpoint %s (truncated or not a torch file): %s"
            % (path, str(error).splitlines()[0] if str(error) else type(error).__name__)
        ) from None
    if isinstance(data, dict) and "state_dict" in data and isinstance(data["state_dict"], dict):
        data = data["state_dict"]
    if isinstance(data, dict) and "model" in data and isinstance(data["model"], dict):
        data = data["model"]
    if not isinstance(data, dict):
        raise UserError("checkpoint %s holds a %s, not a state dict" % (path, type(data).__name__))
    return strip_prefix(data)


def load_strict(module, state_dict, source="checkpoint"):
    """Load `state_dict` into `module`; any key or shape mismatch is a UserError."""
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
    tensors = dict(
        (key, value if isinstance(value, torch.Tensor) else torch.as_tensor(value))
        for key, value in state_dict.items()
    )
    module.load_state_dict(tensors, strict=True)
    return module
