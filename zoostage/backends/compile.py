"""The compile stage: turn an exported model into the chosen backend's model.

    python -m zoostage.backends.compile --out OUT --backend aie --model export/model.ts \
        --input-shape 1,3,1000,1000 --precision fp16 --soc-version Ascend310P3 --device 0

Writes OUT/model<suffix> and OUT/compile.json ({"model": file name, "backend", ...}).
With --batch-sizes, a static-shape backend (om, aie) also gets OUT/model_bs<B><suffix>
for each other batch size B (compile.json "by_batch").
For torchscript and onnxruntime it checks the model loads and runs, then copies it; for
aie it runs torch_aie.compile; for om it runs ATC.
"""

import json
import os

from zoostage import cli
from zoostage.backends import get_backend, params
from zoostage.errors import UserError
from zoostage.safepath import child_path

MANIFEST = "compile.json"


def compiled_model(model, suffix):
    """(model file, compile.json contents or {}) from a compile folder or a model file."""
    if os.path.isfile(model):
        return model, {}
    if not os.path.isdir(model):
        raise UserError("model not found: %s (run the compile stage first)" % model)
    manifest = {}
    path = os.path.join(model, MANIFEST)
    if os.path.isfile(path):
        with open(path) as handle:
            manifest = json.load(handle)
    name = manifest.get("model") or ("model" + suffix)
    found = child_path(model, name, "model file named in " + path)
    if not os.path.isfile(found):
        raise UserError(
            "no model file %s in %s (exported or compiled for another backend?)" % (name, model)
        )
    return found, manifest


def parse_shape(text):
    try:
        shape = [int(v) for v in text.split(",")]
    except ValueError:
        shape = []
    if len(shape) != 4 or min(shape) <= 0:
        raise UserError("--input-shape takes N,C,H,W like 1,3,1000,1000, not %r" % text)
    return shape


def parse_batch_sizes(text):
    try:
        sizes = sorted(set(int(v) for v in str(text).split(",") if v.strip()))
    except ValueError:
        sizes = []
    if not sizes or min(sizes) <= 0:
        raise UserError("--batch-sizes takes positive integers like 1,4,8, not %r" % (text,))
    return sizes


def main(args):
    backend = get_backend(args.backend, device=args.device)
    # --model is the export folder (the file the backend takes is picked by its suffix:
    # model.ts for torchscript / aie, model.onnx for onnxruntime / om) or a file.
    source, _ = compiled_model(args.model, backend.source_suffix or backend.suffix)
    shape = parse_shape(args.input_shape)
    # A static-shape backend needs one model per batch size (the seed's one .om per
    # batch); a dynamic one serves every batch from one file.
    sizes = [shape[0]]
    if args.batch_sizes and not backend.dynamic_batch:
        sizes = sorted(set(parse_batch_sizes(args.batch_sizes)) | {shape[0]})
    by_batch = {}
    facts = {}
    for size in sizes:
        name = (
            "model" + backend.suffix
            if size == shape[0]
            else "model_bs%d%s" % (size, backend.suffix)
        )
        print("compile: %s for batch %d -> %s" % (backend.name, size, name))
        facts = (
            backend.compile(
                source,
                os.path.join(args.out, name),
                [size, *shape[1:]],
                precision=args.precision,
                soc_version=args.soc_version,
            )
            or {}
        )
        by_batch[str(size)] = dict(facts, model=name)
    record = {
        "model": "model" + backend.suffix,
        "backend": args.backend,
        "source": source,
        "input_shape": shape,
        "by_batch": by_batch,
    }
    record.update(by_batch[str(shape[0])])
    record["model"] = "model" + backend.suffix
    cli.write_json(os.path.join(args.out, MANIFEST), record)


def build_parser():
    return cli.parser(__doc__.splitlines()[0], params.COMPILE)


if __name__ == "__main__":
    cli.run(main, build_parser())
