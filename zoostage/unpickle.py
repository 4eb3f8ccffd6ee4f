"""Reading pickles (checkpoints, detectron2 .pkl, our own caches) without running code.

A pickle names the functions that rebuild its objects, and unpickling calls them: a
crafted checkpoint can name `os.system`. Every pickle a stage reads goes through here:

- `load_torch_file(path)`: a torch checkpoint. Where the torch has `weights_only`
  (>= 1.13) and the file holds tensors only, torch's own weights-only loader reads it;
  elsewhere (torch 1.5 / 1.10, or a file that also holds numpy arrays) torch reads it
  through a restricted unpickler that knows tensors, storages, OrderedDict and plain
  containers (plus numpy arrays when asked for).
- `load_pickle(handle)`: a plain pickle (detectron2 .pkl, cached records): numpy arrays
  and plain containers only.

Anything else the file names is refused with `Refused`, an UnpicklingError saying
which global it wanted; callers turn it into their UserError.
"""

import pickle
import warnings

# Rebuilding helpers every plain pickle may name: bytes from Python 2 / protocol 2, and
# OrderedDict (a state dict's type).
PLAIN = frozenset([("_codecs", "encode"), ("collections", "OrderedDict")])

# numpy arrays, dtypes and scalars, under numpy 1's and numpy 2's module names; with
# pickle protocol 5 an array is rebuilt by numeric._frombuffer (bytes, dtype, shape).
NUMPY = (
    frozenset(
        (module, name)
        for module in ("numpy.core.multiarray", "numpy._core.multiarray")
        for name in ("_reconstruct", "scalar")
    )
    | frozenset((module, "_frombuffer") for module in ("numpy.core.numeric", "numpy._core.numeric"))
    | frozenset([("numpy", "ndarray"), ("numpy", "dtype")])
)

# torch tensors and parameters as torch.save writes them (torch 1.5 to 2.x).
TORCH = frozenset(
    [
        ("torch._utils", "_rebuild_tensor"),
        ("torch._utils", "_rebuild_tensor_v2"),
        ("torch._utils", "_rebuild_parameter"),
        ("torch", "Size"),
    ]
)


class Refused(pickle.UnpicklingError):
    """The pickle names a global outside the allowed set."""

    def __init__(self, global_name):
        self.global_name = global_name
        pickle.UnpicklingError.__init__(
            self,
            "it names %s, which is not a tensor, an array or a plain container "
            "(unpickling it could run code)" % self.global_name,
        )


class RestrictedUnpickler(pickle.Unpickler):
    """An Unpickler that resolves only the globals in `allowed` (plus torch storages)."""

    allowed = PLAIN | NUMPY
    storages = False  # torch.<X>Storage classes, named by checkpoints of torch < 2

    def find_class(self, module, name):
        if (module, name) in self.allowed or (
            self.storages and module == "torch" and name.endswith("Storage")
        ):
            try:
                return pickle.Unpickler.find_class(self, module, name)
            except ImportError:
                if not module.startswith("numpy._core"):
                    raise
                # Written under numpy 2, read under numpy 1 (torch 1.5 / 1.10 envs).
                legacy = "numpy.core" + module[len("numpy._core") :]
                return pickle.Unpickler.find_class(self, legacy, name)
        raise Refused("%s.%s" % (module, name))


class _TorchUnpickler(RestrictedUnpickler):
    allowed = PLAIN | TORCH
    storages = True


class _TorchNumpyUnpickler(RestrictedUnpickler):
    allowed = PLAIN | TORCH | NUMPY
    storages = True


def _pickle_module(unpickler):
    """What torch.load takes as `pickle_module`: an object with Unpickler and load."""

    class Module(object):
        Unpickler = unpickler

        @staticmethod
        def load(handle, **kwargs):
            return unpickler(handle, **kwargs).load()

    # torch.load compares the name with "dill" only.
    Module.__name__ = "zoostage_restricted_pickle"
    return Module


def load_pickle(handle, encoding="ASCII"):
    """Unpickle from an open binary file: numpy arrays and plain containers only."""
    return RestrictedUnpickler(handle, encoding=encoding).load()


def has_weights_only(torch):
    import inspect

    try:
        return "weights_only" in inspect.signature(torch.load).parameters
    except (TypeError, ValueError):  # a C function without a signature: an old torch
        return False


def load_torch_file(path, numpy=False):
    """torch.load(path) on the CPU, without running code the file may carry.

    `numpy`: the file may hold numpy arrays too (training checkpoints keep the numpy
    random state). Raises Refused for a global outside the allowed set; other errors
    (a damaged file) are torch's own.
    """
    import torch

    modern = has_weights_only(torch)
    if modern and not numpy:
        try:
            with warnings.catch_warnings():
                # "Detected pickle protocol 4": said again below if it matters, as a refusal.
                warnings.simplefilter("ignore", UserWarning)
                return torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as error:
            refused = _refused_by_torch(str(error))
            if refused is not None:
                raise refused from None
            # Not a refusal of a global: an opcode torch's weights-only reader lacks (a
            # state dict saved with pickle_protocol=4 or 5), or a damaged file. The
            # restricted unpickler reads every protocol with the same guard, and its error
            # for a damaged file is not torch's advice to turn the guard off.
    # The restricted unpickler is the guard here: torch < 1.13 has no weights_only, and
    # torch's weights_only refuses the numpy arrays a training checkpoint holds.
    unpickler = _TorchNumpyUnpickler if numpy else _TorchUnpickler
    kwargs = {"weights_only": False} if modern else {}
    module = _pickle_module(unpickler)
    with warnings.catch_warnings():
        # torch 2.4+ warns that weights_only=False may run code: not with this unpickler.
        warnings.simplefilter("ignore", FutureWarning)
        return torch.load(path, map_location="cpu", pickle_module=module, **kwargs)


def _refused_by_torch(text):
    """torch's weights-only refusal of a global as a Refused naming it, else None.

    torch says "Unsupported global: GLOBAL posix.system ..." (2.x) or "... unrecognized
    function <built-in function system>" (1.13 - 2.1); other weights-only errors
    ("Unsupported operand") come from data that is not a pickle at all: a damaged file.
    """
    import re

    found = re.search(r"GLOBAL ([\w.]+)", text) or re.search(r"function ([^>]+)>", text)
    return Refused(found.group(1)) if found else None
