"""Parameters of the COCO stages (prepare, evaluate): see zoostage.declare."""

from data_scripts import params as common
from zoostage.declare import Param
from zoostage.params import PROFILES

# detectron2's test-time resize: shorter side, longer side at most; the padded input.
MIN_SIZE = 800
MAX_SIZE = 1333
INPUT_SIZE = 1344
RESIZE_METHODS = ("auto", "pil", "cv2")

PREPARE = (
    *common.prepare("COCO folder: val2017/, annotations/", input_size=INPUT_SIZE),
    Param(
        "resize",
        default="auto",
        choices=RESIZE_METHODS,
        help="auto: the profile's (seed: cv2; upstream: pil if installed); pil: detectron2's "
        "exact method; cv2: the seed's",
    ),
    Param(
        "profile",
        default="seed",
        choices=PROFILES,
        help="which reference pipeline runs; resize: seed, the ModelZoo script's, or "
        "upstream, detectron2's",
        recipe="profile",
    ),
    Param(
        "min-size", "int", MIN_SIZE, "shorter side of the resized image", min=1, recipe="min_size"
    ),
    Param("max-size", "int", MAX_SIZE, "longer side at most", min=1, recipe="max_size"),
)

EVALUATE = (
    Param("detections", help="COCO results JSON file", required=True),
    Param("root", help="COCO folder with annotations/ (and val2017/)", required=True),
    Param("data", help="data stage folder: score exactly its images (default: images detected)"),
    Param("figure-score", "float", 0.5, "score at which boxes are drawn (0.5)"),
    Param("figure-images", "int", 4, "images in the figure (4; 0 = no figure)", min=0),
)
