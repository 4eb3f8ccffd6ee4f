"""ATC .om models on an Ascend NPU through ais_bench's InferSession.

Runs only in the `atc` env (CANN 6.0.RC1, ais_bench + aclruntime); ais_bench is imported
here alone. Compilation (ATC) is the `convert` stage of the recipes that use it: the
command is built in zoostage.backends.atc so it can be checked without an NPU.
"""

import math
import os

import numpy as np

from zoostage.backends.base import Backend as BaseBackend
from zoostage.errors import UserError


def _session_class():
    try:
        from ais_bench.infer.interface import InferSession
    except ImportError as error:
        raise UserError(
            "backend 'om' needs ais_bench and aclruntime, which this environment "
            "lacks (%s); run in the atc image on an NPU host, or choose "
            "--backend onnxruntime" % error
        ) from None
    return InferSession


def exec_time_seconds(entry):
    """One exec_time_list entry in seconds: a number of milliseconds (older ais_bench) or
    a (start, end) pair of millisecond stamps (newer); None for anything else, or for a
    time that cannot be one (negative, not finite)."""
    if isinstance(entry, (str, bytes, bool)):
        return None
    try:
        if hasattr(entry, "__len__"):
            if len(entry) != 2:
                return None
            milliseconds = float(entry[1]) - float(entry[0])
        else:
            milliseconds = float(entry)
    except (TypeError, ValueError, IndexError):
        return None
    if not math.isfinite(milliseconds) or milliseconds < 0:
        return None
    return milliseconds / 1000.0


class Backend(BaseBackend):
    name = "om"
    suffix = ".om"
    source_suffix = ".onnx"  # ATC converts the ONNX export
    dynamic_batch = False

    def __init__(self, device=0, **options):
        text = str(device)
        try:
            index = int(text.split(":", 1)[1]) if text.startswith("npu:") else int(text)
        except ValueError:
            raise UserError(
                "backend 'om' runs on an NPU: --device takes an NPU id like 0, not %r" % (text,)
            ) from None
        super(Backend, self).__init__(device=index, **options)
        self.session = None
        self.timing_note = None  # why compute_seconds() had no device time, for infer.json

    def compile(self, source, target, input_shape, precision=None, soc_version=None):
        """ATC; `precision` is ATC's --precision_mode (default allow_fp32_to_fp16, as the
        seed: pure fp16 loses RefineDet's accuracy)."""
        from zoostage.backends.atc import DEFAULT_PRECISION_MODE, convert

        return convert(
            source,
            target,
            input_shape,
            soc_version=soc_version,
            precision_mode=precision or DEFAULT_PRECISION_MODE,
        )

    def load(self, path):
        if not os.path.isfile(path):
            raise UserError("om model not found: %s" % path)
        self.session = _session_class()(self.device, path)
        return self

    def forward(self, inputs):
        # ais_bench's infer() copies in, runs and copies out synchronously; the device's
        # own time of the model comes from its summary (compute_seconds).
        feeds = [np.ascontiguousarray(inputs, dtype=np.float32)]
        outputs = self.session.infer(feeds, mode="static")
        return tuple(np.asarray(o) for o in outputs)

    def compute_seconds(self):
        """ais_bench's execute time of the last infer(), in seconds; None when it has none.

        Its summary (`summary()`, `sumary()` in older releases) keeps one entry per infer
        in exec_time_list: milliseconds in older releases, a (start, end) pair of
        millisecond stamps in newer ones. Anything else, or no summary at all, is None:
        the harness times the call instead and infer.json says so (`timing_note`).
        """
        self.timing_note = None
        summary = getattr(self.session, "summary", None) or getattr(self.session, "sumary", None)
        if summary is None:
            self.timing_note = "this ais_bench has no summary(): the call was timed instead"
            return None
        try:
            times = list(summary().exec_time_list)
        except Exception as error:  # another ais_bench's summary shape
            self.timing_note = "ais_bench's summary() failed (%s): the call was timed instead" % (
                error,
            )
            return None
        seconds = exec_time_seconds(times[-1]) if times else None
        if seconds is None:
            self.timing_note = (
                "ais_bench's exec_time_list ends with %r, neither milliseconds nor a (start, "
                "end) pair: the call was timed instead" % (times[-1] if times else "nothing",)
            )
        return seconds

    def close(self):
        if self.session is not None:
            self.session.finalize()
            self.session = None

    def describe(self):
        info = super(Backend, self).describe()
        info["device"] = "npu:%d" % self.device
        return info
