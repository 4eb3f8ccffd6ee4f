"""How fast each CPU backend runs a recipe's network here: what `--backend auto` picks by.

    python -m zoostage.backends.probe --out OUT --network models.retinaface.probe \\
        --backends onnxruntime,torchscript [--calls 2]

The network module gives `probe_model()` -> (torch module in eval mode, input shape
(N, C, H, W)): the recipe's network with seeded random weights (speed does not depend on
the weights). It is traced to TorchScript and exported to ONNX in a temporary folder;
each backend loads its file the way the infer stage does and runs one untimed call,
then --calls timed ones on the same input. OUT/probe.json: {"shape": [...], "calls": N,
"images_per_s": {backend: images/s}}.
Slow to run (seconds to a minute on a small CPU): the host caches the answer
(zoobox.pipeline.speed).
"""

import importlib
import json
import os
import re
import shutil
import tempfile
import time

from zoostage import cli
from zoostage.backends import get_backend
from zoostage.errors import UserError

FILES = {"torchscript": "model.ts", "onnxruntime": "model.onnx"}
_NETWORK = re.compile(r"^models(\.[A-Za-z_][A-Za-z0-9_]*)+$")


def _network(name):
    if not _NETWORK.match(str(name)):
        raise UserError("--network must be a module under models., not %r" % (name,))
    return importlib.import_module(name)


def _write_models(module, example, folder, backends):
    import torch

    from zoostage.backends.onnxexport import export_onnx

    paths = {}
    with torch.no_grad():
        outputs = module(example)
    count = len(outputs) if isinstance(outputs, (tuple, list)) else 1
    if "torchscript" in backends:
        with torch.no_grad():
            traced = torch.jit.trace(module, example, check_trace=False)
        paths["torchscript"] = os.path.join(folder, FILES["torchscript"])
        traced.save(paths["torchscript"])
    if "onnxruntime" in backends:
        paths["onnxruntime"] = os.path.join(folder, FILES["onnxruntime"])
        names = ["output%d" % i for i in range(count)]
        export_onnx(module, example, paths["onnxruntime"], ["input"], names)
    return paths


def measure(network, backends, calls=2):
    """{backend: images/s} for the network module's model on this machine."""
    import numpy as np
    import torch

    unknown = [b for b in backends if b not in FILES]
    if unknown:
        raise UserError("the probe measures %s, not %s" % (", ".join(FILES), unknown))
    module, shape = _network(network).probe_model()
    generator = torch.Generator().manual_seed(0)
    example = torch.rand(tuple(shape), generator=generator) * 255.0 - 117.0
    batch = np.ascontiguousarray(example.numpy())
    folder = tempfile.mkdtemp(prefix="zoobox-probe-")
    speeds = {}
    try:
        paths = _write_models(module, example, folder, backends)
        for name in backends:
            backend = get_backend(name, device="cpu")
            backend.load(paths[name])
            backend.run(batch)  # untimed: first-call work (allocation, profiling runs)
            start = time.perf_counter()
            for _ in range(calls):
                backend.run(batch)
            speeds[name] = calls * shape[0] / (time.perf_counter() - start)
            backend.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return {"shape": list(shape), "calls": calls, "images_per_s": speeds}


PROBE_FILE = "probe.json"


def main(args):
    backends = [b for b in args.backends.split(",") if b]
    result = measure(args.network, backends, args.calls)
    print(json.dumps(result))
    cli.write_json(os.path.join(args.out, PROBE_FILE), result)


def build_parser():
    parser = cli.parser(__doc__.splitlines()[0])
    parser.add_argument("--network", required=True, help="models.<recipe>.probe")
    parser.add_argument("--backends", required=True, help="comma-separated CPU backends")
    parser.add_argument("--calls", type=int, default=2, help="timed calls per backend")
    return parser


if __name__ == "__main__":
    cli.run(main, build_parser())
