"""Run RetinaFace over a preprocessed WIDER FACE store; write prediction files and timing.

    python -m models.retinaface.infer --out OUT --model COMPILE_STAGE_DIR \\
        --data DATA_STAGE_DIR --backend torchscript|aie --batch-size 1 --device cpu \\
        [--shard I/N]

The model is COMPILE_DIR/<compile.json "model">, or COMPILE_DIR/model<backend suffix>
when the folder has no compile.json. Each image's detections, in original-image pixels,
go to OUT/predictions/<event>/<name>.txt (the WIDER FACE evaluation's format); the timing
record of the harness goes to OUT/timing.json, and a summary to OUT/infer.json.
`--shard I/N` (0-based I) runs records I, I+N, I+2N, ... only.
"""

import os

from data_scripts.store import Store
from data_scripts.widerface.predictions import write_image_predictions
from models.retinaface import postprocess
from models.retinaface.priors import prior_box
from zoostage import cli
from zoostage.backends import NAMES, get_backend
from zoostage.backends.compile import compiled_model
from zoostage.backends.harness import infer_store
from zoostage.errors import UserError
from zoostage.shards import parse_shard, shard_indices

PREDICTIONS = "predictions"
TIMING_FILE = "timing.json"
SUMMARY_FILE = "infer.json"


def infer(
    out, model_dir, data_dir, backend_name="torchscript", batch_size=1, device="cpu", shard=None
):
    """Run the store's images (or one shard of them); returns the timing record."""
    index, count = parse_shard(shard)
    if batch_size < 1:
        raise UserError("--batch-size must be at least 1 (got %d)" % batch_size)
    store = Store(data_dir)
    input_hw = store.input_hw
    priors = prior_box(input_hw)
    backend = get_backend(backend_name, device=device)
    path, _ = compiled_model(model_dir, backend.suffix)
    backend.load(path)

    pred_root = os.path.join(out, PREDICTIONS)
    if not os.path.isdir(pred_root):
        os.makedirs(pred_root)
    totals = {"images": 0, "detections": 0}

    def on_outputs(indices, outputs):
        if len(outputs) != 3:
            raise UserError(
                "%s returns %d outputs, not RetinaFace's 3 (loc, conf, landms): wrong model file"
                % (path, len(outputs))
            )
        loc, conf, landms = outputs
        if loc.shape[1] != priors.shape[0]:
            raise UserError(
                "%s predicts %d anchors but %dx%d inputs have %d priors: the export and data "
                "stages were run with different --input-size"
                % (path, loc.shape[1], input_hw[0], input_hw[1], priors.shape[0])
            )
        for row, i in enumerate(indices):
            record = store.records[i]
            dets, _ = postprocess.detect(
                loc[row], conf[row], landms[row], priors, input_hw, scale=float(record["scale"])
            )
            write_image_predictions(pred_root, record["id"], dets)
            totals["images"] += 1
            totals["detections"] += int(dets.shape[0])

    indices = shard_indices(len(store), shard)
    try:
        record = infer_store(
            store, backend, batch_size, on_outputs, indices=indices, label="infer %s" % backend.name
        )
    finally:
        backend.close()
    record["shard"] = [index, count]
    cli.write_json(os.path.join(out, TIMING_FILE), record)
    cli.write_json(
        os.path.join(out, SUMMARY_FILE),
        {
            "model": os.path.abspath(path),
            "backend": backend.name,
            "input_hw": [int(v) for v in input_hw],
            "images": totals["images"],
            "detections": totals["detections"],
            "shard": [index, count],
            "postprocess": {
                "confidence_threshold": postprocess.CONFIDENCE_THRESHOLD,
                "top_k": postprocess.TOP_K,
                "nms_threshold": postprocess.NMS_THRESHOLD,
                "keep_top_k": postprocess.KEEP_TOP_K,
            },
        },
    )
    return record


def main(args):
    infer(
        args.out,
        args.model,
        args.data,
        backend_name=args.backend,
        batch_size=args.batch_size,
        device=args.device,
        shard=args.shard,
    )


def build_parser():
    parser = cli.parser(__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="the compile stage's output folder")
    parser.add_argument("--data", required=True, help="the data stage's output folder")
    parser.add_argument(
        "--backend",
        default="torchscript",
        choices=NAMES,
        help="inference engine (default torchscript)",
    )
    parser.add_argument("--batch-size", type=int, default=1, help="images per call")
    parser.add_argument("--device", default="cpu", help="cpu, cuda:N or npu:N")
    parser.add_argument(
        "--shard", default=None, help="I/N: run records I, I+N, I+2N, ... (0-based I)"
    )
    return parser


if __name__ == "__main__":
    cli.run(main, build_parser())
