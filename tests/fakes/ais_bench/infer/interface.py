"""A CPU stand-in for ais_bench's InferSession: runs the ONNX model the .om was made from
(X.om -> X.onnx) with ONNX Runtime. FAKE_AIS_BENCH_WRONG=1 makes it answer zeros."""

import os

import numpy as np


class _Summary(object):
    def __init__(self, times):
        self.exec_time_list = times


class InferSession(object):
    def __init__(self, device_id, model_path):
        import onnxruntime

        self.device_id = device_id
        source = os.path.splitext(model_path)[0] + ".onnx"
        self.session = onnxruntime.InferenceSession(source, providers=["CPUExecutionProvider"])
        self.times = []

    def infer(self, feeds, mode="static"):
        name = self.session.get_inputs()[0].name
        outputs = self.session.run(None, {name: feeds[0]})
        self.times.append(0.05)  # milliseconds, as ais_bench reports them
        if os.environ.get("FAKE_AIS_BENCH_WRONG"):
            return [np.zeros_like(o) for o in outputs]
        return outputs

    def summary(self):
        return _Summary(list(self.times))

    def finalize(self):
        pass
