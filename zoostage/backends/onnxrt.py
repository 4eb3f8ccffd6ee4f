"""ONNX Runtime on CPU."""

import os
import shutil

import numpy as np

from zoostage.backends.base import Backend as BaseBackend
from zoostage.errors import UserError


class Backend(BaseBackend):
    name = "onnxruntime"
    suffix = ".onnx"

    def __init__(self, device="cpu", threads=None, **options):
        super(Backend, self).__init__(device=device, **options)
        self.threads = threads
        self.session = None
        self.input_name = None

    def compile(self, source, target, input_shape, precision="fp32", soc_version=None):
        """ONNX runs as exported: check that a session opens and runs, then copy it."""
        self.load(source)
        outputs = self.run(np.zeros(tuple(input_shape), dtype=np.float32))
        self.session = None
        shutil.copyfile(source, target)
        return {"precision": "fp32", "outputs": [list(o.shape) for o in outputs]}

    def load(self, path):
        import onnxruntime

        if not os.path.isfile(path):
            raise UserError("model file not found: %s" % path)
        options = onnxruntime.SessionOptions()
        if self.threads:
            options.intra_op_num_threads = int(self.threads)
        self.session = onnxruntime.InferenceSession(
            path, sess_options=options, providers=["CPUExecutionProvider"]
        )
        self.input_name = self.session.get_inputs()[0].name
        return self

    def forward(self, inputs):
        # ONNX Runtime on the CPU reads the host array itself: no transfer to time apart.
        outputs = self.session.run(
            None, {self.input_name: np.ascontiguousarray(inputs, dtype=np.float32)}
        )
        return tuple(outputs)

    def describe(self):
        import onnxruntime

        info = super(Backend, self).describe()
        info["onnxruntime"] = onnxruntime.__version__
        return info
