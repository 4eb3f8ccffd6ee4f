"""Throughput of RefineDet320 .om models per batch size, with ais_bench (the seed's method).

    python -m models.refinedet.bench --out OUT --model COMPILE_DIR --batch-sizes 1,4,8 \
        --loop 1000 [--device 0] [--onnx EXPORT_DIR/model.onnx --soc-version Ascend310P3]

For each batch size B it runs `python -m ais_bench --model M --loop N --batchsize B
--device D` (pure inference on zeros, the seed's performance check) and reads ais_bench's
summary line

    [INFO] throughput 1000*batchsize.mean(16)/NPU_compute_time.mean(35.89): 445.78

The .om for B is COMPILE_DIR/model_bs{B}.om, else COMPILE_DIR's compiled model when its
compile.json says batch B; with --onnx, a missing one is built with ATC into OUT.
Writes OUT/bench.json: {"by_batch": {B: {"throughput", ...}}, "metrics":
{"throughput_bs{B}": fps}}: metric names as the recipe's `published` keys, "by_batch"
as the report stage reads per-batch throughputs.
"""

import importlib.util
import json
import os
import re
import subprocess
import sys

from models.refinedet import params
from zoostage import cli
from zoostage.errors import UserError
from zoostage.safepath import child_path

BENCH_FILE = "bench.json"
COMPILE_MANIFEST = "compile.json"

_NUMBER = r"([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)"
# Versions differ: "throughput 1000*batchsize(16)/..." (older), "throughput
# 1000*batchsize.mean(16)/..." and "Throughput 1000*batchsize.mean(16)/..." (newer).
_THROUGHPUT = re.compile(
    r"throughput\s+1000\*batchsize(?:\.mean)?\(\s*" + _NUMBER + r"\s*\)\s*/\s*"
    r"NPU_compute_time\.mean\(\s*" + _NUMBER + r"\s*\)\s*:\s*" + _NUMBER,
    re.IGNORECASE,
)
_COMPUTE_TIME = re.compile(
    r"NPU_compute_time \(ms\): min = "
    + _NUMBER
    + r", max = "
    + _NUMBER
    + r", mean = "
    + _NUMBER
    + r", median = "
    + _NUMBER
    + r", percentile\(99%\) = "
    + _NUMBER
)


def parse_ais_bench(text):
    """The performance summaries in ais_bench's output, one per device, in order.

    Each: {"throughput": images/s, "batchsize", "npu_compute_time_mean_ms"} and, when the
    NPU_compute_time line precedes it, its min / max / median / p99 in ms.
    """
    summaries = []
    times = None
    for line in text.splitlines():
        match = _COMPUTE_TIME.search(line)
        if match:
            values = [float(v) for v in match.groups()]
            times = dict(zip(("min_ms", "max_ms", "mean_ms", "median_ms", "p99_ms"), values))
            continue
        match = _THROUGHPUT.search(line)
        if match:
            batch, mean, throughput = (float(v) for v in match.groups())
            summary = {
                "throughput": throughput,
                "batchsize": batch,
                "npu_compute_time_mean_ms": mean,
            }
            if times is not None:
                summary["npu_compute_time_ms"] = times
                times = None
            summaries.append(summary)
    return summaries


def ais_bench_command(om_path, loop, batch_size, device=0, python=None):
    return [
        python or sys.executable,
        "-m",
        "ais_bench",
        "--model",
        om_path,
        "--loop",
        str(int(loop)),
        "--batchsize",
        str(int(batch_size)),
        "--device",
        str(int(device)),
    ]


def require_ais_bench():
    try:
        found = importlib.util.find_spec("ais_bench") is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise UserError(
            "ais_bench is not installed in this environment: run the bench in the "
            "atc image on an NPU host (ais_bench + aclruntime from Ascend/tools)"
        )


def parse_batch_sizes(text):
    try:
        sizes = [int(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise UserError(
            "--batch-sizes must be integers separated by commas, not %r" % text
        ) from None
    if not sizes or min(sizes) < 1:
        raise UserError("--batch-sizes needs at least one batch size >= 1")
    return sizes


def find_om(model, batch_size):
    """The .om compiled for `batch_size` in a compile folder (or the file itself), or None."""
    if os.path.isfile(model):
        return model
    candidate = os.path.join(model, "model_bs%d.om" % batch_size)
    if os.path.isfile(candidate):
        return candidate
    manifest_path = os.path.join(model, COMPILE_MANIFEST)
    if os.path.isfile(manifest_path):
        with open(manifest_path) as handle:
            manifest = json.load(handle)
        shape = manifest.get("input_shape")
        if isinstance(shape, str):
            shape = shape.split(",")
        name = manifest.get("model") or "model.om"
        path = child_path(model, name, "model file named in " + manifest_path)
        if shape and int(shape[0]) == batch_size and os.path.isfile(path):
            return path
    return None


def run_one(om_path, loop, batch_size, device=0):
    argv = ais_bench_command(om_path, loop, batch_size, device)
    sys.stderr.write("+ %s\n" % " ".join(argv))
    process = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True
    )
    lines = []
    for line in process.stdout:
        lines.append(line)
        sys.stderr.write(line)
    process.stdout.close()
    code = process.wait()
    text = "".join(lines)
    summaries = parse_ais_bench(text)
    if code != 0 or not summaries:
        tail = [line.strip() for line in lines if line.strip()][-1:] or ["no output"]
        raise UserError(
            "ais_bench on %s (batch %d) %s: %s"
            % (
                om_path,
                batch_size,
                "exited %d" % code if code else "printed no throughput",
                tail[0][:300],
            )
        )
    result = dict(summaries[0])
    result.update(om=om_path, command=argv, loop=int(loop))
    return result


def run_bench(out, model, batch_sizes, loop, device=0, onnx=None, soc_version=None):
    require_ais_bench()
    results = {}
    for batch_size in batch_sizes:
        om_path = find_om(model, batch_size)
        if om_path is None:
            if not onnx:
                raise UserError(
                    "no .om for batch %d in %s: compile it (model_bs%d.om) or pass "
                    "--onnx to build it" % (batch_size, model, batch_size)
                )
            from zoostage.backends.atc import convert

            om_path = os.path.join(out, "model_bs%d.om" % batch_size)
            convert(onnx, om_path, (batch_size, 3, 320, 320), soc_version=soc_version)
        results[str(batch_size)] = run_one(om_path, loop, batch_size, device)
    record = {
        "by_batch": results,
        "metrics": dict(("throughput_bs%s" % b, r["throughput"]) for b, r in results.items()),
        "tool": "ais_bench",
        "loop": int(loop),
    }
    cli.write_json(os.path.join(out, BENCH_FILE), record)
    return record


def main(args):
    cli.call(run_bench, args, batch_sizes=parse_batch_sizes(args.batch_sizes))


def build_parser():
    return cli.parser(__doc__.splitlines()[0], params.BENCH)


if __name__ == "__main__":
    cli.run(main, build_parser())
