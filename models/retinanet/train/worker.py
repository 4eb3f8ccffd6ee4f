"""One training process: what every rank runs (torchrun starts one per device).

    python -m torch.distributed.run --nproc_per_node 8 -m models.retinanet.train.worker \
        --config OUT/train_config.json

The config is what launch.py wrote (every setting resolved, the dataset already parsed
into a compact records file). Per process, `train`:

1. device and process group (device.py: npu / hccl, cuda / nccl, cpu / gloo; LOCAL_RANK
   picks the device from `devices`), seeds;
2. the network (net.build_model with the seed: every rank starts identical), its start
   (backbone.py: the ImageNet backbone when given, else a random init whose FrozenBN
   statistics are calibrated on the first step's images), stem and res2 frozen, SGD and
   the 1x schedule (schedule.py), the float16 loss scaler when mixed precision is on;
3. resume from the checkpoint the launcher chose (node 0's newest complete one, present
   on every node: `resume_from`) with its model, optimizer, schedule, scaler, RNG states,
   iteration and loss log, after checking it was made with the same data, batch, devices
   and schedule (checkpoints.py);
4. DistributedDataParallel when there are several processes (gradients averaged);
5. the loop (trainer.py: one step at a time) and its hooks (hooks.py): the lr schedule,
   the loss log and images/s, checkpoints, model_final.pth, the ranks' agreement at the
   end, the optional COCO evaluation (evaluation.py, the inference recipe's own stage
   functions);
6. rank 0 writes OUT/train.json.

A UserError in any rank is written to OUT/.error (first one wins) so the launcher can end
with its one line; so is, on several nodes, a lost connection to another node's processes.
"""

import argparse
import hashlib
import json
import os
import random
import sys
import time
from types import SimpleNamespace

import numpy as np

from models.common.checkpoint import check_finite
from models.retinanet.train import device as device_lib
from models.retinanet.train import hooks as hook_lib
from zoostage.errors import USER_ERROR_EXIT, UserError
from zoostage.pool import usable_cores
from zoostage.space import disk_full, is_disk_full
from zoostage.unpickle import load_pickle

ERROR_FILE = ".error"
LAUNCHED_ENV = "ZOOBOX_TRAIN_LAUNCHED"
FINAL_FILE = hook_lib.FINAL_FILE
SUMMARY_FILE = "train.json"
# Images the random init's FrozenBN statistics are calibrated on (from the first step).
CALIBRATION_IMAGES = 8


def load_records(path):
    """The records list launch.py parsed from the annotation file (its own pickle)."""
    with open(path, "rb") as handle:
        return load_pickle(handle)["records"]


def run_settings(config, records, world_size, base_lr):
    """The settings a resumed run must share with its checkpoint (checkpoints.RESUME_KEYS)."""
    return {
        "dataset_size": len(records),
        "dataset_ids_digest": hashlib.sha256(
            ",".join(str(r["id"]) for r in records).encode()
        ).hexdigest(),
        "batch_size": int(config["batch_size"]),
        "world_size": world_size,
        "seed": int(config["seed"]),
        "min_size": int(config["min_size"]),
        "max_size": int(config["max_size"]),
        "pad_size": int(config.get("pad_size") or 0),
        "profile": config.get("profile") or "seed",
        "base_lr": float(base_lr),
        "warmup_iters": int(config["warmup_iters"]),
        "warmup_ratio": float(config["warmup_ratio"]),
        "steps": [int(s) for s in config["steps"]],
        "epochs": int(config["epochs"]),
    }


def first_images(dataset, plan, device, count=CALIBRATION_IMAGES):
    """The network input of the first step's images (all ranks' shares, at most `count`)."""
    from models.retinanet.train import data as data_lib

    items = [dataset[pair] for share in plan[0] for pair in share][:count]
    sizes = [item["pixels"].shape[:2] for item in items]
    height, width = data_lib.padded_size(sizes)
    pixels = np.zeros((len(items), height, width, 3), dtype=np.uint8)
    for row, item in enumerate(items):
        pixels[row, : sizes[row][0], : sizes[row][1]] = item["pixels"]
    import torch

    valid = torch.as_tensor(np.asarray(sizes, dtype=np.int64).reshape(-1, 2))
    return data_lib.to_input(torch.from_numpy(pixels), valid, device)


def build_network(config, device, dataset, plan):
    """(model on `device` in train mode, notes on its start for train.json, frozen count)."""
    from models.retinanet import net
    from models.retinanet.train import backbone

    model = net.build_model(seed=config["seed"]).to(device)
    if config.get("weights"):
        notes = backbone.load_backbone(model, config["weights"])
    else:
        images = first_images(dataset, plan, device)
        layers = backbone.calibrate(model.backbone.bottom_up, images)
        notes = {
            "format": "random init, FrozenBN statistics calibrated on the first step",
            "calibration_images": int(images.shape[0]),
            "calibrated_layers": layers,
        }
    frozen = backbone.freeze(model)
    model.train()
    return model, notes, frozen


def resume(config, parts, current, rank):
    """Continue from the checkpoint the launcher chose, if any: (iteration, history, facts).

    launch.py decides (node 0's newest complete checkpoint, or none with --resume no) and
    makes sure every node holds that very file, so every rank starts at one iteration.
    """
    from models.retinanet.train import checkpoints

    path = config.get("resume_from")
    if not path:
        return 0, [], None
    state = checkpoints.read_checkpoint(path)
    checkpoints.check_resumable(state.get("config", {}), current, path)
    check_finite(state["model"], "checkpoint %s" % path, "pass --resume no to start over")
    parts["model"].load_state_dict(state["model"])
    parts["optimizer"].load_state_dict(state["optimizer"])
    parts["schedule"].load_state_dict(state["schedule"])
    if parts["scaler"] is not None and state.get("scaler"):
        parts["scaler"].load_state_dict(state["scaler"])
    if state.get("rng"):
        device_lib.set_rng_state(state["rng"], parts["device_type"])
    iteration = int(state["iteration"])
    if rank == 0:
        hook_lib.say("resuming from %s at iteration %d" % (path, iteration))
    facts = {"checkpoint": os.path.abspath(path), "iteration": iteration}
    return iteration, list(state.get("history") or []), facts


def wrap_distributed(model, device, device_type):
    import warnings

    from torch.nn.parallel import DistributedDataParallel

    with warnings.catch_warnings():
        # Newer torch renames the flag (FutureWarning); torch 2.1 knows only this one.
        warnings.simplefilter("ignore", FutureWarning)
        return DistributedDataParallel(
            model,
            device_ids=None if device_type == "cpu" else [device.index],
            broadcast_buffers=False,  # FrozenBN buffers never change
        )


def bind_cores(local_rank, nproc, rank):
    """This rank on its share of the cores, as the seed's `taskset -c A-B` per rank;
    loader processes started later inherit it."""
    from models.retinanet.train import nodes

    if not hasattr(os, "sched_setaffinity"):
        return
    ranges = nodes.cpu_ranges(os.sched_getaffinity(0), nproc)
    if ranges is None:
        if local_rank == 0:
            hook_lib.say("note: fewer cores than processes here: no per-rank core binding")
        return
    os.sched_setaffinity(0, ranges[local_rank])
    hook_lib.say("rank %d bound to cores %s" % (rank, nodes.range_text(ranges[local_rank])))


def start_process(config):
    """Threads, device, process group and seeds of this rank: a namespace `run`."""
    import torch

    rank, world_size, local_rank = device_lib.dist_info()
    if config.get("cpu_bind"):
        bind_cores(local_rank, len(config.get("devices") or [0]), rank)
    if config.get("threads"):
        torch.set_num_threads(int(config["threads"]))
    device_type = device_lib.resolve_device_type(config.get("device_type"))
    device, device_name = device_lib.setup_device(
        device_type, local_rank, config.get("devices") or [0]
    )
    distributed = device_lib.init_distributed(device_type, world_size)
    seed = int(config["seed"])
    random.seed(seed + rank)
    np.random.seed(seed + rank)
    torch.manual_seed(seed)
    return SimpleNamespace(
        rank=rank, world_size=world_size, device_type=device_type, device=device,
        device_name=device_name, distributed=distributed, seed=seed,
        batch_size=int(config["batch_size"]),
    )  # fmt: skip


def build_run(config, run):
    """Data, network, optimizer, schedule, scaler and the resumed state, onto `run`."""
    from models.retinanet.train import data as data_lib
    from models.retinanet.train.profiles import training_profile
    from models.retinanet.train.schedule import StepSchedule, build_optimizer, scaled_lr

    run.profile = training_profile(config.get("profile"))
    run.records = load_records(config["records"])
    run.dataset = data_lib.TrainDataset(
        run.records, config["min_size"], config["max_size"], max_boxes=run.profile.max_boxes
    )
    run.groups = run.dataset.aspect_groups()
    run.per_epoch = data_lib.steps_per_epoch(run.groups, run.batch_size, run.world_size)
    run.total = run.per_epoch * int(config["epochs"])
    run.stop_at = min(run.total, int(config.get("max_iters") or 0) or run.total)
    run.base_lr = config.get("lr") or scaled_lr(run.batch_size * run.world_size)
    run.current = run_settings(config, run.records, run.world_size, run.base_lr)
    plan = data_lib.batch_plan(run.groups, run.batch_size, run.world_size, run.seed, 0)
    run.model, run.weight_notes, run.frozen = build_network(config, run.device, run.dataset, plan)
    run.schedule = StepSchedule(
        run.base_lr, config["steps"], warmup_iters=config["warmup_iters"],
        warmup_ratio=config["warmup_ratio"],
    )  # fmt: skip
    run.optimizer = build_optimizer(run.model, run.base_lr)
    run.dtype = device_lib.amp_dtype(config.get("amp", "auto"), run.device_type)
    run.scaler = device_lib.grad_scaler(run.device_type, run.dtype, run.profile.loss_scale)
    parts = dict(
        model=run.model, optimizer=run.optimizer, schedule=run.schedule, scaler=run.scaler,
        device_type=run.device_type,
    )  # fmt: skip
    run.iteration, run.history, run.resumed = resume(config, parts, run.current, run.rank)
    return run


def loader_workers(config):
    """The loader processes of one training process: --workers, at most one per core.

    More processes than cores only share them, and `--workers 100000` would fork until
    the machine stops.
    """
    return max(0, min(int(config.get("workers") or 0), usable_cores()))


def build_step(config, run):
    """The loader over this rank's batches and the Step that consumes them."""
    import torch

    from models.retinanet.train import data as data_lib
    from models.retinanet.train.trainer import Step

    workers = loader_workers(config)
    loader = torch.utils.data.DataLoader(
        run.dataset,
        batch_sampler=data_lib.RunBatches(
            run.groups, run.batch_size, run.world_size, run.rank, run.seed, run.iteration,
            run.stop_at,
        ),
        collate_fn=data_lib.Collate(
            pad_size=int(config.get("pad_size") or 0),
            frames=(config["min_size"], config["max_size"]) if run.profile.fixed_frames else None,
        ),
        num_workers=workers,
        worker_init_fn=data_lib.worker_init if workers else None,
        pin_memory=run.device_type == "cuda",
    )  # fmt: skip
    cuda = run.device_type == "cuda"

    def to_device(batch):
        images = data_lib.to_input(
            batch["pixels"], batch["valid_hw"], run.device, non_blocking=cuda
        )
        return (
            images,
            batch["cls_targets"].to(run.device, non_blocking=True),
            batch["box_targets"].to(run.device, non_blocking=True),
        )

    network = run.model
    if run.distributed:
        network = wrap_distributed(run.model, run.device, run.device_type)
    return Step(
        network, run.optimizer, run.optimizer.param_groups[0]["params"], iter(loader),
        to_device, lambda: device_lib.autocast(run.device_type, run.dtype), run.scaler,
        config.get("clip_grad"),
    )  # fmt: skip


def build_hooks(config, run, trainer):
    """The hooks, in the order they run (hooks.py); the ones train.json reads, by name."""

    def state():
        return {
            "model": run.model.state_dict(),
            "optimizer": run.optimizer.state_dict(),
            "schedule": run.schedule.state_dict(),
            "scaler": run.scaler.state_dict() if run.scaler is not None else None,
            "iteration": trainer.iteration,
            "epoch": trainer.iteration // run.per_epoch,
            "rng": device_lib.rng_state(run.device_type),
            "config": run.current,
            "history": run.history,
        }

    named = {
        "logging": hook_lib.LoggingHook(
            hook_lib.LossLog(run.distributed, run.world_size), run.history,
            run.batch_size * run.world_size, config.get("log_every") or 20,
            run.device_type, run.rank,
        ),
        "agreement": hook_lib.RankAgreementHook(
            run.model, config["out"], run.rank, run.distributed
        ),
        "evaluation": hook_lib.EvalHook(run.model, eval_settings(config), run.device, run.rank),
    }  # fmt: skip
    checkpoint = hook_lib.CheckpointHook(
        config["work_dir"], config["out"], state, config.get("checkpoint_every"),
        config.get("checkpoint_epochs", 1), run.rank, run.resumed is not None,
    )  # fmt: skip
    order = [hook_lib.ScheduleHook(run.schedule, run.optimizer), named["logging"], checkpoint]
    order.append(named["agreement"])
    if config.get("eval"):
        order.append(named["evaluation"])
    trainer.register(order)
    return named


def train(config):
    """Run this rank's share of the training; rank 0 returns the summary dict."""
    from models.retinanet.train.trainer import Trainer

    started = time.time()
    run = build_run(config, start_process(config))
    if run.rank == 0:
        hook_lib.say(
            "training RetinaNet R50-FPN: %d images, %d processes on %s (%s), batch %d per "
            "process, lr %g, %d iterations (%d per epoch x %d epochs)%s, amp %s"
            % (
                len(run.records), run.world_size, run.device_type, run.device_name,
                run.batch_size, run.base_lr, run.total, run.per_epoch, int(config["epochs"]),
                ", stopping at %d" % run.stop_at if run.stop_at < run.total else "",
                device_lib.dtype_name(run.dtype) or "off",
            )
        )  # fmt: skip
    step = build_step(config, run)
    trainer = Trainer(step, run.iteration, run.stop_at, run.per_epoch)
    hooks = build_hooks(config, run, trainer)
    trainer.train()
    step.batches = None  # ends the loader's worker processes
    if run.rank != 0:
        return None
    from models.retinanet.train.summary import summarize

    return summarize(config, run, trainer, step, hooks, time.time() - started)


def eval_settings(config):
    """What the evaluation hook needs from the config (the recipe's test-time sizes)."""
    return {
        "root": config.get("eval_data") or config["data"],
        "out": config["out"],
        "input_size": config.get("eval_input_size") or 1344,
        "min_size": config.get("eval_min_size") or 800,
        "max_size": config.get("eval_max_size") or 1333,
        "limit": config.get("eval_limit") or 0,
        "profile": config.get("eval_profile") or config.get("profile") or "seed",
    }


def user_message(error):
    """The one-line reason of a UserError, also one re-raised from a loader worker.

    torch's DataLoader re-raises a worker's exception with the worker's traceback in its
    message; the reason is the traceback's last line.
    """
    text = str(error)
    if "Traceback" in text:
        lines = [line for line in text.strip().splitlines() if line.strip()]
        last = lines[-1] if lines else text
        marker = "UserError: "
        text = last.split(marker, 1)[1] if marker in last else last
    return text.strip()


def write_error(out, message):
    """The first rank's UserError, for the launcher's one line; False when it could not
    be written (a full disk), so the rank prints it itself."""
    path = os.path.join(out, ERROR_FILE)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except OSError as error:
        return not is_disk_full(error)  # EEXIST: another rank was first, and said it
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(message)
    except (IOError, OSError):  # a full disk: this rank says it itself
        return False
    return True


# What the collective backends say when a peer process or its host went away.
_LOST_PEER = ("Connection closed by peer", "Connection reset by peer", "Broken pipe",
              "timed out", "Timed out", "Connection refused", "NCCL", "HCCL", "hccl")  # fmt: skip


def lost_peer(error):
    return any(text in str(error) for text in _LOST_PEER)


def lost_peer_message(config, error):
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return (
        "node %d lost the connection to another node's training processes (%s): a node "
        "died or the network between the nodes failed. Checkpoints in %s are kept: run the "
        "same commands on every node again to continue from the last complete one"
        % (int(config.get("node_rank") or 0), first[:200], config["work_dir"])
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="train_config.json from launch.py")
    args = parser.parse_args(argv)
    with open(args.config) as handle:
        config = json.load(handle)
    try:
        summary = train(config)
        if summary is not None:
            from zoostage import cli

            cli.write_json(os.path.join(config["out"], SUMMARY_FILE), summary)
    except (UserError, IOError, OSError) as error:
        if not isinstance(error, UserError):
            # A checkpoint (torch.save to an open file) or a log met a full disk: the
            # one line the other stages give, not a traceback per rank.
            if not is_disk_full(error):
                raise
            error = disk_full(error.filename or config["work_dir"])
        message = user_message(error)
        written = write_error(config["out"], message)
        if not written or not os.environ.get(LAUNCHED_ENV):  # else the launcher prints it
            sys.stderr.write("error: %s\n" % message)
        sys.exit(USER_ERROR_EXIT)
    except RuntimeError as error:
        if int(config.get("nnodes") or 1) > 1 and lost_peer(error):
            write_error(config["out"], lost_peer_message(config, error))
        raise
    finish_distributed()


def finish_distributed():
    """End a rank of a multi-process run once everything it writes is written.

    torch's gloo teardown (the process group's threads, at destroy_process_group or at
    interpreter exit) now and then aborted a rank whose work was done ("terminate called
    without an active exception", exit -6: seen about once in ten 2-host runs here), and
    torchrun then reported the whole run failed. Every output is written atomically
    before this point, so the rank ends here without running those destructors.
    """
    if int(os.environ.get("WORLD_SIZE") or 1) <= 1:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
