"""Parameters of RetinaNet's inference stages (export, infer): see zoostage.declare.
The training stage's are in models/retinanet/train/params.py."""

from zoostage import params as kit
from zoostage.declare import Param

# What each kind of exported outputs holds (models/retinanet/export.py --outputs).
OUTPUT_NAMES = {
    "dense": ["cls_logits", "box_deltas"],
    "topk": ["logits", "indices", "box_deltas"],
    "class_topk": ["boxes", "scores"],
}

EXPORT = (
    Param("weights", help="the weights stage's output folder", required=True),
    Param(
        "input-size",
        "int",
        1344,
        "padded square network input, a multiple of 32; must hold the resized image "
        "(1344 for 800 / 1333)",
        min=32,
        recipe="input_size",
    ),
    Param(
        "format",
        default="torchscript",
        choices=("torchscript", "onnx"),
        help="torchscript: model.ts (the torchscript and aie backends); onnx: model.ts and "
        "model.onnx, for --backend onnxruntime",
        recipe="export_format",
    ),
    Param(
        "outputs",
        default="auto",
        choices=("auto", *tuple(sorted(OUTPUT_NAMES))),
        help="what the exported graph returns. auto: the profile's (class_topk for seed, "
        "topk for upstream); dense: cls_logits + box_deltas; topk: per-level top-1000 "
        "logits + indices + box_deltas; class_topk: the seed graph's NMS inputs (per "
        "level, each class's 200 best boxes)",
        recipe="outputs",
    ),
    Param(
        "profile",
        default="seed",
        choices=kit.PROFILES,
        help="which reference pipeline runs; whose postprocess the outputs feed: seed "
        "(ModelZoo) or upstream (detectron2)",
        recipe="profile",
    ),
)

INFER = (
    *kit.infer(),
    Param(
        "profile",
        default="seed",
        choices=kit.PROFILES,
        help="which reference pipeline runs; postprocess: seed (the ModelZoo graph's) or "
        "upstream (detectron2's)",
        recipe="profile",
    ),
)
