"""A CPU stand-in for Torch_AIE, enough for zoobox's aie backend and the smoke checks.

Real torch_aie gives torch an "npu" device; here a tensor sent to "npu:N" stays on the
CPU. compile() returns the module it is given (so outputs equal the CPU's), leaving
kernel_meta/ and fusion_result.json in the current directory as CANN does. What a test
wants reported as the defaults is set through FAKE_TORCH_AIE_* variables.
"""

import os

import torch
from torch_aie import _enums

__version__ = "6.3.rc2+fake"
_devices = []


class Input(object):
    def __init__(self, shape, dtype=None):
        self.shape = tuple(shape)
        self.dtype = (
            dtype
            if dtype is not None
            else getattr(torch, os.environ.get("FAKE_TORCH_AIE_INPUT_DTYPE", "float32"))
        )


def compile(module, inputs=None, precision_policy=_enums.PrecisionPolicy.FP16, **options):
    if os.environ.get("FAKE_TORCH_AIE_COMPILE_FAILS"):
        raise RuntimeError("E19999: compile failed (fake)")
    # As CANN's op compiler and graph engine do: leftovers in the current directory.
    os.makedirs(os.path.join(os.getcwd(), "kernel_meta"), exist_ok=True)
    with open(os.path.join(os.getcwd(), "kernel_meta", "te_conv2d_fake.o"), "w") as handle:
        handle.write("fake kernel\n")
    with open(os.path.join(os.getcwd(), "fusion_result.json"), "w") as handle:
        handle.write("{}\n")
    return module


def set_device(index):
    _devices.append(int(index))


class _Npu(object):
    class Stream(object):
        def __init__(self, device):
            self.device = device

        def synchronize(self):
            pass

    class stream(object):  # torch_aie spells it so
        def __init__(self, stream):
            self.stream = stream

        def __enter__(self):
            return self.stream

        def __exit__(self, *exc):
            return False


npu = _Npu()

_to = torch.Tensor.to


def _to_npu_stays_on_cpu(self, *args, **kwargs):
    if args and isinstance(args[0], str) and args[0].startswith("npu"):
        args = ("cpu", *args[1:])
    return _to(self, *args, **kwargs)


torch.Tensor.to = _to_npu_stays_on_cpu
