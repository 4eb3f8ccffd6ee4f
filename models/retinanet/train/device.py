"""Where a training process runs: device, process group, mixed precision, RNG state.

Each function answers one question for the loop (trainer.py) and its hooks, so that the
loop itself names no device: `npu` (torch_npu imported only then; collective backend
hccl), `cuda` (nccl) or `cpu` (gloo).
"""

import contextlib
import os
import random
import sys

import numpy as np

from zoostage.errors import UserError


# -- device and process group --------------------------------------------------------------
def npu_present():
    """Ascend device nodes exist (the check zoobox.hosts.detect makes), without torch_npu."""
    import glob

    return bool(glob.glob("/dev/davinci[0-9]*"))


def resolve_device_type(requested):
    """auto -> npu (torch_npu installed and devices present), cuda, or cpu."""
    import torch

    requested = (requested or "auto").lower()
    if requested not in ("auto", "npu", "cuda", "cpu"):
        raise UserError("--device-type must be auto, npu, cuda or cpu, not %r" % requested)
    if requested == "npu" or (requested == "auto" and npu_present()):
        try:
            import torch_npu  # noqa: F401  (registers torch.npu)
        except ImportError:
            if requested == "npu":
                raise UserError(
                    "--device-type npu, but torch_npu is not installed here: run in the train "
                    "env (invoke envs.build, or the train image)"
                ) from None
        else:
            if torch.npu.is_available():
                return "npu"
            if requested == "npu":
                raise UserError("torch_npu sees no NPU: check the driver and the devices")
    if requested == "cuda" or (requested == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise UserError("--device-type cuda, but torch sees no CUDA device")
        return "cuda"
    return "cpu"


def backend_for(device_type):
    return {"npu": "hccl", "cuda": "nccl"}.get(device_type, "gloo")


def device_module(device_type):
    import torch

    return getattr(torch, device_type, None) if device_type in ("npu", "cuda") else None


def setup_device(device_type, local_rank, devices):
    import torch

    if device_type == "cpu":
        return torch.device("cpu"), "cpu"
    index = int(devices[local_rank]) if local_rank < len(devices) else local_rank
    module = device_module(device_type)
    device = torch.device("%s:%d" % (device_type, index))
    module.set_device(device)
    if device_type == "npu" and hasattr(torch.npu, "set_compile_mode"):
        # Binary (precompiled) kernels: shapes change from batch to batch.
        torch.npu.set_compile_mode(jit_compile=False)
    try:
        name = module.get_device_name(index)
    except Exception:  # the name is for the record only
        name = device_type
    return device, name


def synchronize(device_type):
    module = device_module(device_type)
    if module is not None:
        module.synchronize()


def dist_info():
    return (
        int(os.environ.get("RANK", 0)),
        int(os.environ.get("WORLD_SIZE", 1)),
        int(os.environ.get("LOCAL_RANK", 0)),
    )


def init_distributed(device_type, world_size):
    if world_size <= 1:
        return False
    import datetime

    import torch.distributed as dist

    if device_type == "npu":
        os.environ.setdefault("HCCL_WHITELIST_DISABLE", "1")
    # Long enough for rank 0's checkpoint writes and a slow first NPU compilation.
    dist.init_process_group(
        backend_for(device_type), init_method="env://", timeout=datetime.timedelta(minutes=60)
    )
    return True


def barrier(distributed):
    if distributed:
        import torch.distributed as dist

        dist.barrier()


# -- mixed precision ------------------------------------------------------------------------
def amp_dtype(amp, device_type):
    """The autocast dtype for --amp (auto/on/off) on this device, or None (float32)."""
    import torch

    amp = str(amp).lower()
    if amp in ("off", "false", "no", "0", "none"):
        return None
    if amp not in ("auto", "on", "true", "yes", "1", "fp16", "bf16"):
        raise UserError("--amp must be auto, on or off, not %r" % amp)
    if device_type in ("npu", "cuda"):
        return torch.bfloat16 if amp == "bf16" else torch.float16
    if amp == "auto":
        return None  # CPU: float32 unless asked
    if hasattr(torch, "autocast") and hasattr(torch, "bfloat16"):
        return torch.bfloat16
    sys.stderr.write("note: this torch has no CPU autocast: training in float32\n")
    return None


def autocast(device_type, dtype):
    import torch

    if dtype is None:
        return contextlib.nullcontext()
    if device_type == "npu":
        return torch.npu.amp.autocast(dtype=dtype)
    if hasattr(torch, "autocast"):
        return torch.autocast(device_type, dtype=dtype)
    return torch.cuda.amp.autocast()  # torch < 1.10 (CUDA only)


class StaticLossScaler(object):
    """A fixed loss scale, as apex's LossScaler with a number for `loss_scale` does.

    The seed's `amp.initialize(..., opt_level='O1', loss_scale=64.0)` (its
    mmdet/apis/train.py) builds Ascend apex's LossScaler in static mode: the loss is
    multiplied by 64 before backward, the gradients divided by 64 before the optimizer
    hook clips them, and then, because the scaler is not dynamic, no overflow check
    (`check_overflow_and_sync` sets no overflow, `unscale` checks only when dynamic),
    no skipped step (`update_scale` skips only when dynamic) and no change of the scale,
    ever. So a step whose gradients overflow is taken as it is; on a device that makes
    inf / NaN of it (CPU, CUDA) the loss log's finiteness check stops the run
    (hooks.py). The same interface as torch's GradScaler, for trainer.Step.
    """

    def __init__(self, scale):
        self._scale = float(scale)
        self._unscaled = set()

    def scale(self, loss):
        return loss * self._scale

    def unscale_(self, optimizer):
        """Divide the gradients of `optimizer`'s parameters by the scale, once a step."""
        import torch

        if id(optimizer) in self._unscaled:
            return
        with torch.no_grad():
            for group in optimizer.param_groups:
                for param in group["params"]:
                    if param.grad is not None:
                        param.grad.mul_(1.0 / self._scale)
        self._unscaled.add(id(optimizer))

    def step(self, optimizer):
        """The optimizer step, always (unscaling first if the caller did not)."""
        self.unscale_(optimizer)
        return optimizer.step()

    def update(self):
        self._unscaled.clear()

    def get_scale(self):
        return self._scale

    def state_dict(self):
        return {"scale": self._scale, "static": True}

    def load_state_dict(self, state):
        if not state.get("static"):
            raise UserError(
                "the checkpoint's loss scaler is dynamic, this run's is static (%g): resume "
                "with the profile the checkpoint was made with" % self._scale
            )
        self._scale = float(state["scale"])


def grad_scaler(device_type, dtype, loss_scale="dynamic"):
    """The float16 loss scaler, or None (float32 / bfloat16 need none).

    `loss_scale` a number: a StaticLossScaler (the seed profile: apex O1 with
    loss_scale=64.0); "dynamic": torch's GradScaler (the upstream profile: growth x2
    every 2000 clean steps, overflowing steps skipped and the scale halved).
    """
    import torch

    if dtype is None or dtype != torch.float16:
        return None
    if loss_scale != "dynamic":
        return StaticLossScaler(loss_scale)
    if device_type == "npu":
        return torch.npu.amp.GradScaler()
    amp = getattr(torch, "amp", None)
    if amp is not None and hasattr(amp, "GradScaler"):
        try:
            return amp.GradScaler(device_type)
        except TypeError:  # torch.amp.GradScaler without a device argument
            pass
    return torch.cuda.amp.GradScaler()


# -- RNG state --------------------------------------------------------------------------------
def rng_state(device_type):
    """Every generator's state, in types torch.load(weights_only=True) reads back (numpy's
    key array as a list), so a checkpoint loads without unpickling arbitrary objects."""
    import torch

    name, keys, position, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": (name, [int(k) for k in keys], int(position), int(has_gauss), float(cached)),
        "torch": torch.get_rng_state(),
    }
    module = device_module(device_type)
    if module is not None and hasattr(module, "get_rng_state"):
        state["device"] = module.get_rng_state()
    return state


def set_rng_state(state, device_type):
    import torch

    random.setstate(state["python"])
    name, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), position, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    module = device_module(device_type)
    if module is not None and "device" in state and hasattr(module, "set_rng_state"):
        module.set_rng_state(state["device"])


def dtype_name(dtype):
    """'float16' for torch.float16; None for None (float32 training)."""
    return str(dtype).replace("torch.", "") if dtype is not None else None
