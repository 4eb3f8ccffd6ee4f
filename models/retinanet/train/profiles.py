"""What the training `--profile` changes: the seed's executed code, or mmdetection's config.

The seed (Ascend ModelZoo RetinaNet_for_PyTorch) runs its own copy of mmdetection v2.9
whose modified files override the config in three places (docs/fidelity.md):

- `mmdet/datasets/pipelines/transforms.py` Pad._pad_labels / _pad_bboxes: an image keeps
  its first 40 boxes (annotation order, after the crowd and invalid-box filter), the rest
  of the 40 rows padded with label 80, which the modified `max_iou_assigner.py` leaves out
  of matching: `max_boxes` 40 here (no padding rows: they match nothing);
- the same file's Pad._pad_img: every image padded to 1344 x 800 (h x w) when its resized
  height >= width, else 800 x 1344, whatever the config's size_divisor 32 says, and the
  modified `anchor_head.py` (get_anchors_ones) takes every anchor of that frame as valid:
  `fixed_frames`. 1344 and 800 are the config's img_scale (1333, 800) rounded up to 32;
  zoobox derives the frame that way from --max-size / --min-size, so the defaults give
  the seed's frames and smaller test sizes keep the rule;
- `mmdet/apis/train.py`: `amp.initialize(..., opt_level='O1', loss_scale=64.0,
  combine_grad=True)`: a static loss scale of 64 (`loss_scale`).

`upstream` is mmdetection v2.9's own retinanet_r50_fpn_1x: every box, batches padded to
a multiple of 32 (or --pad-size), and for float16 torch's dynamic loss scaler (the config
itself trains in float32).
"""

from collections import namedtuple

from zoostage.errors import UserError

SEED = "seed"
UPSTREAM = "upstream"
PROFILES = (SEED, UPSTREAM)
# Pad._pad_labels / _pad_bboxes of the seed's transforms.py.
SEED_MAX_BOXES = 40
# amp.initialize(..., loss_scale=64.0) in the seed's mmdet/apis/train.py.
SEED_LOSS_SCALE = 64.0

# max_boxes: 0 keeps every box; loss_scale: a number (static) or "dynamic".
TrainProfile = namedtuple("TrainProfile", "name max_boxes fixed_frames loss_scale")

_PROFILES = {
    SEED: TrainProfile(SEED, SEED_MAX_BOXES, True, SEED_LOSS_SCALE),
    UPSTREAM: TrainProfile(UPSTREAM, 0, False, "dynamic"),
}


def training_profile(name):
    """The TrainProfile called `name` (None: the seed's); a UserError for another name."""
    name = name or SEED
    if name not in _PROFILES:
        raise UserError("--profile must be seed or upstream, not %r" % (name,))
    return _PROFILES[name]
