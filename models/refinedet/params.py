"""Parameters of RefineDet's stages (export, infer, bench): see zoostage.declare."""

from zoostage import params as kit
from zoostage.declare import Param


def device_id(text):
    """An NPU device: N or npu:N."""
    return int(str(text).split(":", 1)[-1])


EXPORT = (
    Param("weights", help="output folder of the weights stage", required=True),
    Param("opset", "int", 11, "ONNX opset (the seed's: 11)"),
    Param(
        "seed", "int", 0, "seed of the check input (and of a random init without a manifest seed)"
    ),
)

INFER = (
    *kit.infer(backend="onnxruntime"),
    Param(
        "keep-top-k",
        "int",
        0,
        "cap on detections per image across classes (0: none, as the reference runs; it "
        "declares 500 but never applies it)",
        min=0,
    ),
)

BENCH = (
    Param("model", help="compile folder, or one .om file", required=True),
    Param(
        "batch-sizes",
        default="1,4,8,16,32,64",
        help="the .om batch sizes compiled and benched (comma-separated)",
        recipe="batch_sizes",
    ),
    Param(
        "loop",
        "int",
        1000,
        "ais_bench loops per batch size (the seed: 1000)",
        min=1,
        recipe="bench_loop",
    ),
    Param("device", default=0, help="NPU device: N or npu:N", convert=device_id),
    Param("onnx", help="ONNX model to build missing .om files from"),
    Param(
        "soc-version",
        help="the Ascend chip to compile for (ATC --soc_version; default: from npu-smi)",
        recipe="soc_version",
    ),
)
