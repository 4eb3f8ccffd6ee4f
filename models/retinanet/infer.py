"""The RetinaNet infer stage: the store through a backend, detections as COCO results.

    python -m models.retinanet.infer --out OUT --model COMPILE_DIR --data DATA_DIR \\
        --backend torchscript|onnxruntime|aie --batch-size 1 --device cpu [--shard I/N]

The skeleton (zoostage.infer) runs the backend and times it; this module adds
RetinaNet's part. DATA_DIR is the COCO data stage's store: records {"id", "file",
"orig_hw", "resized_hw", "valid_hw"}. Each image's outputs go through
postprocess.Postprocessor (score filter, top-k, decode, class-wise NMS on the host; the
model's outputs may be dense or export --outputs topk's candidates, told apart by their
count) and postprocess.rescale (back to the original image).

Writes OUT/detections.json: COCO results [{"image_id", "category_id", "bbox": [x, y, w,
h], "score"}], compact. Imports no torch itself: the backend brings its engine.
"""

import json
import os

from models.retinanet import postprocess
from zoostage import infer


def write_compact_json(path, data):
    """Atomic like cli.write_json, without indentation: detections run to 100 per image."""
    tmp = path + ".tmp"
    with open(tmp, "w") as handle:
        json.dump(data, handle, separators=(",", ":"))
    os.replace(tmp, path)


class RetinaNetTask(infer.Task):
    name = "RetinaNet"
    # topk export: logits, indices, box_deltas; dense export: cls_logits, box_deltas
    outputs = (3, 2)

    def __init__(self, store, args):
        super(RetinaNetTask, self).__init__(store, args)
        self.post = postprocess.Postprocessor(store.input_hw)
        self.results = []

    def detect(self, record, outputs):
        if len(outputs) == 3:
            found = self.post.detect_candidates(*outputs)
        else:
            found = self.post.detect(*outputs)
        resized = record.get("resized_hw") or record["valid_hw"]
        boxes, scores, labels = postprocess.rescale(
            *found, resized_hw=resized, orig_hw=record["orig_hw"]
        )
        return postprocess.coco_results(record["id"], boxes, scores, labels)

    def settings(self):
        return {
            "score_thresh": postprocess.SCORE_THRESH,
            "topk_candidates": postprocess.TOPK_CANDIDATES,
            "nms_thresh": postprocess.NMS_THRESH,
            "max_detections": postprocess.MAX_DETECTIONS,
            "num_anchors": self.post.num_anchors,
        }

    def write(self, record, detections):
        self.results.extend(detections)

    def finish(self, out):
        write_compact_json(os.path.join(out, "detections.json"), self.results)


def build_parser():
    return infer.parser(__doc__.splitlines()[0])


if __name__ == "__main__":
    infer.main(RetinaNetTask, build_parser=build_parser)
