"""The RetinaNet training stage: checks the inputs, then runs one process per device.

    python -m models.retinanet.train.launch --out OUT --data COCO_ROOT --work-dir WORK \
        --devices 0,1,2,3,4,5,6,7 [--epochs 12] [--batch-size 8] [--lr 0.04|auto] \
        [--weights R-50.pkl] [--resume auto|yes|no] [--max-iters N] [--amp auto|on|off] \
        [--split train2017] [--limit N] [--eval] [--nnodes 2 --node-rank 0 \
        --master-addr HOST --local-addr THIS_HOST [--master-port 29500]]

1. Reads COCO_ROOT/annotations/instances_<split>.json once (train2017: 450 MB of JSON)
   into a compact records file in the work folder, so the N processes do not each parse
   it; a dataset that is missing or wrong ends here with one line.
2. On several nodes (nodes.py: flags, else the scheduler's variables), node 0 listens on
   the master port while it prepares; the others reach it within --connect-timeout,
   and node 0 checks that every node agrees and tells them which checkpoint the run
   continues from, sending the file to a node that lacks it (handshake.py). On one node
   the launcher picks that checkpoint itself. Then every setting goes to
   OUT/train_config.json.
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
import socket
import subprocess
import sys

from models.retinanet.train import data as data_lib
from models.retinanet.train import device as device_lib
from models.retinanet.train import handshake, schedule
from models.retinanet.train import nodes as nodes_lib
from models.retinanet.train import summary as summary_lib
from models.retinanet.train import worker as worker_lib
from zoostage import cli
from zoostage.errors import UserError
from zoostage.unpickle import load_pickle

CONFIG_FILE = "train_config.json"
# The seed's test/train_full_{1,8}p.sh: --cfg-options optimizer.lr=0.04 (8 images a device,
# on 1 and on 8 devices); its config: optimizer_config grad_clip=dict(max_norm=10).
SEED_LR = 0.04
SEED_CLIP_GRAD = 10.0
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
    tmp = "%s.tmp-%s-%d" % (path, socket.gethostname(), os.getpid())  # a shared folder
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
    if args.connect_timeout <= 0:
        raise UserError("--connect-timeout must be positive, not %s" % args.connect_timeout)
    if args.eval:
        from data_scripts.coco import layout

        layout.list_images(args.eval_data or args.data, limit=args.eval_limit)
        try:
            import pycocotools  # noqa: F401
        except ImportError:
            raise UserError("--eval needs pycocotools: pip install pycocotools") from None
    return nodes_lib.resolve(
        args.nnodes, args.node_rank, args.master_addr, args.master_port, args.local_addr,
        nproc=len(parse_devices(args.devices)),
    )  # fmt: skip


def build_config(args, nodes):
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
        "nnodes": nodes.nnodes,
        "node_rank": nodes.node_rank,
        "local_addr": nodes.local_addr,
        "cpu_bind": nodes_lib.resolve_cpu_bind(args.cpu_bind, device_lib.npu_present()),
    }


def resume_point(config):
    """Node 0's choice: (path, iteration) of the checkpoint to continue from, or None.

    --resume no: none (start_over removes the old files once every node agreed); auto:
    the newest complete one if any; yes: it must exist.
    """
    from models.retinanet.train import checkpoints

    work_dir, mode = config["work_dir"], config["resume"]
    if mode == "no":
        return None
    path, state = checkpoints.load_latest(work_dir)
    if state is None:
        if mode == "yes":
            raise UserError(
                "--resume yes, but %s holds no complete checkpoint: run without --resume "
                "(or with --resume auto) to start" % work_dir
            )
        return None
    return path, int(state["iteration"])


def start_over(config):
    """--resume no on node 0: remove the work folder's checkpoints (after the agreement:
    a refused start loses nothing)."""
    from models.retinanet.train import checkpoints

    removed = checkpoints.clear(config["work_dir"])
    if removed:
        print("--resume no: removed %d old checkpoint files" % len(removed))


def agree_with_other_nodes(config, nodes, master, point, timeout):
    """Several nodes: the handshake (handshake.py); the path this node resumes from."""
    with open(config["records"], "rb") as handle:
        records = load_pickle(handle)["records"]
    mine = handshake.facts(
        config, len(config["devices"]), nodes.nnodes, nodes.node_rank,
        handshake.code_fingerprint(REPO), handshake.dataset_fingerprint(records),
    )  # fmt: skip
    if master is not None:
        checkpoint = handshake.describe_checkpoint(*(point or (None, 0)))
        master.agree(mine, checkpoint, config["work_dir"])
        print("all %d nodes agree; starting" % nodes.nnodes)
        return point[0] if point else None
    checkpoint = handshake.join(nodes, mine, config["work_dir"], timeout, print)
    if not checkpoint.get("name"):
        return None
    return os.path.join(config["work_dir"], checkpoint["name"])


def command(config_path, nproc, nodes, port_given=False):
    """The argv that runs the workers on this node."""
    worker = ["-m", "models.retinanet.train.worker", "--config", config_path]
    if nproc == 1 and nodes.nnodes == 1:
        return [sys.executable, *worker]
    argv = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc)]
    if nodes.nnodes > 1:
        argv += ["--nnodes", str(nodes.nnodes), "--node_rank", str(nodes.node_rank)]
        argv += ["--master_addr", str(nodes.master_addr)]
        argv += ["--master_port", str(nodes.master_port)]
    elif port_given:
        argv += ["--master_addr", str(nodes.master_addr or "127.0.0.1")]
        argv += ["--master_port", str(nodes.master_port)]
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


# A scheduler's variables that would tell a lone worker (started without torchrun) that
# it is one of many: torchrun sets its own for the workers it starts.
_SCHEDULER_RANKS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR",
                    "MASTER_PORT")  # fmt: skip


def run_workers(argv, config, threads, extra_env=None):
    env = dict(os.environ)
    if "torch.distributed.run" not in argv:
        for name in _SCHEDULER_RANKS:
            env.pop(name, None)
    env.update(extra_env or {})
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
        # Not a UserError: the workers' own output says what failed, and the engine ends
        # with its one `error:` line; no launcher traceback.
        again = "the same command" if config["nnodes"] == 1 else "the same commands on every node"
        sys.stderr.write(
            "the training processes on node %d failed (exit code %d); see their output "
            "above. Checkpoints already written in %s are kept: run %s again (--resume auto) "
            "to continue from the last complete one\n"
            % (config["node_rank"], code, config["work_dir"], again)
        )
        sys.exit(code if code > 0 else 1)


def main(args):
    nodes = _check_args(args)
    master = None
    if nodes.nnodes > 1:
        sources = "".join(", %s from %s" % pair for pair in sorted(nodes.sources.items()))
        print(
            "node %d of %d: master %s port %d, local address %s on %s%s"
            % (nodes.node_rank, nodes.nnodes, nodes.master_addr, nodes.master_port,
               nodes.local_addr, nodes.interface, sources)
        )  # fmt: skip
        if nodes.node_rank == 0:  # listening while it prepares: the others may come first
            master = handshake.Master(nodes, args.connect_timeout).open()
    try:
        config = build_config(args, nodes)
        point = resume_point(config) if nodes.node_rank == 0 else None
        if nodes.nnodes > 1:
            resume_from = agree_with_other_nodes(config, nodes, master, point, args.connect_timeout)
        else:
            resume_from = point[0] if point else None
    finally:
        if master is not None:
            master.sock.close()
    if nodes.node_rank == 0 and config["resume"] == "no":
        start_over(config)
    config["resume_from"] = resume_from
    config_path = os.path.join(config["out"], CONFIG_FILE)
    cli.write_json(config_path, config)
    nproc = len(config["devices"])
    argv = command(config_path, nproc, nodes, port_given=args.master_port is not None)
    run_workers(
        argv, config, args.threads, nodes_lib.worker_environment(nodes, args.connect_timeout)
    )
    summary_path = os.path.join(config["out"], worker_lib.SUMMARY_FILE)
    if nodes.node_rank != 0:
        cli.write_json(
            summary_path,
            {"node_rank": nodes.node_rank, "note": "node 0 writes model_final.pth and train.json"},
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
    summary["command"] = _quote(argv)
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
    parser = cli.parser(__doc__.splitlines()[0])
    add = parser.add_argument
    add("--data", required=True, help="COCO root: <split>/ and annotations/instances_<split>.json")
    add("--split", default=data_lib.DEFAULT_SPLIT, help="image split (default train2017)")
    add("--limit", type=int, default=0, help="first N usable images by id (0 = all)")
    add("--work-dir", required=True, help="checkpoint folder kept across runs")
    add("--devices", default="0", help="device ids this node uses, e.g. 0,1,2,3 (one process each)")
    add("--device-type", default="auto", help="auto, npu, cuda or cpu (auto: npu > cuda > cpu)")
    add("--epochs", type=int, default=schedule.EPOCHS, help="epochs (default 12)")
    add("--batch-size", type=int, default=8, help="images per device and step (default 8)")
    add(
        "--lr",
        default=str(SEED_LR),
        help="base lr (the seed's 0.04, default), or auto: 0.01 x (batch x devices) / 16",
    )
    add("--weights", help="ImageNet backbone: MSRA R-50.pkl or a detectron2 checkpoint")
    add(
        "--resume",
        nargs="?",
        const="yes",
        default="no",
        help="auto: continue from the work folder's newest checkpoint if any; yes: it must "
        "exist; no (the default without the flag): start over, removing old checkpoints",
    )
    add("--max-iters", type=int, default=0, help="stop after N iterations in all (0 = no limit)")
    add("--amp", default="auto", help="mixed precision: auto (on for NPU / CUDA), on, off, bf16")
    add("--workers", type=int, default=4, help="loader processes per device (default 4)")
    add("--min-size", type=int, default=data_lib.MIN_SIZE, help="short side (800)")
    add("--max-size", type=int, default=data_lib.MAX_SIZE, help="long side cap (1333)")
    add("--pad-size", type=int, default=0, help="pad every batch to this square (0: to 32)")
    add("--checkpoint-every", type=int, default=0, help="also checkpoint every N iterations")
    add(
        "--checkpoint-epochs",
        type=int,
        default=1,
        help="checkpoint after every N epochs (default 1; 0: only --checkpoint-every and the end)",
    )
    add("--log-every", type=int, default=20, help="log line every N iterations (default 20)")
    add("--seed", type=int, default=0, help="seed of the init, the order and the flips")
    add("--threads", type=int, default=0, help="CPU threads per process (0: torch's default)")
    add("--warmup-iters", type=int, default=schedule.WARMUP_ITERS, help="linear warm-up (500)")
    add("--warmup-ratio", type=float, default=schedule.WARMUP_RATIO, help="start factor (0.001)")
    add("--steps", default="8,11", help="epochs where the lr drops x0.1 (default 8,11)")
    add(
        "--clip-grad",
        type=float,
        default=SEED_CLIP_GRAD,
        help="max gradient L2 norm (the seed's 10, default; 0: no clipping)",
    )
    add("--eval", action="store_true", help="evaluate on COCO val2017 at the end")
    add("--eval-data", help="COCO root with val2017/ for --eval (default: --data)")
    add("--eval-limit", type=int, default=0, help="evaluate the first N val images (0 = all)")
    add("--eval-input-size", type=int, default=1344, help="padded eval input (1344)")
    add("--eval-min-size", type=int, default=0, help="eval short side (0: 800)")
    add("--eval-max-size", type=int, default=0, help="eval long side cap (0: 1333)")
    add(
        "--profile",
        default="seed",
        choices=("seed", "upstream"),
        help="seed (default): the ModelZoo's executed mmdetection (first 40 boxes an image, "
        "fixed 1344 x 800 frames, static loss scale 64); upstream: mmdetection's config",
    )
    add(
        "--eval-profile",
        choices=("seed", "upstream"),
        help="the inference recipe's profile the evaluation follows (default: --profile)",
    )
    # Several nodes (nodes.py): a flag not given is read from the scheduler's variables.
    add("--nnodes", type=int, help="machines taking part (else NNODES / WORLD_SIZE; 1)")
    add("--node-rank", type=int, help="this machine's index (else NODE_RANK / RANK; 0)")
    add("--master-addr", help="address of node 0 (else MASTER_ADDR)")
    add("--master-port", type=int, help="port on node 0 (else MASTER_PORT; 29500)")
    add("--local-addr", help="this host's address the nodes talk over (else LOCAL_ADDR)")
    add(
        "--connect-timeout",
        type=float,
        default=nodes_lib.DEFAULT_CONNECT_TIMEOUT,
        help="seconds to reach node 0 / wait for the others; HCCL_CONNECT_TIMEOUT (300)",
    )
    add("--cpu-bind", default="auto", help="each rank on its own cores: auto (NPU hosts), on, off")
    add("--recipe", help="recipe.yaml with the published training numbers (published_train)")
    return parser


if __name__ == "__main__":
    cli.run(main, build_parser())
