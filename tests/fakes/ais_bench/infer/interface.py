"""A CPU stand-in for ais_bench's InferSession: runs the ONNX model the .om was made from
(X.om -> X.onnx) with ONNX Runtime. FAKE_AIS_BENCH_WRONG=1 makes it answer zeros.

Its summary follows the releases' shapes, picked by FAKE_AIS_BENCH_SUMMARY:
- "ms" (default; older releases): exec_time_list holds one float per infer, milliseconds;
- "pairs" (newer releases): one (start, end) pair of millisecond stamps per infer;
- "sumary": the oldest spelling, `sumary()` instead of `summary()`, milliseconds;
- "none": no summary at all; "odd": entries of another shape (a dict per infer).
"""

import os

import numpy as np

EXEC_MS = 0.05  # what each fake infer reports as its execute time


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
        shape = os.environ.get("FAKE_AIS_BENCH_SUMMARY", "ms")
        if shape == "sumary":
            self.sumary = self._summary
        elif shape != "none":
            self.summary = self._summary
        self.shape = shape

    def infer(self, feeds, mode="static"):
        name = self.session.get_inputs()[0].name
        outputs = self.session.run(None, {name: feeds[0]})
        start = 1000.0 + 10.0 * len(self.times)  # a millisecond stamp
        self.times.append(
            (start, start + EXEC_MS)
            if self.shape == "pairs"
            else {"ms": EXEC_MS}
            if self.shape == "odd"
            else EXEC_MS
        )
        if os.environ.get("FAKE_AIS_BENCH_WRONG"):
            return [np.zeros_like(o) for o in outputs]
        return outputs

    def _summary(self):
        return _Summary(list(self.times))

    def finalize(self):
        pass
