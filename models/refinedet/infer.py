"""Run a compiled RefineDet320 over the preprocessed VOC store and write its detections.

    python -m models.refinedet.infer --out OUT --model COMPILE_DIR --data DATA_DIR \
        --backend onnxruntime|om --batch-size 1 --device cpu [--shard I/N]

The model is COMPILE_DIR/compile.json's "model" when that file names one, else
COMPILE_DIR/model.onnx or model.om (the backend's suffix); --model may also be the file.
The store (data_scripts.store) holds records {"id": "000001", "orig_hw": [h, w], ...}.
Postprocessing (models.refinedet.postprocess) runs outside the timed region.

Writes OUT/detections.json:
    {"classes": ["aeroplane", ...],                  the 20 VOC classes, reference order
     "images": {id: {class_name: [[x1, y1, x2, y2, score], ...], ...}},
     "coordinates": ..., "postprocess": {thresholds}}
every image (of the shard) with every class (an empty list when none), boxes in original
image pixels, highest score first, each number the shortest text that reads back as the
exact float32 the postprocessing computed (the evaluation repeats the reference's float32
arithmetic); and OUT/timing.json (the harness's timing record).
"""

import json
import os

import numpy as np

from models.refinedet import postprocess as post
from models.refinedet.priors import prior_boxes
from zoostage import cli
from zoostage.backends import NPU_BACKENDS, get_backend
from zoostage.backends.compile import compiled_model
from zoostage.backends.harness import infer_store
from zoostage.errors import UserError
from zoostage.shards import shard_indices

DETECTIONS_FILE = "detections.json"
TIMING_FILE = "timing.json"
INPUT_HW = (320, 320)


def _compiled_batch(manifest):
    shape = manifest.get("input_shape")
    if isinstance(shape, str):
        shape = [v for v in shape.split(",") if v.strip()]
    try:
        return int(shape[0]) if shape else None
    except (TypeError, ValueError):
        return None


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


def run_infer(
    out,
    model,
    data,
    backend_name,
    batch_size=1,
    device="cpu",
    shard=None,
    warmup=2,
    keep_top_k=None,
):
    from data_scripts.store import Store

    if batch_size < 1:
        raise UserError("--batch-size must be at least 1")
    if backend_name in NPU_BACKENDS and str(device).lower() == "cpu":
        raise UserError(
            "backend %s runs on an NPU: pass --device npu:0 (or choose "
            "--backend onnxruntime for the CPU)" % backend_name
        )
    store = Store(data)
    if tuple(store.input_hw) != INPUT_HW:
        raise UserError(
            "the store in %s holds %dx%d inputs; RefineDet320 takes 320x320 (rerun "
            "the data stage for this recipe)" % (data, *store.input_hw)
        )
    for record in store.records[:1]:
        if "id" not in record or "orig_hw" not in record:
            raise UserError(
                "store records in %s lack 'id' / 'orig_hw'; rerun the VOC data stage" % data
            )
    backend = get_backend(backend_name, device=device)
    path, manifest = compiled_model(model, backend.suffix)
    compiled = _compiled_batch(manifest)
    if not backend.dynamic_batch and compiled is not None and compiled != batch_size:
        raise UserError(
            "%s was compiled for batch %d, not --batch-size %d" % (path, compiled, batch_size)
        )
    indices = shard_indices(len(store), shard)
    priors = prior_boxes()
    images = []

    def on_outputs(chosen, outputs):
        try:
            ordered = post.order_outputs(outputs)
        except ValueError as error:
            raise UserError("%s: %s; is it a RefineDet320 VOC model?" % (path, error)) from None
        records = [store.records[i] for i in chosen]
        results = post.postprocess(
            ordered, priors, [r["orig_hw"] for r in records], keep_top_k=keep_top_k
        )
        for record, per_class in zip(records, results):
            images.append((str(record["id"]), per_class))

    backend.load(path)
    try:
        timing = infer_store(
            store,
            backend,
            batch_size,
            on_outputs,
            indices=indices,
            warmup=warmup,
            label="refinedet infer",
        )
    finally:
        backend.close()
    timing["model"] = path
    # Per batch size, as the report compares throughput_bs{B} against the recipe.
    if timing.get("calls"):
        timing["by_batch"] = {str(batch_size): {"throughput": timing["throughput"]}}
    header = {
        "classes": list(post.VOC_CLASSES),
        "coordinates": "pixels of the original image: x1, y1, x2, y2, score",
        "postprocess": {
            "conf_thresh": post.CONF_THRESH,
            "nms_thresh": post.NMS_THRESH,
            "top_k": post.TOP_K,
            "objectness_thresh": post.OBJECTNESS_THRESH,
            "keep_top_k": keep_top_k,
        },
    }
    write_detections(os.path.join(out, DETECTIONS_FILE), header, images)
    cli.write_json(os.path.join(out, TIMING_FILE), timing)
    return timing


def main(args):
    run_infer(
        args.out,
        args.model,
        args.data,
        args.backend,
        batch_size=args.batch_size,
        device=args.device,
        shard=args.shard,
        warmup=args.warmup,
        keep_top_k=args.keep_top_k or None,
    )


def build_parser():
    parser = cli.parser(__doc__.splitlines()[0])
    parser.add_argument(
        "--model", required=True, help="output folder of the compile stage, or a model file"
    )
    parser.add_argument("--data", required=True, help="output folder of the data stage")
    parser.add_argument("--backend", default="onnxruntime", help="onnxruntime or om")
    parser.add_argument("--batch-size", type=int, default=1, help="images per call")
    parser.add_argument("--device", default="cpu", help="cpu, or npu:N for the om backend")
    parser.add_argument("--shard", help="run only part I of N of the images (I/N, from 0)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls before timing")
    parser.add_argument(
        "--keep-top-k",
        type=int,
        default=0,
        help="cap on detections per image across classes (0: none, as the "
        "reference runs; it declares 500 but never applies it)",
    )
    return parser


if __name__ == "__main__":
    cli.run(main, build_parser())
