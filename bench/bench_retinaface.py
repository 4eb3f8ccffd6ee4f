"""RetinaFace on the CPU: forward throughput per backend and thread count, NMS, no-op rerun.

    python bench/bench_retinaface.py [--iterations 4] [--skip-rerun]

1. Forward at the seed's 1x3x1000x1000 (random weights: speed does not depend on them):
   torch eager, TorchScript and ONNX Runtime, each with 1 thread and with every core,
   images/s after two untimed calls (TorchScript's profiling executor optimizes the
   graph during its first calls), and every ratio to eager at every core. The load
   average is printed before and after: on a shared machine, threads that wait for each
   other (OpenMP barriers) make multi-threaded torch collapse.
2. NMS: the shared `nms_in_order` against a transcription of Pytorch_Retinaface's
   `py_cpu_nms` on the boxes the postprocess really feeds it: decoded priors above the
   0.02 threshold, from random-weights outputs at 1000x1000 (every one of the 41,236
   priors passes) cut to 6k, 20k and 41k boxes. Same keep list is checked each time.
3. `invoke retinaface.all` on a generated sample twice (host runner): the second run
   finds every stage up to date; its wall time is the no-op rerun (target < 2 s).

Ratios are measured in this one run; nothing is asserted.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

# The reference's own NMS, its steps written out once, in the tests.
from tests.test_boxes import py_cpu_nms  # noqa: E402


def load():
    return "load average %.1f %.1f %.1f" % os.getloadavg()


def timed(call, iterations):
    for _ in range(2):
        call()
    start = time.perf_counter()
    for _ in range(iterations):
        call()
    return iterations / (time.perf_counter() - start)


def bench_forward(iterations):
    import onnxruntime
    import torch

    from models.retinaface.net import OUTPUT_NAMES, build_model
    from zoostage.backends.onnxexport import export_onnx

    cores = os.cpu_count() or 1
    model = build_model(None, seed=0).eval()
    x = torch.rand(1, 3, 1000, 1000) * 255 - 117
    with torch.no_grad():
        traced = torch.jit.trace(model, x)
    path = os.path.join(tempfile.mkdtemp(), "retinaface.onnx")
    export_onnx(model, x, path, ["input"], OUTPUT_NAMES)
    batch = x.numpy()
    print(
        "1. forward at 1x3x1000x1000, torch %s, %d cores, %s" % (torch.__version__, cores, load())
    )
    results = {}
    for threads in sorted({1, cores}):
        torch.set_num_threads(threads)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        session = onnxruntime.InferenceSession(
            path, sess_options=options, providers=["CPUExecutionProvider"]
        )
        with torch.no_grad():
            results[("eager", threads)] = timed(lambda: model(x), iterations)
            results[("torchscript", threads)] = timed(lambda: traced(x), iterations)
        results[("onnxruntime", threads)] = timed(
            lambda s=session: s.run(None, {"input": batch}), iterations
        )
    base = results[("eager", cores)]
    for (name, threads), speed in sorted(results.items()):
        print(
            "  %-12s %d thread%s %6.2f images/s  %5.2fx eager at %d"
            % (name, threads, "s" if threads > 1 else " ", speed, speed / base, cores)
        )
    print("  after: %s" % load())


def bench_nms(repeats=2):
    import torch

    from models.common.boxes import decode_center_variance, nms_in_order
    from models.retinaface.net import build_model
    from models.retinaface.priors import prior_box

    torch.set_num_threads(os.cpu_count() or 1)
    priors = prior_box((1000, 1000))
    with torch.no_grad():
        loc, conf, _ = build_model(None, seed=0)(torch.rand(1, 3, 1000, 1000) * 255 - 117)
    scores = conf[0, :, 1].numpy()
    inds = np.where(scores > 0.02)[0]
    boxes = decode_center_variance(loc[0].numpy()[inds], priors[inds], (0.1, 0.2)) * 1000
    order = scores[inds].argsort()[::-1]
    dets = np.hstack((boxes[order], scores[inds][order, None])).astype(np.float32)
    print(
        "2. NMS at IoU 0.4 on decoded priors (random weights: %d pass 0.02), %s"
        % (len(dets), load())
    )
    for count in (6000, 20000, len(dets)):
        part = dets[:count]
        reference = ours = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            expected = py_cpu_nms(part, 0.4)
            reference = min(reference, time.perf_counter() - start)
            start = time.perf_counter()
            found = nms_in_order(part[:, :4], part[:, 4].argsort()[::-1], 0.4, pixel_offset=1)
            ours = min(ours, time.perf_counter() - start)
        same = "same keep list" if found.tolist() == [int(i) for i in expected] else "DIFFERENT"
        print(
            "  %6d boxes, %5d kept: py_cpu_nms %.3f s, shared nms %.3f s: %.1fx (%s)"
            % (count, len(expected), reference, ours, reference / ours, same)
        )


def bench_noop_rerun():
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "wider")
        subprocess.run(
            [sys.executable, "-m", "data_scripts.widerface.sample", "--out", data],
            cwd=REPO,
            check=True,
            capture_output=True,
        )
        command = ["invoke", "retinaface.all", "--runner", "host", "--backend", "onnxruntime"]
        command += ["--random-init", "--data", data, "--artifacts", os.path.join(tmp, "art")]
        start = time.perf_counter()
        subprocess.run(command, cwd=REPO, check=True, capture_output=True)
        first = time.perf_counter() - start
        start = time.perf_counter()
        result = subprocess.run(command, cwd=REPO, check=True, capture_output=True, text=True)
        rerun = time.perf_counter() - start
    skipped = result.stdout.count("skip: up to date")
    print("3. retinaface.all on a 12-image sample: first run %.1f s" % first)
    print("  no-op rerun: %.2f s (%d stages up to date; target < 2 s)" % (rerun, skipped))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=4)
    parser.add_argument("--skip-rerun", action="store_true")
    args = parser.parse_args()
    bench_forward(args.iterations)
    bench_nms()
    if not args.skip_rerun:
        bench_noop_rerun()


if __name__ == "__main__":
    main()
