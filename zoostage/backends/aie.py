"""Torch_AIE on an Ascend NPU: TorchScript compiled by torch_aie.compile.

Runs only in the `aie` env (torch 2.0.1, CANN 7.0.RC1, Torch_AIE 6.3.rc2) on a host with
an NPU; torch_aie is imported here alone, so every other backend works without it.
"""

import os

import numpy as np

from zoostage.backends.base import Backend as BaseBackend
from zoostage.errors import UserError

# "default": pass no precision_policy, leaving torch_aie's own default -- what the
# RetinaFace seed's inference.py does (`torch_aie.compile(model, inputs=[...])`).
PRECISIONS = ("default", "fp16", "fp32")


def _torch_aie():
    try:
        import torch_aie
    except ImportError as error:
        raise UserError(
            "backend 'aie' needs torch_aie, which this environment lacks (%s); "
            "run in the aie image on an NPU host, or choose --backend torchscript" % error
        ) from None
    return torch_aie


def npu_index(device):
    """'npu:1' or '1' -> 1; anything else (e.g. 'cpu') is a UserError."""
    text = str(device)
    try:
        return int(text.split(":", 1)[1]) if text.startswith("npu:") else int(text)
    except ValueError:
        raise UserError(
            "backend 'aie' runs on an NPU: --device takes an NPU id like 0 or "
            "npu:0, not %r" % (text,)
        ) from None


class Backend(BaseBackend):
    name = "aie"
    suffix = ".ts"
    dynamic_batch = False

    def __init__(self, device="npu:0", **options):
        if not str(device).startswith("npu"):
            device = "npu:%d" % npu_index(device)
        super(Backend, self).__init__(device=device, **options)
        self.module = None
        self.stream = None

    def compile(self, source, target, input_shape, precision=None, soc_version="Ascend310P3"):
        import torch

        torch_aie = _torch_aie()
        from torch_aie import _enums

        precision = precision or "fp16"
        if precision not in PRECISIONS:
            raise UserError(
                "precision must be one of %s, not %r" % (", ".join(PRECISIONS), precision)
            )
        options = {}
        if precision != "default":
            policy = _enums.PrecisionPolicy
            options["precision_policy"] = policy.FP16 if precision == "fp16" else policy.FP32
        torch_aie.set_device(npu_index(self.device))
        model = torch.jit.load(source).eval()
        compiled = torch_aie.compile(
            model,
            # Both seeds pass dtype=torch.float: the input is float32 whatever Input's
            # default dtype is in the installed torch_aie (the smoke check reports it).
            inputs=[torch_aie.Input(tuple(int(v) for v in input_shape), dtype=torch.float)],
            soc_version=soc_version,
            # The seeds compile the whole graph where possible and let torch run the rest.
            require_full_compilation=False,
            truncate_long_and_double=True,
            min_block_size=3,
            **options,
        )
        compiled.save(target)
        return {
            "precision": precision if precision != "default" else "default (torch_aie's own)",
            "soc_version": soc_version,
            "torch_aie": getattr(torch_aie, "__version__", "unknown"),
            "input_shape": [int(v) for v in input_shape],
        }

    def load(self, path):
        import torch

        torch_aie = _torch_aie()
        if not os.path.isfile(path):
            raise UserError("compiled model not found: %s" % path)
        torch_aie.set_device(npu_index(self.device))
        self.module = torch.jit.load(path).eval()
        self.stream = torch_aie.npu.Stream(self.device)
        return self

    def to_device(self, batch):
        import torch

        return torch.from_numpy(np.ascontiguousarray(batch)).to(self.device)

    def forward(self, inputs):
        # As the seeds run it: the input already on the device, the module on its own
        # stream, waited for before anything reads the outputs.
        import torch

        torch_aie = _torch_aie()
        with torch.no_grad(), torch_aie.npu.stream(self.stream):
            outputs = self.module(inputs)
            self.stream.synchronize()
        return tuple(outputs) if isinstance(outputs, (tuple, list)) else (outputs,)

    def to_host(self, outputs):
        # detach: parts the compiler left to torch may carry autograd state
        return tuple(o.detach().to("cpu").numpy() for o in outputs)

    def synchronize(self):
        if self.stream is not None:
            self.stream.synchronize()

    def describe(self):
        info = super(Backend, self).describe()
        info["torch_aie"] = getattr(_torch_aie(), "__version__", "unknown")
        return info
