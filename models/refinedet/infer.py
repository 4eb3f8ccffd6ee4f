"""The RefineDet320 infer stage: the VOC store through a backend, per-class detections.

    python -m models.refinedet.infer --out OUT --model COMPILE_DIR --data DATA_DIR \
        --backend onnxruntime|om --batch-size 1 --device cpu [--shard I/N] [--keep-top-k K]

The skeleton (zoostage.infer) runs the backend and times it; this module adds RefineDet's
part. The store (zoostage.store) holds records {"id": "000001", "orig_hw": [h, w],
...}; the model returns (arm_loc, arm_conf, odm_loc, odm_conf) in some order, which
postprocess.order_outputs sorts out; models.refinedet.postprocess decodes and filters.

Writes OUT/detections.json:
    {"classes": ["aeroplane", ...],                  the 20 VOC classes, reference order
     "images": {id: {class_name: [[x1, y1, x2, y2, score], ...], ...}},
     "coordinates": ..., "postprocess": {thresholds}}
every image (of the shard) with every class (an empty list when none), boxes in original
image pixels, highest score first, each number the shortest text that reads back as the
exact float32 the postprocessing computed (the evaluation repeats the reference's float32
arithmetic).
"""

import json
import os

import numpy as np

from models.refinedet import postprocess as post
from models.refinedet.priors import prior_boxes
from zoostage import infer
from zoostage.errors import UserError

DETECTIONS_FILE = "detections.json"
INPUT_HW = (320, 320)


def float32_text(values):
    """Shortest decimal text of each float32 that reads back as the same float32."""
    values = np.asarray(values, dtype=np.float32).reshape(-1)
    finite = np.isfinite(values)
    text = values.astype(str).astype(object)
    exact = np.zeros(values.shape, dtype=bool)
    exact[finite] = text[finite].astype(str).astype(np.float32) == values[finite]
    for i in np.nonzero(finite & ~exact)[0]:
        text[i] = "%.9g" % values[i]  # 9 significant digits always round-trip a float32
    for i in np.nonzero(~finite)[0]:
        text[i] = "NaN" if np.isnan(values[i]) else ("Infinity" if values[i] > 0 else "-Infinity")
    return text


def rows_text(dets):
    """(N, 5) detections as a JSON array of arrays."""
    if len(dets) == 0:
        return "[]"
    cells = float32_text(dets).reshape(-1, 5)
    return "[[" + "],[".join(",".join(row) for row in cells) + "]]"


def write_detections(path, header, images):
    """detections.json from header fields and [(image id, per-class list), ...]."""
    tmp = path + ".tmp"
    with open(tmp, "w") as handle:
        handle.write("{")
        for key in sorted(header):
            handle.write("%s:%s," % (json.dumps(key), json.dumps(header[key], sort_keys=True)))
        handle.write('"images":{')
        for n, (image_id, per_class) in enumerate(images):
            fields = (
                "%s:%s" % (json.dumps(name), rows_text(per_class[label]))
                for label, name in enumerate(post.VOC_CLASSES, 1)
            )
            handle.write("%s%s:{%s}" % ("," if n else "", json.dumps(image_id), ",".join(fields)))
        handle.write("}}\n")
    os.replace(tmp, path)


class RefineDetTask(infer.Task):
    name = "RefineDet320"
    outputs = 4  # arm_loc, arm_conf, odm_loc, odm_conf
    input_hw = INPUT_HW

    def __init__(self, store, args):
        super(RefineDetTask, self).__init__(store, args)
        for record in store.records[:1]:
            if "id" not in record or "orig_hw" not in record:
                raise UserError(
                    "store records in %s lack 'id' / 'orig_hw'; rerun the VOC data stage"
                    % store.root
                )
        self.priors = prior_boxes()
        self.keep_top_k = args.keep_top_k or None
        self.images_done = []

    def detect(self, record, outputs):
        try:
            ordered = post.order_outputs(outputs)
        except ValueError as error:
            raise UserError(
                "%s: %s; is it a RefineDet320 VOC model?" % (self.args.model, error)
            ) from None
        per_class = post.detect_image(*ordered, priors=self.priors, keep_top_k=self.keep_top_k)
        return post.scale_to_image(per_class, record["orig_hw"])

    def count(self, per_class):
        return sum(len(dets) for dets in per_class[1:])

    def settings(self):
        return {
            "conf_thresh": post.CONF_THRESH,
            "nms_thresh": post.NMS_THRESH,
            "top_k": post.TOP_K,
            "objectness_thresh": post.OBJECTNESS_THRESH,
            "keep_top_k": self.keep_top_k,
        }

    def write(self, record, per_class):
        self.images_done.append((str(record["id"]), per_class))

    def finish(self, out):
        header = {
            "classes": list(post.VOC_CLASSES),
            "coordinates": "pixels of the original image: x1, y1, x2, y2, score",
            "postprocess": self.settings(),
        }
        write_detections(os.path.join(out, DETECTIONS_FILE), header, self.images_done)


def build_parser():
    parser = infer.parser(__doc__.splitlines()[0], backend="onnxruntime")
    parser.add_argument(
        "--keep-top-k",
        type=int,
        default=0,
        help="cap on detections per image across classes (0: none, as the "
        "reference runs; it declares 500 but never applies it)",
    )
    return parser


if __name__ == "__main__":
    infer.main(RefineDetTask, build_parser=build_parser)
