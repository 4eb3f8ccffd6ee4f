"""Parameters of RetinaFace's stages (export, infer): see zoostage.declare."""

from models.retinaface import INPUT_SIZE
from zoostage import params as kit
from zoostage.declare import Param

# test_widerface.py's argparse defaults for its commented-out cuts (0 here: no cut).
UPSTREAM_TOP_K = 5000
UPSTREAM_KEEP_TOP_K = 750

EXPORT = (
    Param("weights", help="the weights stage's output folder", required=True),
    Param(
        "input-size",
        "int",
        INPUT_SIZE,
        "square network input side (pixels)",
        min=32,
        recipe="input_size",
    ),
    Param("batch-size", "int", 1, "batch of the traced input", min=1),
    Param(
        "backend",
        default="torchscript",
        choices=kit.BACKENDS,
        help="the backend the model is for: onnxruntime also gets model.onnx",
        recipe="backend",
    ),
)

INFER = (
    *kit.infer(),
    Param(
        "profile",
        default="seed",
        choices=kit.PROFILES,
        help="which reference pipeline runs; postprocess: seed, the ModelZoo "
        "postprocess.py (no cuts), or upstream, test_widerface.py",
        recipe="profile",
    ),
    Param(
        "top-k",
        "int",
        0,
        "upstream only: best N before NMS (test_widerface.py's commented-out --top_k %d; "
        "0: no cut)" % UPSTREAM_TOP_K,
        min=0,
        recipe="top_k",
    ),
    Param(
        "keep-top-k",
        "int",
        0,
        "upstream only: best N after NMS (its --keep_top_k %d; 0: no cut)" % UPSTREAM_KEEP_TOP_K,
        min=0,
        recipe="keep_top_k",
    ),
)
