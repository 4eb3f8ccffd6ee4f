"""The RetinaNet training stage: checks the inputs, then runs one process per device.

    python -m models.retinanet.train.launch --out OUT --data COCO_ROOT --work-dir WORK \
        --devices 0,1,2,3,4,5,6,7 [--epochs 12] [--batch-size 8] [--lr 0.04|auto] \
        [--weights R-50.pkl] [--resume auto|yes|no] [--max-iters N] [--amp auto|on|off] \
        [--split train2017] [--limit N] [--eval] [--nnodes 2 --node-rank 0 \
        --master-addr HOST --master-port 29500]

1. Reads COCO_ROOT/annotations/instances_<split>.json once (train2017: 450 MB of JSON)
   into a compact records file in the work folder, so the N processes do not each parse
   it; a dataset that is missing or wrong ends here with one line.
2. Writes every resolved setting to OUT/train_config.json.
3. Runs the workers: `python -m torch.distributed.run --nproc_per_node N ... -m
   models.retinanet.train.worker --config OUT/train_config.json` (N = the number of
   --devices on this node; --standalone on one node unless a master port is given; the
   multi-node flags pass through), or the worker alone for one process on one node. The
   command is echoed.
4. Adds to OUT/train.json (written by rank 0) the published ModelZoo numbers for this
   number of devices (the recipe's `published_train`) and the comparison.

Outputs: OUT/model_final.pth (the network's state dict with detectron2 keys: pass it as
`invoke retinanet.all --weights OUT/model_final.pth`), OUT/train.json (loss curve, lr,
images/s, final evaluation if --eval), OUT/train_config.json. Checkpoints live in the work
folder (the recipe's {work}/train), kept across runs: an interrupted run started again
with --resume auto (the recipe's default) continues from the newest complete one.
"""

import hashlib
import json
import os
import pickle
import subprocess
import sys

from models.retinanet.train import data as data_lib
from models.retinanet.train import params
from models.retinanet.train import summary as summary_lib
from models.retinanet.train import worker as worker_lib
from zoostage import cli
from zoostage.errors import UserError
from zoostage.unpickle import load_pickle

CONFIG_FILE = "train_config.json"
SEED_LR = params.SEED_LR
SEED_CLIP_GRAD = params.SEED_CLIP_GRAD
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
RESUME_CHOICES = ("auto", "yes", "no")
_TRUE = ("yes", "true", "1", "on")
_FALSE = ("no", "false", "0", "off", "none")


def parse_devices(text):
    """'0,1,2' -> [0, 1, 2]; empty -> [0]."""
    text = "" if text is None else str(text)
    try:
        ids = [int(part) for part in text.split(",") if part.strip() != ""]
    except ValueError:
        raise UserError("--devices takes ids like 0 or 0,1,2,3, not %r" % text) from None
    if len(set(ids)) != len(ids):
        raise UserError("--devices lists a device twice: %s" % text)
    return ids or [0]


def parse_lr(text):
    """'auto' (or empty / 0) -> None: 0.01 x global batch / 16; else a positive float."""
    if text is None or str(text).lower() in ("", "auto", "0", "none"):
        return None
    try:
        value = float(text)
    except ValueError:
        raise UserError("--lr takes a number or auto, not %r" % text) from None
    if value <= 0:
        raise UserError("--lr must be positive, not %s" % text)
    return value


def parse_resume(text):
    text = str(text).lower()
    if text in _TRUE:
        return "yes"
    if text in _FALSE:
        return "no"
    if text not in RESUME_CHOICES:
        raise UserError("--resume takes auto, yes or no, not %r" % text)
    return text


def parse_steps(text):
    try:
        steps = [int(part) for part in str(text).split(",") if part.strip() != ""]
    except ValueError:
        raise UserError("--steps takes epochs like 8,11, not %r" % text) from None
    if steps != sorted(steps):
        raise UserError("--steps must increase: %s" % text)
    return steps


def records_file(args, work_dir):
    """Parse the annotations once into WORK/records-<split>-<key>.pkl; (path, stats)."""
    annotations = data_lib.annotation_file(args.data, args.split)
    key_source = "%s|%s|%s" % (os.path.abspath(annotations), args.limit, "v1")
    if os.path.isfile(annotations):
        stat = os.stat(annotations)
        key_source += "|%d|%d" % (stat.st_size, stat.st_mtime_ns)
    key = hashlib.sha256(key_source.encode()).hexdigest()[:16]
    path = os.path.join(work_dir, "records-%s-%s.pkl" % (args.split, key))
    if os.path.isfile(path):
        with open(path, "rb") as handle:
            payload = load_pickle(handle)
        return path, payload["stats"]
    records, stats = data_lib.load_split(args.data, args.split, args.limit)
    tmp = "%s.tmp-%d" % (path, os.getpid())
    with open(tmp, "wb") as handle:
        pickle.dump({"records": records, "stats": stats}, handle, protocol=4)
    os.replace(tmp, path)
    return path, stats


def _check_args(args):
    for name in ("epochs", "batch_size", "min_size", "max_size"):
        if getattr(args, name) < 1:
            raise UserError("--%s must be at least 1" % name.replace("_", "-"))
    if args.min_size > args.max_size:
        raise UserError(
            "--min-size %d is larger than --max-size %d" % (args.min_size, args.max_size)
        )
    if args.pad_size:
        need = -(-args.max_size // data_lib.SIZE_DIVISOR) * data_lib.SIZE_DIVISOR
        if args.pad_size % data_lib.SIZE_DIVISOR or args.pad_size < need:
            raise UserError(
                "--pad-size %d must be a multiple of 32 and at least %d (--max-size %d rounded "
                "up to 32)" % (args.pad_size, need, args.max_size)
            )
        if args.profile == "seed":
            raise UserError(
                "--pad-size pads the upstream profile's batches; the seed profile pads each "
                "image to its fixed frame (1344 x 800 or 800 x 1344): pass --profile upstream"
            )
    if args.weights and not os.path.isfile(args.weights):
        raise UserError("backbone weights file not found: %s" % args.weights)
    if args.nnodes < 1 or not 0 <= args.node_rank < args.nnodes:
        raise UserError(
            "need 0 <= --node-rank < --nnodes, not %d, %d" % (args.node_rank, args.nnodes)
        )
    if args.nnodes > 1 and not (args.master_addr and args.master_port):
        raise UserError("training on %d nodes needs --master-addr and --master-port" % args.nnodes)
    if args.eval:
        from data_scripts.coco import layout

        layout.list_images(args.eval_data or args.data, limit=args.eval_limit)
        try:
            import pycocotools  # noqa: F401
        except ImportError:
            raise UserError("--eval needs pycocotools: pip install pycocotools") from None


def build_config(args):
    work_dir = os.path.abspath(args.work_dir)
    if not os.path.isdir(work_dir):
        os.makedirs(work_dir)
    records, stats = records_file(args, work_dir)
    return {
        "out": os.path.abspath(args.out),
        "data": os.path.abspath(args.data),
        "split": args.split,
        "limit": args.limit,
        "records": records,
        "dataset": stats,
        "work_dir": work_dir,
        "devices": parse_devices(args.devices),
        "device_type": args.device_type,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": parse_lr(args.lr),
        "weights": os.path.abspath(args.weights) if args.weights else None,
        "resume": parse_resume(args.resume),
        "max_iters": args.max_iters,
        "amp": args.amp,
        "workers": args.workers,
        "min_size": args.min_size,
        "max_size": args.max_size,
        "pad_size": args.pad_size,
        "checkpoint_every": args.checkpoint_every,
        "checkpoint_epochs": args.checkpoint_epochs,
        "log_every": args.log_every,
        "seed": args.seed,
        "threads": args.threads,
        "warmup_iters": args.warmup_iters,
        "warmup_ratio": args.warmup_ratio,
        "steps": parse_steps(args.steps),
        "clip_grad": args.clip_grad,
        "eval": bool(args.eval),
        "eval_data": os.path.abspath(args.eval_data) if args.eval_data else None,
        "eval_limit": args.eval_limit,
        "eval_input_size": args.eval_input_size,
        "eval_min_size": args.eval_min_size or data_lib.MIN_SIZE,
        "eval_max_size": args.eval_max_size or data_lib.MAX_SIZE,
        "profile": args.profile,
        "eval_profile": args.eval_profile or args.profile,
        "nnodes": args.nnodes,
        "node_rank": args.node_rank,
    }


def command(config_path, nproc, args):
    """The argv that runs the workers on this node."""
    worker = ["-m", "models.retinanet.train.worker", "--config", config_path]
    if nproc == 1 and args.nnodes == 1:
        return [sys.executable, *worker]
    argv = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc)]
    if args.nnodes > 1:
        argv += ["--nnodes", str(args.nnodes), "--node_rank", str(args.node_rank)]
        argv += ["--master_addr", str(args.master_addr), "--master_port", str(args.master_port)]
    elif args.master_port:
        argv += ["--master_addr", str(args.master_addr or "127.0.0.1")]
        argv += ["--master_port", str(args.master_port)]
    else:
        argv += ["--standalone"]
    return argv + worker


def _quote(argv):
    import shlex

    return " ".join(shlex.quote(str(a)) for a in argv)


def working_directory(fallback):
    """Where the workers run: CANN's op compiler writes kernel_meta/ into it.

    The launcher's own when writable (in a container, the tmpfs the docker runner gives
    NPU stages; the repository there is read-only), else `fallback` (the work folder).
    The workers import the code through PYTHONPATH, not the working directory.
    """
    here = os.getcwd()
    return here if os.access(here, os.W_OK) else fallback


def run_workers(argv, config, threads):
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("PYTHONUNBUFFERED", "1")
    env[worker_lib.LAUNCHED_ENV] = "1"
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    error_file = os.path.join(config["out"], worker_lib.ERROR_FILE)
    if os.path.exists(error_file):
        os.remove(error_file)
    sys.stdout.write("$ %s\n" % _quote(argv))
    sys.stdout.flush()
    code = subprocess.call(argv, env=env, cwd=working_directory(config["work_dir"]))
    if code != 0:
        if os.path.isfile(error_file):
            with open(error_file) as handle:
                message = handle.read().strip()
            os.remove(error_file)
            raise UserError(message)
        # Not a UserError: the workers' own output says what failed; no launcher traceback.
        sys.stderr.write(
            "the training processes failed (exit code %d); see their output above. Checkpoints "
            "already written in %s are kept: run again with --resume auto to continue\n"
            % (code, config["work_dir"])
        )
        sys.exit(code if code > 0 else 1)


def main(args):
    _check_args(args)
    config = build_config(args)
    config_path = os.path.join(config["out"], CONFIG_FILE)
    cli.write_json(config_path, config)
    nproc = len(config["devices"])
    run_workers(command(config_path, nproc, args), config, args.threads)
    summary_path = os.path.join(config["out"], worker_lib.SUMMARY_FILE)
    if args.node_rank != 0:
        cli.write_json(
            summary_path,
            {"node_rank": args.node_rank, "note": "node 0 writes model_final.pth and train.json"},
        )
        return
    if not os.path.isfile(summary_path):
        raise RuntimeError("the workers ended without writing %s" % summary_path)
    with open(summary_path) as handle:
        summary = json.load(handle)
    published = summary_lib.published_numbers(args.recipe)
    summary["dataset"] = config["dataset"]
    summary["published"] = published or None
    summary["comparison"] = summary_lib.compare(summary, published) if published else []
    summary["command"] = _quote(command(config_path, nproc, args))
    cli.write_json(summary_path, summary)
    final = summary.get("final_loss") or {}
    print(
        "trained %d iterations (%s); final loss %s; %s images/s; wrote %s"
        % (
            summary["iterations"],
            summary["status"],
            "%.4f" % final["loss"] if final else "n/a",
            "%.1f" % summary["images_per_s"] if summary.get("images_per_s") else "n/a",
            os.path.join(config["out"], worker_lib.FINAL_FILE),
        )
    )


def build_parser():
    return cli.parser(__doc__.splitlines()[0], params.LAUNCH)


if __name__ == "__main__":
    cli.run(main, build_parser())
