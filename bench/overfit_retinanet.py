"""RetinaNet training learns: overfit 2 real COCO images until AP50 on them passes 0.5.

    python bench/overfit_retinanet.py [--size 160] [--first 30] [--every 10]
        [--max-iters 150] [--lr 0.01] [--profile seed|upstream] [--keep DIR]

The evidence that training, export and inference form a working loop, through the
commands a user runs:

1. a COCO root holding two val2017 images of ../shared/fixtures/coco-val2017-mini, each
   with one large object (000000357501.jpg, a teddy bear; 000000519611.jpg, a bear), and
   their annotations;
2. `invoke retinanet.train` from a random init (no ImageNet weights here: the worker
   calibrates its FrozenBN statistics on the first step), batch 2 (both images every
   step), images resized to --size on the short side, the seed's gradient clipping,
   the --profile's training (seed, the default: first 40 boxes, fixed frames, static
   loss scale 64 under float16),
   --lr with a 20-iteration warm-up; the stage's own evaluation (the inference recipe's
   data, postprocess and pycocotools) after --first iterations, then every --every more
   (each round resumes from the last checkpoint), until AP50 > 0.5 or --max-iters;
3. `invoke retinanet.all --weights <the trained model_final.pth>`: weights, data,
   export (TorchScript), infer, evaluate and report on the same two images, the same
   profile; its AP50 is the one printed last.

Prints the loss curve, the AP50 after each round, the iterations it took and the wall
time, under whatever load the machine has (say it when quoting the numbers). Asserts
nothing: a bench.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE = os.path.join(os.path.dirname(REPO), "shared", "fixtures", "coco-val2017-mini")
IMAGES = (357501, 519611)


def make_root(root):
    """A COCO root with the two images (symlinks) and only their annotations."""
    source = os.path.join(FIXTURE, "annotations", "instances_val2017.json")
    with open(source) as handle:
        data = json.load(handle)
    images = [im for im in data["images"] if im["id"] in IMAGES]
    os.makedirs(os.path.join(root, "val2017"))
    os.makedirs(os.path.join(root, "annotations"))
    for image in images:
        name = image["file_name"]
        os.symlink(os.path.join(FIXTURE, "val2017", name), os.path.join(root, "val2017", name))
    data = dict(
        data,
        images=images,
        annotations=[a for a in data["annotations"] if a["image_id"] in IMAGES],
    )
    with open(os.path.join(root, "annotations", "instances_val2017.json"), "w") as handle:
        json.dump(data, handle)
    return [(a["image_id"], a["category_id"], a["bbox"]) for a in data["annotations"]]


def invoke(task, root, artifacts, params, *extra):
    argv = [
        sys.executable, "-m", "invoke", task, "--data", root, "--artifacts", artifacts,
        "--runner", "host", "--backend", "torchscript", *extra,
    ]  # fmt: skip
    for key, value in sorted(params.items()):
        argv += ["--param", "%s=%s" % (key, value)]
    done = subprocess.run(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    text = done.stdout.decode(errors="replace")
    if done.returncode != 0:
        sys.stdout.write(text)
        raise SystemExit("%s failed (exit %d)" % (task, done.returncode))
    return text


def sizes(args):
    # 640 x 480 images: short side --size, long side 4/3 of it, the input a multiple of 32
    long_side = args.size * 4 // 3 + 1
    input_size = -(-long_side // 32) * 32
    return {"min_size": args.size, "max_size": input_size, "input_size": input_size}


def train_params(args, stop):
    size = sizes(args)
    return {
        "profile": args.profile,
        "train_split": "val2017",
        "train_batch_size": 2,
        "epochs": 100000,  # one step an epoch (2 images, batch 2): the run stops at max_iters
        "steps": "1000000",  # no lr decay
        "lr": args.lr,
        "warmup_iters": 20,
        "max_iters": stop,
        "train_min_size": size["min_size"],
        "train_max_size": size["max_size"],
        "train_workers": 0,
        "train_device": "cpu",
        "train_threads": args.threads,
        "log_every": 1,
        "checkpoint_epochs": 0,
        "train_eval": "true",
        "min_size": size["min_size"],
        "max_size": size["max_size"],
        "input_size": size["input_size"],
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=160, help="short side (default 160)")
    parser.add_argument("--first", type=int, default=30, help="iterations before the first AP")
    parser.add_argument("--every", type=int, default=10, help="iterations between APs")
    parser.add_argument("--max-iters", type=int, default=150, help="give up after (150)")
    parser.add_argument("--lr", type=float, default=0.01, help="base lr (0.01)")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's)")
    parser.add_argument("--profile", default="seed", choices=("seed", "upstream"))
    parser.add_argument("--keep", help="work in this folder and keep it (default: a temp one)")
    args = parser.parse_args()
    if not os.path.isdir(FIXTURE):
        raise SystemExit("the fixture %s is absent: nothing to overfit" % FIXTURE)
    work = args.keep or tempfile.mkdtemp(prefix="overfit_retinanet_")
    started = time.time()
    try:
        root, artifacts = os.path.join(work, "coco"), os.path.join(work, "artifacts")
        objects = make_root(root)
        print("images %s, objects (id, category, xywh): %s" % (list(IMAGES), objects))
        print(
            "sizes %s, lr %g, batch 2, random init, profile %s"
            % (sizes(args), args.lr, args.profile)
        )
        stop, rounds, summary = args.first, [], None
        while True:
            invoke("retinanet.train", root, artifacts, train_params(args, stop))
            with open(os.path.join(artifacts, "retinanet", "train", "train.json")) as handle:
                summary = json.load(handle)
            ap50 = summary["eval"]["metrics"]["AP50"]
            rounds.append((stop, ap50, time.time() - started))
            print("iteration %d: AP50 %.1f (%.0f s so far)" % (stop, ap50, rounds[-1][2]))
            if ap50 > 50.0 or stop >= args.max_iters:
                break
            stop = min(stop + args.every, args.max_iters)
        print("loss curve (iteration: loss, cls, box):")
        for entry in summary["loss_curve"]:
            print(
                "  %4d: %.4f %.4f %.4f"
                % (entry["iter"], entry["loss"], entry["loss_cls"], entry["loss_box"])
            )
        final = os.path.join(artifacts, "retinanet", "train", "model_final.pth")
        params = dict(sizes(args), profile=args.profile)
        invoke("retinanet.all", root, artifacts, params, "--weights", final)
        with open(os.path.join(artifacts, "retinanet", "evaluate", "metrics.json")) as handle:
            metrics = json.load(handle)["metrics"]
        print(
            "trained %d iterations to AP50 %.1f (the train stage's evaluation); "
            "retinanet.all on the checkpoint: AP50 %.1f, AP %.1f; %.0f s in all"
            % (stop, rounds[-1][1], metrics["AP50"], metrics["AP"], time.time() - started)
        )
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
