"""RetinaNet seed profile: the two exports it can run from, per image, on this CPU.

    python bench/bench_retinanet_seed.py [--size 1344] [--images 2] [--threads 0]

`class_topk` keeps the seed's per-class top-200 and the box decoding in the graph
(models/retinanet/seed_graph.py) and leaves float16 rounding and the NMS to the host;
`dense` exports the bare network and runs all of the seed's steps on the host
(seed_postprocess.SeedPostprocessor.detect). For each: the graph's time (TorchScript,
traced at --size), the host postprocess's time, and the bytes that leave the device per
image; the same random inputs through both, alternating, after one warm-up call each.
Also checks that both give the same detections.

The network has random weights with its classification head scaled down so that scores
spread around the focal-loss prior (0.01) instead of saturating: about as many pass the
0.05 threshold as a trained network gives, which is what the host postprocess's time
depends on. Prints times and ratios measured in this one run; asserts nothing. On a CPU
no bytes are copied; on a device the copy of dense outputs dominates (the recipe notes
88.9 vs 14.1 ms per image for dense vs topk outputs on an H100).
"""

import argparse
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def build(size):
    import torch

    from models.retinanet import net, seed_graph

    model = net.build_model(seed=0)
    torch.nn.init.normal_(model.head.cls_score.weight, std=0.0005)
    torch.nn.init.normal_(model.head.bbox_pred.weight, std=0.0002)
    x = torch.zeros(1, 3, size, size)
    with torch.no_grad():
        dense = torch.jit.trace(model, x, check_trace=False)
        graph = torch.jit.trace(seed_graph.ClassTopK(model, (size, size)), x, check_trace=False)
    return dense, graph


def timed(function, *args):
    start = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1344, help="input side (default 1344)")
    parser.add_argument("--images", type=int, default=2, help="timed images (default 2)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = parser.parse_args()
    import torch

    from models.retinanet.export import match_detections
    from models.retinanet.seed_postprocess import SeedPostprocessor

    if args.threads:
        torch.set_num_threads(args.threads)
    dense, graph = build(args.size)
    post = SeedPostprocessor((args.size, args.size))
    generator = torch.Generator().manual_seed(0)
    times = {"dense": [0.0, 0.0], "class_topk": [0.0, 0.0]}
    sizes, found = {}, 0
    for index in range(args.images + 1):  # the first call of each is a warm-up
        x = torch.rand((1, 3, args.size, args.size), generator=generator) * 255.0 - 120.0
        with torch.no_grad():
            outputs, seconds_d = timed(dense, x)
            cls_logits, box_deltas = [o[0].numpy() for o in outputs]
            a, host_d = timed(post.detect, cls_logits, box_deltas)
            outputs, seconds_g = timed(graph, x)
            boxes, scores = [o[0].numpy() for o in outputs]
            b, host_g = timed(post.detect_nms_inputs, boxes, scores)
        sizes = {
            "dense": cls_logits.nbytes + box_deltas.nbytes,
            "class_topk": boxes.nbytes + scores.nbytes,
        }
        matched, total = match_detections(a, b, 2.0**-11)
        found += total
        if matched != total:
            print(
                "note: image %d: %d of %d detections match (equal scores)" % (index, matched, total)
            )
        if index:
            for kind, graph_s, host_s in (
                ("dense", seconds_d, host_d),
                ("class_topk", seconds_g, host_g),
            ):
                times[kind][0] += graph_s
                times[kind][1] += host_s
    print(
        "RetinaNet seed profile at %dx%d, %d images, torch %s, %d threads:"
        % (args.size, args.size, args.images, torch.__version__, torch.get_num_threads())
    )
    for kind in ("dense", "class_topk"):
        graph_ms, host_ms = [1000.0 * t / args.images for t in times[kind]]
        print(
            "  %-10s graph %8.1f ms, host postprocess %7.1f ms, total %8.1f ms, "
            "%6.1f MB off the device"
            % (kind, graph_ms, host_ms, graph_ms + host_ms, sizes[kind] / 1e6)
        )
    d, g = (sum(times[k]) for k in ("dense", "class_topk"))
    print(
        "  class_topk / dense: total time %.2fx, host postprocess %.2fx, bytes %.3fx; "
        "%d detections per image"
        % (
            g / d,
            times["class_topk"][1] / max(times["dense"][1], 1e-9),
            sizes["class_topk"] / float(sizes["dense"]),
            found // (args.images + 1),
        )
    )


if __name__ == "__main__":
    main()
