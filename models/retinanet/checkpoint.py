"""detectron2 RetinaNet checkpoints into net.RetinaNet, strictly.

Two file kinds are read:
- a detectron2 model-zoo `.pkl` (e.g. model_final_5bd44e.pkl): a plain pickle of
  {"model": {name: numpy array}, "__author__": ..., "matching_heuristics": ...}, loaded
  with encoding="latin1" (some were written by Python 2);
- a torch file (`torch.save` of a state dict, or detectron2's training checkpoint
  {"model": state_dict, "optimizer": ..., ...}), through models.common.checkpoint.

Keys detectron2 keeps beside the weights are accepted and dropped, each recorded:
`pixel_mean` / `pixel_std` (preprocessing: the data stage owns it),
`anchor_generator.cell_anchors.N` (compared with anchors.py first: different anchors
mean a different model, a UserError), and `*.num_batches_tracked` (a BN counter). Any
other missing or unexpected key, or a wrong shape, is a UserError naming the keys.

Neither kind runs code the file may carry: a .pkl may hold numpy arrays and plain
containers only, a torch file tensors, numpy arrays and plain containers
(zoostage.unpickle); anything else is refused with a UserError naming what it holds.
"""

import os

import numpy as np

from models.common.checkpoint import (
    cache_hint,
    load_strict,
    read_torch_checkpoint,
    refused,
    strip_prefix,
)
from models.retinanet import anchors as anchor_lib
from zoostage.errors import UserError
from zoostage.unpickle import Refused, load_pickle

PREPROCESSING_KEYS = ("pixel_mean", "pixel_std")
CELL_ANCHORS_PREFIX = "anchor_generator.cell_anchors."
_ZIP_MAGIC = b"PK\x03\x04"


def _unwrap(data, path):
    if isinstance(data, dict):
        for key in ("model", "state_dict"):
            if isinstance(data.get(key), dict):
                return strip_prefix(data[key])
        # Detectron (v1) / Caffe2 pickles keep their weights under "blobs": let the key
        # comparison say what they are.
        if isinstance(data.get("blobs"), dict):
            return dict(data["blobs"])
        return strip_prefix(data)
    raise UserError("checkpoint %s holds a %s, not a state dict" % (path, type(data).__name__))


def read_checkpoint(path):
    """{name: array or tensor} from a detectron2 .pkl or a torch checkpoint file."""
    if not os.path.isfile(path):
        raise UserError("weights file not found: %s" % path)
    with open(path, "rb") as handle:
        head = handle.read(4)
    if head == _ZIP_MAGIC:  # torch >= 1.6 zip format
        return read_torch_checkpoint(path, numpy=True)
    try:
        with open(path, "rb") as handle:
            data = load_pickle(handle, encoding="latin1")
    except Refused as error:
        raise refused(path, error) from None
    except Exception as error:  # pickle raises many types for a damaged file
        raise UserError(
            "cannot read checkpoint %s (truncated, or neither a detectron2 .pkl "
            "nor a torch file): %s%s" % (path, str(error) or type(error).__name__, cache_hint(path))
        ) from None
    if isinstance(data, int):
        # torch's legacy (pre-1.6) format is a sequence of pickles that starts with a
        # magic number: hand it to torch.
        return read_torch_checkpoint(path, numpy=True)
    return _unwrap(data, path)


def _as_array(value):
    if hasattr(value, "detach"):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def clean_state_dict(state_dict):
    """(weights only, notes): drop and check what detectron2 stores beside the weights."""
    weights = {}
    notes = {"dropped": []}
    expected_cells = [anchor_lib.cell_anchors(sizes) for sizes in anchor_lib.SIZES]
    for key, value in state_dict.items():
        if key in PREPROCESSING_KEYS:
            notes["dropped"].append(key)
            notes[key] = [float(v) for v in _as_array(value).reshape(-1)]
        elif key.startswith(CELL_ANCHORS_PREFIX):
            level = key[len(CELL_ANCHORS_PREFIX) :]
            found = _as_array(value).astype(np.float32)
            if not level.isdigit() or int(level) >= len(expected_cells):
                raise UserError("checkpoint has anchors for a level this RetinaNet lacks: %s" % key)
            wanted = expected_cells[int(level)]
            if found.shape != wanted.shape or not np.allclose(found, wanted, atol=1e-3):
                raise UserError(
                    "checkpoint %s holds anchors %s, not RetinaNet R50-FPN's %s: it was trained "
                    "with other anchor sizes or ratios"
                    % (key, found.reshape(-1, 4)[:3].tolist(), wanted[:3].tolist())
                )
            notes["dropped"].append(key)
        elif key.endswith(".num_batches_tracked"):
            notes["dropped"].append(key)
        else:
            weights[key] = value
    notes["dropped"].sort()
    return weights, notes


def _to_tensors(state_dict):
    """Numpy float arrays -> float32 tensors (copied: pickled arrays may be read-only)."""
    import torch

    result = {}
    for key, value in state_dict.items():
        if isinstance(value, np.ndarray) and value.dtype.kind == "f":
            value = torch.from_numpy(np.array(value, dtype=np.float32, copy=True))
        result[key] = value
    return result


def load_weights(model, path):
    """Load `path` into `model` strictly; returns notes (keys loaded, keys dropped)."""
    weights, notes = clean_state_dict(read_checkpoint(path))
    load_strict(model, _to_tensors(weights), source="checkpoint %s" % os.path.basename(path))
    notes["keys"] = len(weights)
    return notes
