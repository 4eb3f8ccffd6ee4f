"""The RetinaNet infer stage: the store through a backend, detections as COCO results.

    python -m models.retinanet.infer --out OUT --model COMPILE_DIR --data DATA_DIR \\
        --backend torchscript|onnxruntime|aie --batch-size 1 --device cpu [--shard I/N] \\
        [--profile seed|upstream]

The skeleton (zoostage.infer) runs the backend and times it; this module adds
RetinaNet's part. DATA_DIR is the COCO data stage's store: records {"id", "file",
"orig_hw", "resized_hw", "valid_hw"}. Each image's outputs go through the profile's
postprocess, then back to the original image:

  seed      seed_postprocess.SeedPostprocessor (the ModelZoo graph's per-class top-200,
            float16, BatchMultiClassNMS) from export --outputs class_topk or dense, then
            seed_postprocess.seed_rescale and the score filter of Retinanet_postprocess.py;
  upstream  postprocess.Postprocessor (detectron2's inference_single_image) from export
            --outputs topk or dense, then postprocess.rescale (detector_postprocess).

The kind of outputs is told apart by their count and shape; a kind the profile cannot
use is a one-line error. Writes OUT/detections.json: COCO results [{"image_id",
"category_id", "bbox": [x, y, w, h], "score"}], compact. Imports no torch itself: the
backend brings its runtime.
"""

import json
import os

from models.retinanet import postprocess, seed_postprocess
from zoostage import infer
from zoostage.errors import UserError

PROFILES = ("seed", "upstream")


def write_compact_json(path, data):
    """Atomic like cli.write_json, without indentation: detections run to 100 per image."""
    tmp = path + ".tmp"
    with open(tmp, "w") as handle:
        json.dump(data, handle, separators=(",", ":"))
    os.replace(tmp, path)


def output_kind(outputs):
    """dense, topk or class_topk, from one batch's outputs (see export.py)."""
    if len(outputs) == 3:
        return "topk"
    return "class_topk" if len(outputs[0].shape) == 4 else "dense"


class RetinaNetTask(infer.Task):
    name = "RetinaNet"
    # topk export: logits, indices, box_deltas; dense: cls_logits, box_deltas;
    # class_topk: boxes, scores
    outputs = (3, 2)

    def __init__(self, store, args):
        super(RetinaNetTask, self).__init__(store, args)
        self.profile = getattr(args, "profile", None) or "seed"
        if self.profile not in PROFILES:
            raise UserError("--profile must be seed or upstream, not %r" % (self.profile,))
        if self.profile == "seed":
            self.post = seed_postprocess.SeedPostprocessor(store.input_hw)
        else:
            self.post = postprocess.Postprocessor(store.input_hw)
        self.kind = None
        self.results = []

    def check_outputs(self, outputs, model_path):
        super(RetinaNetTask, self).check_outputs(outputs, model_path)
        self.kind = output_kind(outputs)
        usable = {"seed": ("dense", "class_topk"), "upstream": ("dense", "topk")}[self.profile]
        if self.kind not in usable:
            raise UserError(
                "%s was exported with --outputs %s, which the %s profile's postprocess cannot "
                "start from: export again with --outputs auto (or %s), or run the other "
                "profile" % (model_path, self.kind, self.profile, " or ".join(usable))
            )

    def find(self, outputs):
        """(boxes, scores, labels) in input pixels from one image's outputs."""
        if self.kind is None:
            self.kind = output_kind([o[None] for o in outputs])
        if self.kind == "topk":
            return self.post.detect_candidates(*outputs)
        if self.kind == "class_topk":
            return self.post.detect_nms_inputs(*outputs)
        return self.post.detect(*outputs)

    def detect(self, record, outputs):
        boxes, scores, labels = self.find(outputs)
        resized = record.get("resized_hw") or record["valid_hw"]
        if self.profile == "seed":
            boxes = seed_postprocess.seed_rescale(boxes, resized, record["orig_hw"])
            boxes, scores, labels = seed_postprocess.keep_scored(boxes, scores, labels)
        else:
            boxes, scores, labels = postprocess.rescale(
                boxes, scores, labels, resized_hw=resized, orig_hw=record["orig_hw"]
            )
        return postprocess.coco_results(record["id"], boxes, scores, labels)

    def settings(self):
        if self.profile == "seed":
            values = {
                "score_thresh": seed_postprocess.SCORE_THRESH,
                "topk_per_class": seed_postprocess.TOPK_PER_CLASS,
                "nms_thresh": seed_postprocess.NMS_THRESH,
                "max_detections": postprocess.MAX_DETECTIONS,
                "precision": "float16 boxes and scores into the NMS",
            }
        else:
            values = {
                "score_thresh": postprocess.SCORE_THRESH,
                "topk_candidates": postprocess.TOPK_CANDIDATES,
                "nms_thresh": postprocess.NMS_THRESH,
                "max_detections": postprocess.MAX_DETECTIONS,
            }
        values.update(profile=self.profile, outputs=self.kind, num_anchors=self.post.num_anchors)
        return values

    def write(self, record, detections):
        self.results.extend(detections)

    def finish(self, out):
        write_compact_json(os.path.join(out, "detections.json"), self.results)


def build_parser():
    parser = infer.parser(__doc__.splitlines()[0])
    parser.add_argument(
        "--profile",
        choices=PROFILES,
        default="seed",
        help="postprocess: seed (the ModelZoo graph's) or upstream (detectron2's)",
    )
    return parser


if __name__ == "__main__":
    infer.main(RetinaNetTask, build_parser=build_parser)
