"""Parameters of the WIDER FACE stages (prepare, evaluate): see zoostage.declare."""

from data_scripts import params as common
from data_scripts.widerface.select import SUBSETS
from zoostage.declare import Param
from zoostage.params import PROFILES

DEFAULT_INPUT_SIZE = 1000

PREPARE = (
    *common.prepare(
        "WIDER FACE val root (images + .mat)",
        input_size=DEFAULT_INPUT_SIZE,
        limit_help="N images spread evenly over the events (0: all)",
    ),
    Param(
        "profile",
        default="seed",
        choices=PROFILES,
        help="which reference pipeline runs; resize: seed, data_preprocess.py's "
        "INTER_NEAREST, or upstream, INTER_LINEAR",
        recipe="profile",
    ),
    Param(
        "subset",
        default="all",
        choices=SUBSETS,
        help="all: every ground-truth val image must be there; present: those that are",
        recipe="subset",
    ),
    Param(
        "image-list",
        "path",
        help="only the images a file lists (event/name per line)",
        recipe="image_list",
    ),
)

EVALUATE = (
    Param("predictions", help="folder of <event>/<image>.txt prediction files", required=True),
    Param("root", help="WIDER FACE root holding the ground-truth .mat files", required=True),
    Param("faces", help="the infer stage's faces.json: draw OUT/faces.png"),
    Param("figure-images", "int", 4, "images in faces.png (0: no figure)", min=0),
)
