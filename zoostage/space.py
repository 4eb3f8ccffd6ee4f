"""Disk space: check it before a big write, and reserve it so a full disk cannot kill.

A memory-mapped file is sparse until written; when the disk fills up halfway, the
process writing through the map is killed by SIGBUS, with nothing said. `allocate_npy`
checks the free space first, then reserves every block of the file (posix_fallocate),
so a full disk is one UserError before any work starts.
"""

import errno
import os

from zoostage.errors import UserError

# File systems that cannot reserve blocks answer one of these: the check stands alone.
_NO_FALLOCATE = (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS)


def human_size(size):
    """1536 -> '1.5 KiB'."""
    size = float(size)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return "%d bytes" % size if unit == "bytes" else "%.1f %s" % (size, unit)
        size /= 1024.0
    return "%.1f GiB" % size  # pragma: no cover - the loop returns


def mount_of(path):
    """(mount point, device or '') of the file system holding `path`."""
    point = os.path.realpath(path)
    while not os.path.ismount(point):
        point = os.path.dirname(point)
    device = ""
    try:
        with open("/proc/mounts") as handle:
            for line in handle:
                fields = line.split()
                if len(fields) > 1 and fields[1] == point:
                    device = fields[0]
    except (IOError, OSError):
        pass
    return point, device


def no_space(path, need, free):
    """The UserError for a write of `need` bytes to `path` where `free` bytes are left."""
    point, device = mount_of(os.path.dirname(os.path.abspath(path)) or ".")
    where = "%s (%s)" % (point, device) if device and device != point else point
    return UserError(
        "no space left on %s for %s (%s needed, %s free); free some space there, or "
        "put the artifacts on a larger disk (--artifacts)"
        % (where, path, human_size(need), human_size(free))
    )


def is_disk_full(error):
    """True for the OSError a write gets from a full disk (or a full quota)."""
    return isinstance(error, (IOError, OSError)) and error.errno in (
        errno.ENOSPC,
        getattr(errno, "EDQUOT", errno.ENOSPC),
    )


def disk_full(path):
    """The UserError for a write to `path` (a file or its folder) that met a full disk."""
    folder = path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))
    try:
        free = human_size(free_bytes(folder))
    except (IOError, OSError):
        free = "unknown"
    point, device = mount_of(folder)
    where = "%s (%s)" % (point, device) if device and device != point else point
    return UserError(
        "no space left on %s for %s (%s free); free some space there, or put the "
        "artifacts on a larger disk (--artifacts)" % (where, path, free)
    )


def free_bytes(folder):
    stat = os.statvfs(folder)
    return stat.f_bavail * stat.f_frsize


def ensure_space(path, need):
    """UserError unless the file system of `path`'s folder has `need` bytes free."""
    folder = os.path.dirname(os.path.abspath(path))
    free = free_bytes(folder)
    if need > free:
        raise no_space(path, need, free)


def weights_bytes(weights):
    """Bytes of the tensors of a module (its state dict) or of a dict of tensors."""
    state = weights.state_dict() if hasattr(weights, "state_dict") else weights
    return sum(
        int(value.numel()) * int(value.element_size())
        for value in state.values()
        if hasattr(value, "element_size")
    )


# Room a saved model needs beyond its weights: its code, graph and archive headers.
SAVE_MARGIN = 1 << 20


def ensure_space_for(path, weights):
    """UserError unless the disk of `path` holds `weights` (a module or tensors) saved.

    torch.save to a path, TorchScript's save and the ONNX exporter write from C++: on a
    full disk they raise an unrelated RuntimeError or abort the process (SIGABRT), so
    the room is checked before, as the data stage does for its store.
    """
    ensure_space(path, weights_bytes(weights) + SAVE_MARGIN)


def reserve(path):
    """Reserve every block of file `path` (its current size); UserError on a full disk."""
    if not hasattr(os, "posix_fallocate"):
        return
    handle = os.open(path, os.O_RDWR)
    try:
        size = os.fstat(handle).st_size
        os.posix_fallocate(handle, 0, size)
    except OSError as error:
        if error.errno in _NO_FALLOCATE:
            return
        if error.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
            os.close(handle)
            handle = None
            free = free_bytes(os.path.dirname(os.path.abspath(path)))
            os.remove(path)
            raise no_space(path, size, free) from None
        raise
    finally:
        if handle is not None:
            os.close(handle)


def allocate_npy(path, dtype, shape):
    """Create `path` as an .npy of zeros of `shape`, every block reserved."""
    import numpy as np

    need = int(np.prod(shape)) * np.dtype(dtype).itemsize
    ensure_space(path, need)
    array = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=tuple(shape))
    del array  # written by whoever maps it next; zeros until then
    reserve(path)
