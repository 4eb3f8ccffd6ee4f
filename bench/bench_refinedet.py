"""RefineDet320 on CPU: onnxruntime vs eager torch throughput, measured in one run.

    python bench/bench_refinedet.py [--iterations 3] [--batch-sizes 1,16] [--threads N]

Random weights (seed 0): throughput does not depend on them. The model is exported to a
temporary ONNX file first (opset 11, dynamic batch, as the export stage does); each
backend then runs `--iterations` timed calls per batch size after one untimed call.
Prints images/s of both backends and their ratio; numbers are only comparable within one
run on one machine.
"""

import argparse
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _time(run, batch, iterations):
    run(batch)  # untimed: first-call allocations, lazy initialisation
    start = time.perf_counter()
    for _ in range(iterations):
        run(batch)
    return iterations * len(batch) / (time.perf_counter() - start)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=3, help="timed calls per batch size")
    parser.add_argument("--batch-sizes", default="1,16", help="comma-separated batch sizes")
    parser.add_argument("--threads", type=int, default=0, help="threads (0: library default)")
    args = parser.parse_args(argv)

    import onnxruntime
    import torch

    from models.refinedet.export import export_onnx
    from models.refinedet.net import build_model

    if args.threads:
        torch.set_num_threads(args.threads)
    model = build_model(None, seed=0)
    options = onnxruntime.SessionOptions()
    if args.threads:
        options.intra_op_num_threads = args.threads
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "refinedet.onnx")
        export_onnx(model, path)
        session = onnxruntime.InferenceSession(
            path, sess_options=options, providers=["CPUExecutionProvider"]
        )

        def eager(batch):
            with torch.no_grad():
                return model(torch.from_numpy(batch))

        def ort(batch):
            return session.run(None, {"image": batch})

        print(
            "RefineDet320 CPU, torch %s, onnxruntime %s, %d threads, %d timed calls"
            % (torch.__version__, onnxruntime.__version__, torch.get_num_threads(), args.iterations)
        )
        print("%6s %14s %14s %8s" % ("batch", "eager img/s", "ort img/s", "ort/eager"))
        rng = np.random.RandomState(0)
        for size in [int(v) for v in args.batch_sizes.split(",")]:
            batch = (rng.uniform(0, 255, (size, 3, 320, 320)) - 117).astype(np.float32)
            eager_rate = _time(eager, batch, args.iterations)
            ort_rate = _time(ort, batch, args.iterations)
            print("%6d %14.2f %14.2f %8.2f" % (size, eager_rate, ort_rate, ort_rate / eager_rate))


if __name__ == "__main__":
    main()
