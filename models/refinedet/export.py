"""Export RefineDet320 to ONNX (opset 11, dynamic batch), checked against onnxruntime.

    python -m models.refinedet.export --out OUT --weights WEIGHTS_STAGE_DIR [--opset 11]

Writes OUT/model.onnx (input `image` (N, 3, 320, 320); outputs `arm_loc`, `arm_conf`,
`odm_loc`, `odm_conf`, confidences softmaxed, as models.refinedet.net documents) and
OUT/export.json: {"weights": "official" | "given" | "random", "opset", "inputs",
"outputs": {name: shape}, "max_abs_diff"} (+ versions). `max_abs_diff` is the largest
difference between onnxruntime and eager torch on a batch of two, or null when
onnxruntime is not installed here.

Runs from torch 1.5 (the atc env, the seed's exporter) to the newest torch (where the
TorchScript-based exporter is asked for with dynamo=False).
"""

import inspect
import os
import sys
import warnings

import numpy as np

from models.refinedet import params
from zoostage import cli
from zoostage.errors import UserError
from zoostage.fetch import weights_from

INPUT_NAME = "image"
OUTPUT_NAMES = ("arm_loc", "arm_conf", "odm_loc", "odm_conf")
MODEL_FILE = "model.onnx"
MANIFEST = "export.json"
BATCH_AXIS = "batch"
# Beyond this, onnxruntime and torch disagree for more than float rounding.
MAX_DIFF_WARN = 1e-3

_SOURCES = {"given": "given", "cache": "official", "download": "official", "random": "random"}


def export_onnx(model, path, opset=11, batch_size=1, size=320):
    """torch.onnx.export with the contract's names and a dynamic batch axis."""
    import torch

    dummy = torch.zeros(batch_size, 3, size, size)
    axes = dict((name, {0: BATCH_AXIS}) for name in (INPUT_NAME, *OUTPUT_NAMES))
    options = dict(
        input_names=[INPUT_NAME],
        output_names=list(OUTPUT_NAMES),
        dynamic_axes=axes,
        opset_version=int(opset),
        do_constant_folding=True,
    )
    # torch >= 2.5 has a dynamo exporter (the default from 2.9); the TorchScript one
    # gives the graph ATC was validated on. Older torch has no such parameter.
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        options["dynamo"] = False
    with torch.no_grad(), warnings.catch_warnings():
        # The newest torch warns that this exporter is legacy: chosen on purpose, see above.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model, (dummy,), path, **options)
    return path


def eager_outputs(model, batch):
    import torch

    with torch.no_grad():
        return [o.numpy() for o in model(torch.from_numpy(batch))]


def onnxruntime_outputs(path, batch):
    """Outputs of the ONNX file under onnxruntime, or None when it is not installed."""
    try:
        import onnxruntime
    except ImportError:
        return None
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    return session.run(list(OUTPUT_NAMES), {INPUT_NAME: batch})


def graph_shapes(path):
    """{name: shape} of the graph's inputs and outputs (symbolic axes by name), or None."""
    try:
        import onnx
    except ImportError:
        return None
    graph = onnx.load(path, load_external_data=False).graph

    def shape(value):
        dims = value.type.tensor_type.shape.dim
        return [d.dim_param if d.dim_param else int(d.dim_value) for d in dims]

    initializers = set(i.name for i in graph.initializer)
    inputs = dict((v.name, shape(v)) for v in graph.input if v.name not in initializers)
    outputs = dict((v.name, shape(v)) for v in graph.output)
    return inputs, outputs


def check_graph(path):
    """onnx.checker on the exported file, when onnx is installed."""
    try:
        import onnx
    except ImportError:
        return False
    onnx.checker.check_model(path)
    return True


def run_export(out, weights_dir, opset=11, seed=0, check_batch=2):
    import torch

    from models.refinedet.net import build_model

    checkpoint, manifest = weights_from(weights_dir)
    source = manifest.get("source")
    if source not in _SOURCES:
        raise UserError(
            "weights manifest in %s has an unknown source %r; rerun the weights "
            "stage" % (weights_dir, source)
        )
    init_seed = manifest.get("seed") if manifest.get("seed") is not None else seed
    model = build_model(checkpoint, seed=init_seed)
    path = os.path.join(out, MODEL_FILE)
    export_onnx(model, path, opset=opset)
    checked = check_graph(path)

    rng = np.random.RandomState(seed)
    # Inputs in the range the preprocessing produces (pixels minus the BGR means).
    batch = (rng.uniform(0, 255, (check_batch, 3, 320, 320)) - 117.0).astype(np.float32)
    expected = eager_outputs(model, batch)
    found = onnxruntime_outputs(path, batch)
    max_abs_diff = None
    if found is not None:
        max_abs_diff = float(max(np.abs(a - b).max() for a, b in zip(expected, found)))
        if max_abs_diff > MAX_DIFF_WARN:
            sys.stderr.write("warning: onnxruntime and torch differ by up to %g\n" % max_abs_diff)
    shapes = graph_shapes(path)
    if shapes is None:
        inputs = {INPUT_NAME: [BATCH_AXIS, 3, 320, 320]}
        outputs = dict((n, [BATCH_AXIS, *o.shape[1:]]) for n, o in zip(OUTPUT_NAMES, expected))
    else:
        inputs, outputs = shapes
    record = {
        "weights": _SOURCES[source],
        "weights_sha256": manifest.get("sha256"),
        "seed": init_seed if checkpoint is None else None,
        "opset": int(opset),
        "inputs": inputs,
        "outputs": outputs,
        "max_abs_diff": max_abs_diff,
        "check_batch": int(check_batch),
        "onnx_checked": checked,
        "torch": torch.__version__,
        "model": MODEL_FILE,
    }
    cli.write_json(os.path.join(out, MANIFEST), record)
    return record


def main(args):
    record = run_export(args.out, args.weights, opset=args.opset, seed=args.seed)
    sys.stderr.write(
        "export: %s (weights %s, max |onnxruntime - torch| %s)\n"
        % (os.path.join(args.out, MODEL_FILE), record["weights"], record["max_abs_diff"])
    )


def build_parser():
    return cli.parser(__doc__.splitlines()[0], params.EXPORT)


if __name__ == "__main__":
    cli.run(main, build_parser())
