"""Parameters of the compile stage (zoostage.backends.compile): see zoostage.declare."""

from zoostage.backends import NAMES
from zoostage.declare import Param

COMPILE = (
    Param(
        "backend",
        choices=NAMES,
        help="the backend the model is compiled for",
        required=True,
        recipe="backend",
    ),
    Param("model", help="the export folder, or a model file", required=True),
    Param("input-shape", help="N,C,H,W", required=True),
    Param(
        "batch-sizes",
        help="also compile these batch sizes (model_bs<B><suffix>) for static-shape backends",
        recipe="batch_sizes",
    ),
    Param(
        "precision",
        help="aie: fp16 (when not given), fp32, or default (torch_aie's own, no "
        "precision_policy passed); om: ATC's --precision_mode (default allow_fp32_to_fp16)",
        recipe="precision",
    ),
    Param(
        "soc-version",
        default="Ascend310P3",
        help="the Ascend chip to compile for",
        recipe="soc_version",
    ),
    Param("device", default="cpu", help="cpu, or the NPU id"),
)
