"""A CPU stand-in for torch_npu, enough for the train smoke checks.

Real torch_npu gives torch a `torch.npu` module (is_available, device_count, set_device)
and the "hccl" process-group backend; here a tensor sent to "npu:N" stays on the CPU and
"hccl" runs as gloo. FAKE_TORCH_NPU_DEVICES sets the device count (default 2);
FAKE_HCCL_BROKEN=1 makes all_reduce leave its tensor as it was (a wrong sum).
"""

import os
import types

import torch
import torch.distributed as dist

__version__ = "2.1.0.post3+fake"


def _count():
    return int(os.environ.get("FAKE_TORCH_NPU_DEVICES", "2"))


npu = types.ModuleType("torch.npu")
npu.is_available = lambda: _count() > 0
npu.device_count = _count
npu.set_device = lambda device: None
torch.npu = npu

_to = torch.Tensor.to


def _to_npu_stays_on_cpu(self, *args, **kwargs):
    if args and isinstance(args[0], str) and args[0].startswith("npu"):
        args = ("cpu", *args[1:])
    return _to(self, *args, **kwargs)


torch.Tensor.to = _to_npu_stays_on_cpu

_init = dist.init_process_group


def _init_hccl_as_gloo(backend=None, *args, **kwargs):
    return _init("gloo" if backend == "hccl" else backend, *args, **kwargs)


dist.init_process_group = _init_hccl_as_gloo

if os.environ.get("FAKE_HCCL_BROKEN"):
    dist.all_reduce = lambda tensor, *args, **kwargs: None
