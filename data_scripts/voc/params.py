"""Parameters of the VOC2007 stages (prepare, evaluate): see zoostage.declare."""

from data_scripts import params as common
from zoostage.declare import Param

# RefineDet320's input is fixed (models/refinedet/net.py INPUT_SIZE): no recipe sets it.
PREPARE = tuple(
    param.but(recipe=None) if param.flag == "input-size" else param
    for param in common.prepare("VOCdevkit folder (or VOC2007 itself)", input_size=320)
)

EVALUATE = (
    Param("detections", help="detections.json of the infer stage", required=True),
    Param("root", help="VOCdevkit folder (or VOC2007 itself)", required=True),
)
