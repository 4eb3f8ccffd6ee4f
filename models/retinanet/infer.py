"""The RetinaNet infer stage: a backend runs the store, the host postprocesses to COCO results.

    python -m models.retinanet.infer --out OUT --model COMPILE_DIR --data DATA_DIR \
        --backend torchscript|onnxruntime|aie --batch-size 1 --device cpu [--shard I/N]

The model file is COMPILE_DIR/compile.json's "model" (relative to COMPILE_DIR unless
absolute) when there is one, else COMPILE_DIR/model.ts or model.onnx by the backend's
suffix; a file path is used as it is. DATA_DIR is the COCO data stage's store: records
{"id", "file", "orig_hw", "resized_hw", "valid_hw"}. Each image's outputs go through
postprocess.Postprocessor (score filter, top-k, decode, class-wise NMS on the host; the
model's outputs may be dense or export --outputs topk's candidates, told apart by their
count) and postprocess.rescale (back to the original image), outside the timed region.

Writes OUT/detections.json (COCO results: [{"image_id", "category_id", "bbox": [x, y, w, h],
"score"}], compact) and OUT/timing.json (the harness's record, plus postprocessing time).
With --shard I/N only records I, I + N, I + 2N, ... of the store are run (0 <= I < N).

Imports no torch itself: the backend brings its engine.
"""

import json
import os
import time

from models.retinanet import postprocess
from zoostage import cli
from zoostage.backends.compile import compiled_model
from zoostage.errors import UserError
from zoostage.shards import parse_shard, shard_indices


def write_compact_json(path, data):
    """Atomic like cli.write_json, without indentation: detections run to 100 per image."""
    tmp = path + ".tmp"
    with open(tmp, "w") as handle:
        json.dump(data, handle, separators=(",", ":"))
    os.replace(tmp, path)


class Collector(object):
    """on_outputs for the harness: postprocess each image, keep its COCO results."""

    def __init__(self, store, postprocessor):
        self.store = store
        self.post = postprocessor
        self.results = []
        self.seconds = 0.0
        self.images = 0

    def __call__(self, indices, outputs):
        start = time.perf_counter()
        for row, index in enumerate(indices):
            record = self.store.records[index]
            if len(outputs) == 3:  # export --outputs topk: logits, indices, box_deltas
                found = self.post.detect_candidates(
                    outputs[0][row], outputs[1][row], outputs[2][row]
                )
            else:  # dense: cls_logits, box_deltas
                found = self.post.detect(outputs[0][row], outputs[1][row])
            resized = record.get("resized_hw") or record["valid_hw"]
            boxes, scores, labels = postprocess.rescale(
                *found, resized_hw=resized, orig_hw=record["orig_hw"]
            )
            self.results.extend(postprocess.coco_results(record["id"], boxes, scores, labels))
            self.images += 1
        self.seconds += time.perf_counter() - start


def main(args):
    from data_scripts.store import Store
    from zoostage.backends import get_backend

    if args.batch_size < 1:
        raise UserError("--batch-size must be at least 1")
    shard, shards = parse_shard(args.shard)
    store = Store(args.data)
    post = postprocess.Postprocessor(store.input_hw)
    options = {"device": args.device}
    if args.threads:
        options["threads"] = args.threads
    backend = get_backend(args.backend, **options)
    path, _ = compiled_model(args.model, backend.suffix)
    backend.load(path)
    collector = Collector(store, post)
    indices = shard_indices(len(store), args.shard)
    from zoostage.backends.harness import infer_store

    try:
        timing = infer_store(
            store,
            backend,
            args.batch_size,
            collector,
            indices=indices,
            warmup=args.warmup,
            label="retinanet %s" % args.backend,
        )
    finally:
        backend.close()
    timing.update(
        model=os.path.abspath(path),
        shard=[shard, shards],
        detections=len(collector.results),
        postprocess_mean_ms=1000.0 * collector.seconds / max(collector.images, 1),
        input_hw=list(store.input_hw),
        num_anchors=post.num_anchors,
    )
    write_compact_json(os.path.join(args.out, "detections.json"), collector.results)
    cli.write_json(os.path.join(args.out, "timing.json"), timing)


def build_parser():
    parser = cli.parser(__doc__.splitlines()[0])
    parser.add_argument(
        "--model",
        required=True,
        help="compile stage folder (compile.json), export folder, or model file",
    )
    parser.add_argument("--data", required=True, help="the data stage's store folder")
    parser.add_argument(
        "--backend",
        default="torchscript",
        help="torchscript, onnxruntime or aie (default torchscript)",
    )
    parser.add_argument("--batch-size", type=int, default=1, help="images per call (default 1)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda:N, or the NPU index")
    parser.add_argument("--shard", help="run only records I, I + N, ... of the store: I/N")
    parser.add_argument("--threads", type=int, help="CPU threads of the backend")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls first (default 2)")
    return parser


if __name__ == "__main__":
    cli.run(main, build_parser())
