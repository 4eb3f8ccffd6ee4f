"""TorchScript on CPU (or CUDA): the exported module, run with torch.jit.load."""

import os
import shutil

import numpy as np

from zoostage.backends.base import Backend as BaseBackend
from zoostage.errors import UserError


def _as_tuple(outputs):
    if isinstance(outputs, (tuple, list)):
        return tuple(outputs)
    return (outputs,)


class Backend(BaseBackend):
    name = "torchscript"
    suffix = ".ts"

    def __init__(self, device="cpu", threads=None, **options):
        super(Backend, self).__init__(device=device, **options)
        self.threads = threads
        self.module = None

    def compile(self, source, target, input_shape, precision="fp32", soc_version=None):
        """TorchScript needs no compilation: check that it loads and runs, then copy it."""
        import torch

        module = torch.jit.load(source, map_location="cpu")
        with torch.no_grad():
            outputs = _as_tuple(module(torch.zeros(tuple(input_shape))))
        shutil.copyfile(source, target)
        return {"precision": "fp32", "outputs": [list(o.shape) for o in outputs]}

    def load(self, path):
        import torch

        if not os.path.isfile(path):
            raise UserError("model file not found: %s" % path)
        if self.threads:
            torch.set_num_threads(int(self.threads))
        self.module = torch.jit.load(path, map_location=str(self.device))
        self.module.eval()
        return self

    def to_device(self, batch):
        import torch

        return torch.from_numpy(np.ascontiguousarray(batch)).to(str(self.device))

    def forward(self, inputs):
        import torch

        with torch.no_grad():
            return _as_tuple(self.module(inputs))

    def to_host(self, outputs):
        return tuple(o.detach().cpu().numpy() for o in outputs)

    def synchronize(self):
        if str(self.device).startswith("cuda"):
            import torch

            torch.cuda.synchronize()

    def describe(self):
        import torch

        info = super(Backend, self).describe()
        info["torch"] = torch.__version__
        info["threads"] = torch.get_num_threads()
        return info
