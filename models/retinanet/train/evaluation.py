"""The training's COCO evaluation, through the inference recipe's own stage functions.

The same steps as `invoke retinanet.all` on the trained checkpoint, with the network
eager in this process instead of exported:

1. data: data_scripts.coco.prepare.prepare_image, the data stage's per-image work (the
   profile's resize rule and method into the padded input), and the store's feed
   (zoostage.store.to_input: mean, std, padding after normalization);
2. infer: models.retinanet.infer.RetinaNetTask, the infer stage's postprocess and COCO
   writer for the profile (OUT/eval/detections.json);
3. evaluate: data_scripts.coco.evaluate.evaluate over exactly the images run
   (OUT/eval/metrics.json, cocoeval.txt).

The input size and the test-time sizes come from the recipe (input_size, min_size,
max_size), as for the inference recipe. Images are prepared one at a time, so no
27 GB store of val2017 at 1344 is written.
"""

import os
import time

import numpy as np

from zoostage.errors import UserError

EVAL_DIR = "eval"


class _Images(object):
    """What RetinaNetTask needs of a store: the network input size."""

    def __init__(self, input_hw):
        self.input_hw = tuple(input_hw)


class _Args(object):
    def __init__(self, profile):
        self.profile = profile


def check_sizes(size, min_size, max_size):
    if size < max_size or size % 32:
        raise UserError(
            "the evaluation input size %d must be a multiple of 32 and at least the max "
            "size %d" % (size, max_size)
        )
    if not 1 <= min_size <= max_size:
        raise UserError("need 1 <= min size <= max size, not %d, %d" % (min_size, max_size))


def evaluate(model, settings, device):
    """COCO bbox metrics of `model` (eval mode) on settings["root"]'s val2017.

    settings: root, out, input_size, min_size, max_size, limit (0: all), profile.
    Returns {"metrics", "images", "detections", "input_size", "profile",
    "images_per_s", "root"}.
    """
    import torch

    from data_scripts.coco import evaluate as coco_eval
    from data_scripts.coco import layout, prepare
    from models.retinanet import PIXEL_MEAN_BGR, PIXEL_STD_BGR
    from models.retinanet.infer import RetinaNetTask
    from zoostage import store as store_lib
    from zoostage.progress import Progress

    root, profile = settings["root"], settings.get("profile") or "seed"
    size = int(settings["input_size"])
    min_size, max_size = int(settings["min_size"]), int(settings["max_size"])
    check_sizes(size, min_size, max_size)
    out = os.path.join(settings["out"], EVAL_DIR)
    if not os.path.isdir(out):
        os.makedirs(out)
    feed = store_lib.feed_spec(PIXEL_MEAN_BGR, PIXEL_STD_BGR, pad="after_norm", channels="bgr")
    method = prepare.resize_method("auto", profile)
    images = layout.list_images(root, limit=int(settings.get("limit") or 0))
    task = RetinaNetTask(_Images((size, size)), _Args(profile))
    folder = os.path.join(root, layout.IMAGES_DIR)
    started = time.time()
    with torch.no_grad(), Progress(len(images), "evaluate val2017") as progress:
        for image in images:
            item = (
                os.path.join(folder, image["file_name"]),
                layout.IMAGES_DIR + "/" + image["file_name"],
                image["id"],
                [image["height"], image["width"]],
                min_size,
                max_size,
                method,
                profile,
            )
            pixels, record = prepare.prepare_image(item)
            h, w = pixels.shape[:2]
            record["valid_hw"] = [h, w]
            batch = np.zeros((1, size, size, 3), dtype=np.uint8)
            batch[0, :h, :w] = pixels
            x = torch.from_numpy(store_lib.to_input(batch, [[h, w]], feed)).to(device)
            outputs = [o[0].float().cpu().numpy() for o in model(x)]
            task.write(record, task.detect(record, outputs))
            progress.update()
    seconds = time.time() - started
    task.finish(out)
    result = coco_eval.evaluate(
        out,
        os.path.join(out, "detections.json"),
        root,
        image_ids=[image["id"] for image in images],
        figure_images=0,
    )
    return {
        "metrics": result["metrics"],
        "images": result["images"],
        "detections": result["detections"],
        "input_size": size,
        "profile": profile,
        "images_per_s": len(images) / max(seconds, 1e-9),
        "root": os.path.abspath(root),
    }
