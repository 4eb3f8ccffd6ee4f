"""Training checkpoints: atomic, resumable, checked against the run they continue.

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

backbone.py loads the ImageNet backbone a run starts from.
"""

import glob
import hashlib
import os

from zoostage import cli
from zoostage.errors import UserError
from zoostage.safepath import safe_name

POINTER = "last_checkpoint"
KEEP_ITER_CHECKPOINTS = 2
# Settings a resumed run must share with the checkpoint to continue the same run exactly.
RESUME_KEYS = (
    "dataset_size",
    "dataset_ids_digest",
    "batch_size",
    "world_size",
    "seed",
    "min_size",
    "max_size",
    "pad_size",
    "profile",
    "base_lr",
    "warmup_iters",
    "warmup_ratio",
    "steps",
)


def _torch_load(path):
    # Our own files hold optimizer state and the numpy random state: tensors, numpy
    # arrays and plain containers, nothing that runs code (zoostage.unpickle).
    from zoostage.unpickle import load_torch_file

    return load_torch_file(path, numpy=True)


def check_resumable(saved, current, path):
    """A UserError when checkpoint settings `saved` differ from this run's `current`."""
    different = [
        "%s %s -> %s" % (key, saved.get(key), current.get(key))
        for key in RESUME_KEYS
        if saved.get(key) != current.get(key)
    ]
    if different:
        raise UserError(
            "checkpoint %s comes from another run (%s): pass --resume no to start over in "
            "that work folder, or use the settings it was made with" % (path, "; ".join(different))
        )


def weights_digest(state_dict):
    """sha256 over a state dict's keys and values: equal digests, equal weights."""
    digest = hashlib.sha256()
    for key in sorted(state_dict):
        digest.update(key.encode())
        digest.update(state_dict[key].detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def save_atomic(obj, path):
    """torch.save through a temporary file in the same folder, fsync, then os.replace."""
    import torch

    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        os.makedirs(folder)
    tmp = os.path.join(folder, ".%s.tmp-%d" % (os.path.basename(path), os.getpid()))
    try:
        with cli.open_new(tmp, "wb") as handle:  # the work folder outlives runs
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
    with cli.open_new(tmp) as handle:
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


def read_checkpoint(path):
    """The state in checkpoint `path` (chosen by the launcher), or a UserError."""
    try:
        state = _torch_load(path)
    except Exception as error:  # damaged since the launcher read it: torch raises many types
        raise UserError("cannot read checkpoint %s (%s)" % (path, error)) from None
    if not (isinstance(state, dict) and "model" in state and "iteration" in state):
        raise UserError("%s is not a training checkpoint" % path)
    return state


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
