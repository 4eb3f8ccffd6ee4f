"""RetinaNet R50-FPN on CPU: eager vs TorchScript (vs ONNX Runtime) at 1x3x1344x1344.

Random weights (seeded). Every backend runs the dense model (cls_logits + box_deltas) and
the top-k one (export --outputs topk); calls are interleaved round by round so that load
from other processes hits all of them alike. Prints milliseconds per image and ratios
measured in this one run, the host postprocessing time per image for both output kinds,
the bytes each leaves to copy off a device, and what the preprocessed store saves per
image against the seed's float32 .bin files.

    python bench/bench_retinanet.py [--size 1344] [--iterations 3] [--threads N] [--no-onnx]
"""

import argparse
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from models.retinanet import anchors as anchor_lib
from models.retinanet import postprocess


def median_ms(seconds):
    return 1000.0 * float(np.median(seconds))


def onnx_runs(model, topk, x, size, threads):
    """name -> callable for each ONNX Runtime export ({} without onnxruntime)."""
    from models.retinanet import export

    try:
        import onnxruntime
    except ImportError:
        print("onnxruntime not installed: ONNX Runtime skipped")
        return {}
    options = onnxruntime.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    feed = {"image": x.numpy()}
    runs = {}
    tmp = tempfile.mkdtemp(prefix="bench-retinanet-")
    for kind, module in (("dense", model), ("topk", topk)):
        path = os.path.join(tmp, "%s.onnx" % kind)
        checker = export.Checker(model, module, kind, size)
        export.export_onnx(module, size, path, checker, export.OUTPUT_NAMES[kind])
        session = onnxruntime.InferenceSession(
            path, sess_options=options, providers=["CPUExecutionProvider"]
        )
        os.remove(path)
        runs["onnxruntime " + kind] = lambda s=session: s.run(None, feed)
    os.rmdir(tmp)
    return runs


def time_runs(runs, iterations):
    """(per-call seconds, first outputs) of each run, interleaved so load hits all alike."""
    import torch

    times = dict((name, []) for name in runs)
    outputs = {}
    with torch.no_grad():
        for name, run in runs.items():  # warm-up: TorchScript profiles its first 2 calls
            outputs[name] = run()
            run()
        for _ in range(iterations):
            for name, run in runs.items():
                start = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - start)
    return times, outputs


def print_times(times):
    """Medians, and minima (the least disturbed call when other processes share the CPU)."""
    base = median_ms(times["eager dense"])
    base_min = 1000.0 * min(times["eager dense"])
    for name, seconds in times.items():
        ms, best = median_ms(seconds), 1000.0 * min(seconds)
        print(
            "%-18s %7.0f ms/image median (min %5.0f; all %s)  %5.2f images/s  "
            "eager/this %.2f (by min %.2f)"
            % (
                name,
                ms,
                best,
                ", ".join("%.0f" % (1000 * t) for t in seconds),
                1000.0 / ms,
                base / ms,
                base_min / best,
            )
        )


def print_postprocess(outputs, size, iterations):
    """Host postprocess time of dense vs topk outputs, and that they agree."""
    from models.retinanet import export

    post = postprocess.Postprocessor((size, size))
    dense = [o.numpy() for o in outputs["torchscript dense"]]
    cand = [o.numpy() for o in outputs["torchscript topk"]]
    post_times = {"dense": [], "topk": []}
    for _ in range(iterations + 1):
        start = time.perf_counter()
        found_dense = post.detect(dense[0][0], dense[1][0])
        post_times["dense"].append(time.perf_counter() - start)
        start = time.perf_counter()
        found_topk = post.detect_candidates(cand[0][0], cand[1][0], cand[2][0])
        post_times["topk"].append(time.perf_counter() - start)
    matched, total = export.match_detections(found_dense, found_topk)
    candidates = int((postprocess.sigmoid(dense[0]) > postprocess.SCORE_THRESH).sum())
    for kind, arrays in (("dense", dense), ("topk", cand)):
        print(
            "%-5s outputs %s = %.1f MB per image; host postprocess %.0f ms/image"
            % (
                kind,
                " + ".join(str(list(a.shape[1:])) for a in arrays),
                sum(a.nbytes for a in arrays) / 1e6,
                median_ms(post_times[kind][1:]),
            )
        )
    print(
        "R = %d anchors; %d scores > %.2f (random weights: a worst case, trained weights "
        "keep far fewer); dense and topk detections: %d of %d the same"
        % (
            anchor_lib.num_anchors((size, size)),
            candidates,
            postprocess.SCORE_THRESH,
            matched,
            total,
        )
    )


def print_store_size(size):
    store_bytes = size * size * 3  # uint8 HWC in zoostage.store
    seed_bytes = size * size * 3 * 4  # float32 CHW .bin, as the seed writes (21.7 MB at 1344)
    print(
        "preprocessed input per image: store uint8 %.2f MB vs seed float32 .bin %.2f MB "
        "(%.2fx smaller); 5000 val2017 images: %.1f GB vs %.1f GB"
        % (
            store_bytes / 1e6,
            seed_bytes / 1e6,
            seed_bytes / float(store_bytes),
            5000 * store_bytes / 1e9,
            5000 * seed_bytes / 1e9,
        )
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1344)
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--no-onnx", action="store_true")
    args = parser.parse_args()

    import torch

    from models.retinanet import export, net

    if args.threads:
        torch.set_num_threads(args.threads)
    size = args.size
    model = net.build_model(seed=0)
    topk = net.TopKCandidates(model, (size, size))
    x = export.example_input(size, seed=1)
    print(
        "RetinaNet R50-FPN, random weights, input 1x3x%dx%d, torch %s, %d threads"
        % (size, size, torch.__version__, torch.get_num_threads())
    )
    with torch.no_grad():
        traced_dense = torch.jit.trace(model, x, check_trace=False)
        traced_topk = torch.jit.trace(topk, x, check_trace=False)
    runs = {
        "eager dense": lambda: model(x),
        "torchscript dense": lambda: traced_dense(x),
        "torchscript topk": lambda: traced_topk(x),
    }
    if not args.no_onnx:
        runs.update(onnx_runs(model, topk, x, size, args.threads))
    times, outputs = time_runs(runs, args.iterations)
    print_times(times)
    print_postprocess(outputs, size, args.iterations)
    print_store_size(size)


if __name__ == "__main__":
    main()
