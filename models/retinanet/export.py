"""The RetinaNet export stage: TorchScript (and ONNX) of net.RetinaNet at a fixed input size.

    python -m models.retinanet.export --out OUT --weights WEIGHTS_STAGE_DIR \
        --input-size 1344 [--format torchscript|onnx] [--profile seed|upstream]
        [--outputs auto|dense|topk|class_topk]

The weights stage's folder gives the checkpoint (or says to start from a seeded random
init). The network is traced at 1 x 3 x S x S; the traced module is saved, loaded back and
compared with the eager network on another input (max abs difference recorded, a
mismatch stops the stage). Writes OUT/model.ts, with --format onnx also OUT/model.onnx
(opset 11, dynamic batch axis), and OUT/export.json:

    {"weights": "official" | "given" | "random", "input_shape": [1, 3, S, S],
     "outputs": {"cls_logits": [1, R, 80], "box_deltas": [1, R, 4]}, "anchors_per_level": [...],
     "traced_vs_eager_max_abs_diff": ..., "onnx_vs_eager_max_abs_diff": ..., ...}

--outputs picks the model's outputs (the infer stage's postprocess handles each; NMS is
on the host); auto: class_topk for the seed profile, topk for upstream:
  dense       cls_logits (N, R, 80), box_deltas (N, R, 4): the network as detectron2 has
              it; either profile's postprocess works from it;
  topk        logits (N, C), indices (N, C), box_deltas (N, R, 4): net.TopKCandidates,
              the best 1000 (anchor, class) pairs per level picked in the graph, what
              detectron2's postprocess (upstream profile) starts from; 5.5 MB per image
              to copy off the device instead of 114 MB at 1344;
  class_topk  boxes (N, M, 80, 4), scores (N, M, 80): seed_graph.ClassTopK, the seed's
              graph up to its NMS operator (per level, each class's 200 best anchors,
              decoded), for the seed profile; 1.6 MB per image.
Checked here: the host gives the same detections from the kind exported as from the
dense network.

Runs on torch 1.10.1 (the export env) and newer: only APIs that 1.10 has.
"""

import inspect
import os

from models.retinanet import PIXEL_MEAN_BGR, PIXEL_STD_BGR
from models.retinanet import anchors as anchor_lib
from zoostage import cli, fetch
from zoostage.errors import UserError

OPSET = 11
INPUT_NAMES = ["image"]
OUTPUT_NAMES = {
    "dense": ["cls_logits", "box_deltas"],
    "topk": ["logits", "indices", "box_deltas"],
    "class_topk": ["boxes", "scores"],
}
PROFILES = ("seed", "upstream")
# What --outputs auto exports for each profile: what its postprocess starts from.
AUTO_OUTPUTS = {"seed": "class_topk", "upstream": "topk"}
# The profiles whose postprocess can run from each kind of outputs.
PROFILES_OF_OUTPUTS = {
    "dense": PROFILES,
    "topk": ("upstream",),
    "class_topk": ("seed",),
}
# Relative difference above which a traced / exported model is not the eager one.
MAX_RELATIVE_DIFF = 1e-4


def _weights_kind(manifest):
    source = manifest.get("source")
    if source == "random":
        return "random"
    if source == "given":
        return "given"
    return "official"  # the recipe's checkpoint, from the cache or downloaded


def build(weights_dir):
    """(model in eval mode, facts): the network with the weights stage's checkpoint."""
    from models.retinanet import net
    from models.retinanet.checkpoint import load_weights

    path, manifest = fetch.weights_from(weights_dir)
    kind = _weights_kind(manifest)
    seed = manifest.get("seed")
    model = net.build_model(seed=seed if seed is not None else 0)
    facts = {
        "weights": kind,
        "weights_file": manifest.get("file"),
        "weights_sha256": manifest.get("sha256"),
        "seed": seed,
    }
    if path is not None:
        facts["checkpoint"] = load_weights(model, path)
    facts["parameters"] = net.count_parameters(model)
    return model, facts


def example_input(size, seed, batch=1):
    """A deterministic input in the range of a mean-subtracted image."""
    import torch

    generator = torch.Generator().manual_seed(int(seed))
    return torch.rand((batch, 3, size, size), generator=generator) * 255.0 - 120.0


def max_diffs(reference, other):
    """(max abs difference, the same relative to the reference's max magnitude)."""
    import numpy as np

    worst_abs, worst_rel = 0.0, 0.0
    for ref, out in zip(reference, other):
        ref = np.asarray(ref, dtype=np.float64)
        out = np.asarray(out, dtype=np.float64)
        if ref.shape != out.shape:
            raise RuntimeError("shape mismatch: %s vs %s" % (ref.shape, out.shape))
        diff = float(np.abs(ref - out).max()) if ref.size else 0.0
        worst_abs = max(worst_abs, diff)
        worst_rel = max(worst_rel, diff / max(float(np.abs(ref).max()), 1e-12))
    return worst_abs, worst_rel


def _numpy(outputs):
    return [o.detach().cpu().numpy() for o in outputs]


class Checker(object):
    """Compares an exported model's outputs with the eager module's on one check input.

    dense: every output, numerically. topk and class_topk: the outputs whose values do not
    depend on how a runtime orders equal scores (box_deltas; the sorted top-200 scores)
    numerically, and the rest by what the host makes of them: detections from the
    exported outputs must match those the profile's postprocess finds from the eager
    *dense* network. Equal scores may be picked or ordered differently by another
    runtime's top-k (either way is right), so a detection or two may differ.
    """

    def __init__(self, model, module, kind, size):
        import torch

        self.kind = kind
        self.input = example_input(size, seed=1)
        with torch.no_grad():
            self.eager = _numpy(module(self.input))
        self.post = None
        if kind != "dense":
            with torch.no_grad():
                cls_logits, box_deltas = _numpy(model(self.input))
            self.post = host_postprocess(kind, (size, size))
            self.dense = self.post.detect(cls_logits[0], box_deltas[0])

    def _numeric(self, outputs):
        """(eager, exported) outputs that must agree value for value."""
        if self.kind == "dense":
            return self.eager, outputs
        if self.kind == "topk":
            return self.eager[2:], outputs[2:]
        return self.eager[1:], outputs[1:]  # class_topk: the scores

    def _detections(self, outputs):
        if self.kind == "topk":
            return self.post.detect_candidates(outputs[0][0], outputs[1][0], outputs[2][0])
        return self.post.detect_nms_inputs(outputs[0][0], outputs[1][0])

    def compare(self, outputs, what):
        diff, rel = max_diffs(*self._numeric(outputs))
        if rel > MAX_RELATIVE_DIFF:
            raise RuntimeError(
                "%s model differs from the eager one: max abs diff %g (relative %g)"
                % (what, diff, rel)
            )
        facts = {what + "_vs_eager_max_abs_diff": diff, what + "_vs_eager_max_rel_diff": rel}
        if self.kind != "dense":
            found = self._detections(outputs)
            # Seed scores are float16: one step apart (2**-11 below 1) is the same score.
            score_tol = 1e-4 if self.kind == "topk" else 2.0**-11
            matched, total = match_detections(self.dense, found, score_tol)
            if matched < total - max(2, total // 100):
                raise RuntimeError(
                    "%s %s outputs give other detections than the dense network: "
                    "%d of %d match" % (what, self.kind, matched, total)
                )
            facts[what + "_%s_vs_dense_detections_matched" % self.kind] = [matched, total]
        return facts


def host_postprocess(kind, input_hw):
    """The host postprocess that reads `kind` outputs (and dense ones)."""
    if kind == "class_topk":
        from models.retinanet.seed_postprocess import SeedPostprocessor

        return SeedPostprocessor(input_hw)
    from models.retinanet.postprocess import Postprocessor

    return Postprocessor(input_hw)


def match_detections(reference, found, score_tol=1e-4):
    """(how many of `reference`'s detections `found` also has, the larger count)."""
    import numpy as np

    matched = 0
    for box, score, label in zip(*reference):
        same = (
            (found[2] == label)
            & (np.abs(found[1] - score) <= score_tol)
            & np.all(np.abs(found[0] - box) <= 1e-3 * (1.0 + np.abs(box)), axis=1)
        )
        matched += bool(same.any())
    return matched, max(len(reference[1]), len(found[1]))


def resolve_outputs(outputs, profile):
    """The kind of outputs to export: --outputs, with auto taken from the profile."""
    if profile not in PROFILES:
        raise UserError("--profile must be seed or upstream, not %r" % (profile,))
    kind = AUTO_OUTPUTS[profile] if outputs == "auto" else outputs
    if profile not in PROFILES_OF_OUTPUTS[kind]:
        raise UserError(
            "--outputs %s cannot serve the %s profile (its postprocess starts from %s): "
            "pass --outputs auto or dense" % (kind, profile, AUTO_OUTPUTS[profile])
        )
    return kind


def export_module(model, kind, size):
    """The module to trace for `kind` outputs."""
    from models.retinanet import net, seed_graph

    if kind == "dense":
        return model
    if kind == "topk":
        return net.TopKCandidates(model, (size, size))
    return seed_graph.ClassTopK(model, (size, size))


def trace(module, size, out_path, checker, names):
    """Trace at 1 x 3 x size x size, save, reload, compare with the eager module."""
    import torch

    with torch.no_grad():
        traced = torch.jit.trace(module, example_input(size, seed=0), check_trace=False)
    traced.save(out_path)
    loaded = torch.jit.load(out_path, map_location="cpu")
    with torch.no_grad():
        outputs = _numpy(loaded(checker.input))
    facts = checker.compare(outputs, "traced")
    facts["outputs"] = dict(zip(names, [list(o.shape) for o in checker.eager]))
    facts["eager_output_max_abs"] = float(
        max(abs(o).max() for o in checker.eager if o.dtype.kind == "f")
    )
    return facts


def export_onnx(module, size, out_path, checker, names):
    """opset 11, dynamic batch; checked with onnxruntime when it is installed."""
    import torch

    kwargs = {}
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        kwargs["dynamo"] = False  # the TorchScript-based exporter, as torch 1.10 has it
    dynamic = dict((name, {0: "batch"}) for name in INPUT_NAMES + names)
    with torch.no_grad():
        torch.onnx.export(
            module,
            (example_input(size, seed=0),),
            out_path,
            opset_version=OPSET,
            input_names=INPUT_NAMES,
            output_names=names,
            dynamic_axes=dynamic,
            do_constant_folding=True,
            **kwargs,
        )
    facts = {"onnx_opset": OPSET}
    try:
        import onnxruntime
    except ImportError:
        facts["onnx_check"] = "onnxruntime not installed: not run"
        return facts
    session = onnxruntime.InferenceSession(out_path, providers=["CPUExecutionProvider"])
    outputs = session.run(None, {INPUT_NAMES[0]: checker.input.numpy()})
    facts.update(checker.compare(outputs, "onnx"))
    facts["onnxruntime"] = onnxruntime.__version__
    return facts


def main(args):
    import torch

    size = int(args.input_size)
    if size <= 0 or size % 32:
        raise UserError(
            "--input-size must be a positive multiple of 32 (FPN strides), not %d" % size
        )
    kind = resolve_outputs(args.outputs, args.profile)
    model, facts = build(args.weights)
    names = OUTPUT_NAMES[kind]
    module = export_module(model, kind, size)
    checker = Checker(model, module, kind, size)
    facts.update(trace(module, size, os.path.join(args.out, "model.ts"), checker, names))
    if kind != "dense":
        facts["topk_per_level"] = list(module.topk)
    facts.update(
        format=args.format,
        model="model.ts",
        torch=torch.__version__,
        input_shape=[1, 3, size, size],
        input_names=INPUT_NAMES,
        output_names=names,
        output_kind=kind,
        profile=args.profile,
        anchors_per_level=anchor_lib.level_counts((size, size)),
        feature_sizes=[list(hw) for hw in anchor_lib.feature_sizes((size, size))],
        num_anchors=anchor_lib.num_anchors((size, size)),
        input={
            "layout": "NCHW",
            "channels": "bgr",
            "pixel_mean": list(PIXEL_MEAN_BGR),
            "pixel_std": list(PIXEL_STD_BGR),
            "pad": "after_norm",
        },
        nms="host",
    )
    if args.format == "onnx":
        path = os.path.join(args.out, "model.onnx")
        facts.update(export_onnx(module, size, path, checker, names))
        facts["onnx_model"] = "model.onnx"
    cli.write_json(os.path.join(args.out, "export.json"), facts)


def build_parser():
    parser = cli.parser(__doc__.splitlines()[0])
    parser.add_argument("--weights", required=True, help="the weights stage's output folder")
    parser.add_argument(
        "--input-size",
        type=int,
        default=1344,
        help="square network input side, a multiple of 32 (default 1344)",
    )
    parser.add_argument(
        "--format",
        choices=("torchscript", "onnx"),
        default="torchscript",
        help="torchscript: model.ts; onnx: model.ts and model.onnx",
    )
    parser.add_argument(
        "--outputs",
        choices=["auto", *sorted(OUTPUT_NAMES)],
        default="auto",
        help="auto: the profile's (class_topk for seed, topk for upstream); dense: "
        "cls_logits + box_deltas; topk: per-level top-1000 logits + indices + box_deltas; "
        "class_topk: the seed graph's NMS inputs (per level, each class's 200 best boxes)",
    )
    parser.add_argument(
        "--profile",
        choices=PROFILES,
        default="seed",
        help="whose postprocess the outputs feed: seed (ModelZoo) or upstream (detectron2)",
    )
    return parser


if __name__ == "__main__":
    cli.run(main, build_parser())
