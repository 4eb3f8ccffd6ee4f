"""The RetinaFace infer stage: the store through a backend, faces written as WIDER files.

    python -m models.retinaface.infer --out OUT --model COMPILE_DIR --data DATA_DIR \\
        --backend torchscript|onnxruntime|aie --batch-size 1 --device cpu [--shard I/N] \\
        [--profile seed|upstream] [--top-k N --keep-top-k N (upstream only)]

The skeleton (zoostage.infer) runs the backend and times it; this module adds
RetinaFace's part: the model returns (loc, conf, landms) over the priors of the input
size; `postprocess.detect` turns one image's outputs into faces in original-image pixels
(the store's "scale" undoes the resize), and each image's faces go to
OUT/predictions/<event>/<name>.txt, the WIDER FACE evaluation's format.
"""

import os

import numpy as np

from data_scripts.widerface.predictions import write_image_predictions
from models.retinaface import params, postprocess
from models.retinaface.priors import prior_box
from zoostage import cli, infer
from zoostage.errors import UserError

PREDICTIONS = "predictions"
# Faces kept for the report's figure (the evaluate stage draws them): the first images
# with a face at or above this score, their faces with landmarks.
FACES_FILE = "faces.json"
FIGURE_SCORE = 0.5
FIGURE_IMAGES = 6


class RetinaFaceTask(infer.Task):
    name = "RetinaFace"
    outputs = 3  # loc, conf (softmaxed), landms

    def __init__(self, store, args):
        super(RetinaFaceTask, self).__init__(store, args)
        try:
            postprocess.check_cuts(args.profile, args.top_k, args.keep_top_k)
        except ValueError as error:
            raise UserError(str(error)) from None
        self.priors = prior_box(store.input_hw)
        self.root = None
        self.faces = {}

    def check_outputs(self, outputs, model_path):
        super(RetinaFaceTask, self).check_outputs(outputs, model_path)
        if outputs[0].shape[1] != self.priors.shape[0]:
            height, width = self.store.input_hw
            raise UserError(
                "%s predicts %d anchors but %dx%d inputs have %d priors: the export and data "
                "stages were run with different --input-size"
                % (model_path, outputs[0].shape[1], height, width, self.priors.shape[0])
            )

    def detect(self, record, outputs):
        loc, conf, landms = outputs
        dets, points = postprocess.detect(
            loc,
            conf,
            landms,
            self.priors,
            self.store.input_hw,
            scale=float(record["scale"]),
            top_k=self.args.top_k,
            keep_top_k=self.args.keep_top_k,
        )
        confident = dets[:, 4] >= FIGURE_SCORE
        if len(self.faces) < FIGURE_IMAGES and confident.any():
            rows = np.concatenate([dets[confident], points[confident]], axis=1)
            self.faces[record["id"]] = {
                "file": record.get("file") or record["id"] + ".jpg",
                "faces": [[round(float(v), 2) for v in row] for row in rows],
            }
        return dets

    def settings(self):
        return {
            "profile": self.args.profile,
            "confidence_threshold": postprocess.CONFIDENCE_THRESHOLD,
            "nms_threshold": postprocess.NMS_THRESHOLD,
            "top_k": self.args.top_k,
            "keep_top_k": self.args.keep_top_k,
        }

    def start(self, out):
        self.root = os.path.join(out, PREDICTIONS)
        if not os.path.isdir(self.root):
            os.makedirs(self.root)

    def write(self, record, detections):
        write_image_predictions(self.root, record["id"], detections)

    def finish(self, out):
        cli.write_json(
            os.path.join(out, FACES_FILE),
            {"score_threshold": FIGURE_SCORE, "images": self.faces},
        )


def build_parser():
    return infer.parser(__doc__.splitlines()[0], params.INFER)


if __name__ == "__main__":
    infer.main(RetinaFaceTask, build_parser=build_parser)
