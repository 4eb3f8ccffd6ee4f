"""RetinaFace: TorchScript vs eager throughput at 1000x1000, and a no-op rerun's time.

    python bench/bench_retinaface.py [--iterations 10] [--threads N]

1. The network (random weights) eager and traced, batch 1 at the seed's 1x3x1000x1000,
   images/s of each after two warm-up calls, and their ratio.
2. `invoke retinaface.all` on a generated sample twice (host runner, CPU): the second run
   finds every stage up to date; its wall time is the no-op rerun (target < 2 s).

Ratios are measured in this one run; nothing is asserted.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def throughput(module, batch, iterations):
    import torch

    with torch.no_grad():
        for _ in range(2):
            module(batch)
        start = time.perf_counter()
        for _ in range(iterations):
            module(batch)
    return iterations * batch.shape[0] / (time.perf_counter() - start)


def bench_torchscript(iterations, threads):
    import torch

    from models.retinaface.net import build_model

    if threads:
        torch.set_num_threads(threads)
    model = build_model(None, seed=0).eval()
    batch = torch.randn(1, 3, 1000, 1000)
    with torch.no_grad():
        traced = torch.jit.trace(model, batch)
    eager = throughput(model, batch, iterations)
    scripted = throughput(traced, batch, iterations)
    print(
        "torch %s, %d threads, 1x3x1000x1000, %d timed calls"
        % (torch.__version__, torch.get_num_threads(), iterations)
    )
    print("  eager:       %6.2f images/s" % eager)
    print("  torchscript: %6.2f images/s" % scripted)
    print("  torchscript / eager: %.2fx" % (scripted / eager))


def bench_noop_rerun():
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "wider")
        subprocess.run(
            [sys.executable, "-m", "data_scripts.widerface.sample", "--out", data],
            cwd=REPO,
            check=True,
            capture_output=True,
        )
        command = [
            "invoke",
            "retinaface.all",
            "--runner",
            "host",
            "--backend",
            "torchscript",
            "--random-init",
            "--data",
            data,
            "--artifacts",
            os.path.join(tmp, "art"),
        ]
        start = time.perf_counter()
        subprocess.run(command, cwd=REPO, check=True, capture_output=True)
        first = time.perf_counter() - start
        start = time.perf_counter()
        result = subprocess.run(command, cwd=REPO, check=True, capture_output=True, text=True)
        rerun = time.perf_counter() - start
    skipped = result.stdout.count("skip: up to date")
    print("retinaface.all on a 12-image sample: first run %.1f s" % first)
    print("  no-op rerun: %.2f s (%d stages up to date; target < 2 s)" % (rerun, skipped))
    print("  first / no-op: %.0fx" % (first / rerun))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    bench_torchscript(args.iterations, args.threads)
    bench_noop_rerun()


if __name__ == "__main__":
    main()
