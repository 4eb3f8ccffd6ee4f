"""Smoke checks of the atc image: ATC and ais_bench on a model small enough to read.

    python -m zoostage.smoke.atc --out OUT [--devices 0] [--dev-root /dev] \
        [--soc-version Ascend310P3]

A 1-conv ONNX model (written with onnx.helper: no torch needed) goes through ATC with the
seed's --precision_mode allow_fp32_to_fp16, then through ais_bench's InferSession on the
first device, against ONNX Runtime on the CPU. The unit of ais_bench's exec times (the
om backend reads them as milliseconds) is set beside the call's wall time. Writes
OUT/smoke.json.
"""

import os
import shutil
import time

import numpy as np

from zoostage import cli
from zoostage.smoke import common
from zoostage.smoke.checks import NeedsHost

SHAPE = (1, 3, 16, 16)
TOLERANCE = 2e-2  # fp16 inside the .om against fp32 on the CPU (see smoke.aie)


def conv_onnx(path):
    """A 3x3 conv, 3 -> 4 channels, fixed weights, opset 11; returns the input's name."""
    from onnx import TensorProto, helper, numpy_helper

    random = np.random.RandomState(0)
    weight = random.uniform(-0.5, 0.5, (4, SHAPE[1], 3, 3)).astype(np.float32)
    bias = random.uniform(-0.5, 0.5, (4,)).astype(np.float32)
    node = helper.make_node(
        "Conv", ["image", "weight", "bias"], ["out"], name="Conv_0", pads=[1, 1, 1, 1]
    )
    graph = helper.make_graph(
        [node],
        "smoke_conv",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, list(SHAPE))],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [SHAPE[0], 4, *SHAPE[2:]])],
        [numpy_helper.from_array(weight, "weight"), numpy_helper.from_array(bias, "bias")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])
    model.ir_version = 6  # what onnxruntime 1.14 and ATC 6.0 read
    with open(path, "wb") as handle:
        handle.write(model.SerializeToString())


def atc_conv(state, out, soc_version):
    if shutil.which("atc") is None:
        raise NeedsHost("no atc here (a CPU image: build it with the NPU installers)")
    from zoostage.backends.atc import convert

    source = os.path.join(out, "conv.onnx")
    conv_onnx(source)
    target = os.path.join(out, "conv.om")
    facts = convert(
        source, target, SHAPE, soc_version=soc_version, precision_mode="allow_fp32_to_fp16"
    )
    state["om"] = target
    return "%s (%.1f s)" % (facts["command_line"], facts["atc_seconds"])


def reference(out):
    import onnxruntime

    x = np.random.RandomState(1).uniform(-1, 1, SHAPE).astype(np.float32)
    session = onnxruntime.InferenceSession(
        os.path.join(out, "conv.onnx"), providers=["CPUExecutionProvider"]
    )
    return x, session.run(None, {"image": x})[0]


def ais_bench_run(state, out, devices, dev_root):
    common.require_devices(dev_root)
    if "om" not in state:
        raise NeedsHost("needs the .om from ATC (see above)")
    from zoostage.backends import get_backend

    backend = get_backend("om", device=devices[0]).load(state["om"])
    try:
        x, expected = reference(out)
        backend.run(x)  # the first call loads; time the second
        start = time.time()
        found = backend.run(x)[0]
        wall_ms = (time.time() - start) * 1000.0
        reported = backend.compute_seconds()
    finally:
        backend.close()
    difference = float(np.abs(found.reshape(expected.shape) - expected).max())
    if difference > TOLERANCE:
        raise RuntimeError(
            "outputs differ from ONNX Runtime's: max difference %.4g (tolerance %g)"
            % (difference, TOLERANCE)
        )
    unit = (
        "no exec time reported (the om backend times the call instead)"
        if reported is None
        else "exec time %.3f ms read as ms, inside a %.3f ms call%s"
        % (reported * 1000, wall_ms, "" if reported * 1000 <= wall_ms else ": NOT ms?")
    )
    return "npu:%d, max difference %.2g; %s" % (devices[0], difference, unit)


ATC = "ATC: 1-conv ONNX to .om with --precision_mode allow_fp32_to_fp16"
AIS_BENCH = "ais_bench InferSession runs the .om; its exec time's unit"


def planned_checks(devices):
    """The names of the checks main() runs, in order."""
    return [*common.COMMON_CHECKS, ATC, AIS_BENCH]


def ais_bench_version():
    """ais_bench's installed version (its wheel's metadata), or None; no import."""
    from zoostage.envinfo import distribution_version

    return distribution_version("ais_bench")


def main(args):
    devices, checks = common.start(args, "atc env")
    checks.versions["ais_bench"] = ais_bench_version()
    state = {}
    checks.run(
        ATC,
        atc_conv,
        state,
        args.out,
        args.soc_version,
    )
    checks.run(
        AIS_BENCH,
        ais_bench_run,
        state,
        args.out,
        devices,
        args.dev_root,
    )
    checks.write(args.out)


def build_parser():
    return common.parser(__doc__.splitlines()[0])


if __name__ == "__main__":
    cli.run(main, build_parser())
