"""RetinaNet training throughput: images/s with 1 and with 2 CPU processes (gloo DDP).

    python bench/bench_retinanet_train.py [--images 8] [--size 192] [--iters 12]
        [--threads 1] [--device-type cpu] [--batch-size 1]

On a generated COCO-layout sample (data_scripts.coco.sample): the real network (its
backbone a random ResNet with FrozenBN calibrated on the sample), images resized
to --size (short and long side), --iters iterations of one process, then of two
processes (each with the same per-process batch, so two processes move twice the
images per step), through the training stage (launch.py). images/s is the stage's own
steady-state number (train.json: the first iterations left out). The ratio printed is
measured in this one run; on a machine with fewer cores than processes x threads it
says more about the machine than about the code. Nothing is asserted.

On a CUDA or NPU machine, --device-type cuda / npu and --size 1333 measure the device
(two processes then need two devices).
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from data_scripts.coco.sample import make_sample  # noqa: E402
from models.retinanet.train import backbone as backbone_lib  # noqa: E402
from models.retinanet.train import data as data_lib  # noqa: E402


def backbone(root, size, path):
    """A random backbone with FrozenBN calibrated on the sample (a random one diverges)."""
    import torch

    records, _ = data_lib.load_split(root, "val2017")
    dataset = data_lib.TrainDataset(records, size, size)
    batch = data_lib.Collate()([dataset[(i, False)] for i in range(min(4, len(records)))])
    x = data_lib.to_input(batch["pixels"], batch["valid_hw"], "cpu")
    torch.save(backbone_lib.calibrated_backbone(x), path)
    return path


def run(root, work, devices, args):
    out = os.path.join(work, "out-%d" % len(devices.split(",")))
    argv = [
        sys.executable, "-m", "models.retinanet.train.launch",
        "--out", out, "--data", root, "--split", "val2017",
        "--work-dir", os.path.join(work, "ckpt-%d" % len(devices.split(","))),
        "--devices", devices, "--device-type", args.device_type,
        "--batch-size", str(args.batch_size), "--epochs", "100",
        "--max-iters", str(args.iters), "--min-size", str(args.size),
        "--max-size", str(args.size), "--threads", str(args.threads),
        "--workers", "1", "--log-every", str(args.iters), "--checkpoint-epochs", "0",
        "--lr", "0.001", "--weights", os.path.join(work, "backbone.pth"),
    ]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=REPO)
    done = subprocess.run(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if done.returncode != 0:
        sys.stderr.write(done.stderr.decode(errors="replace"))
        raise SystemExit("training with devices %s failed" % devices)
    with open(os.path.join(out, "train.json")) as handle:
        return json.load(handle)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=8, help="sample images (default 8)")
    parser.add_argument("--size", type=int, default=192, help="resize side (default 192)")
    parser.add_argument("--iters", type=int, default=12, help="iterations per run (default 12)")
    parser.add_argument("--threads", type=int, default=1, help="threads per process (1)")
    parser.add_argument("--batch-size", type=int, default=1, help="images per process (1)")
    parser.add_argument("--device-type", default="cpu", help="cpu, cuda or npu")
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="bench_retinanet_train_")
    try:
        root = os.path.join(work, "coco")
        make_sample(root, images=args.images, seed=0)
        backbone(root, args.size, os.path.join(work, "backbone.pth"))
        one = run(root, work, "0", args)
        two = run(root, work, "0,1", args)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(
        "RetinaNet R50-FPN training, %d images resized to %d, batch %d per process, %d iters, "
        "%d thread(s) per process, %s, %d CPU cores"
        % (
            args.images,
            args.size,
            args.batch_size,
            args.iters,
            args.threads,
            args.device_type,
            os.cpu_count() or 1,
        )
    )
    for name, summary in (("1 process ", one), ("2 processes", two)):
        print(
            "  %s: %.2f images/s (%.2f per process), loader wait %.2f s, run %.1f s"
            % (
                name,
                summary["images_per_s"],
                summary["images_per_s_per_device"],
                summary["data_wait_s"],
                summary["run_seconds"],
            )
        )
    print(
        "  2 vs 1 process: %.2fx images/s (ideal 2.00x)"
        % (two["images_per_s"] / one["images_per_s"])
    )


if __name__ == "__main__":
    main()
