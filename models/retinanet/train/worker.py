"""One training process: the loop every rank runs (torchrun starts one per device).

    python -m torch.distributed.run --nproc_per_node 8 -m models.retinanet.train.worker \
        --config OUT/train_config.json

The config is what launch.py wrote (every setting resolved, the dataset already parsed
into a compact records file). Per process:

1. device: `npu` (torch_npu imported only then; backend hccl), `cuda` (nccl) or `cpu`
   (gloo); LOCAL_RANK picks the device from `devices`;
2. the network (net.build_model with the seed: every rank starts identical), the ImageNet
   backbone when given, stem and res2 frozen, SGD + the 1x schedule, DistributedDataParallel
   (gradients averaged over ranks) when there are several processes;
3. resume from the work folder's newest checkpoint (model, optimizer, schedule, loss scaler,
   RNG states, iteration, loss log), after checking that it was made with the same data,
   batch, devices and schedule;
4. the loop: batches from the epoch's plan (data.batch_plan: the same on every rank, this
   rank's share), targets computed by the loader workers, forward under autocast when mixed
   precision is on, focal + L1 losses in float32, backward (scaled for float16), optional
   gradient clipping, SGD step. Loss parts stay on the device and are averaged over ranks
   at each log line (no per-iteration host sync);
5. checkpoints (rank 0) every --checkpoint-every iterations, after every
   --checkpoint-epochs epochs (default 1) and when the run stops at --max-iters;
6. the end (rank 0): OUT/model_final.pth (the network's state dict, detectron2 keys), the
   optional COCO evaluation, OUT/train.json. Every rank writes a digest of its final weights
   first, so train.json can say whether the ranks ended identical.

A UserError in any rank is written to OUT/.error (first one wins) so the launcher can end
with its one line.
"""

import argparse
import contextlib
import hashlib
import json
import os
import platform
import random
import sys
import time

import numpy as np

from zoostage.errors import USER_ERROR_EXIT, UserError
from zoostage.unpickle import load_pickle

ERROR_FILE = ".error"
LAUNCHED_ENV = "ZOOBOX_TRAIN_LAUNCHED"
DIGEST_DIR = ".digests"
FINAL_FILE = "model_final.pth"
SUMMARY_FILE = "train.json"
TIMING_SKIP = 5  # first iterations left out of the images/s (compilation, allocator warm-up)


# -- device and process group --------------------------------------------------------------
def npu_present():
    """Ascend device nodes exist (the check zoobox.hosts.probe makes), without torch_npu."""
    import glob

    return bool(glob.glob("/dev/davinci[0-9]*"))


def resolve_device_type(requested):
    """auto -> npu (torch_npu installed and devices present), cuda, or cpu."""
    import torch

    requested = (requested or "auto").lower()
    if requested not in ("auto", "npu", "cuda", "cpu"):
        raise UserError("--device-type must be auto, npu, cuda or cpu, not %r" % requested)
    if requested == "npu" or (requested == "auto" and npu_present()):
        try:
            import torch_npu  # noqa: F401  (registers torch.npu)
        except ImportError:
            if requested == "npu":
                raise UserError(
                    "--device-type npu, but torch_npu is not installed here: run in the train "
                    "env (invoke envs.build, or the train image)"
                ) from None
        else:
            if torch.npu.is_available():
                return "npu"
            if requested == "npu":
                raise UserError("torch_npu sees no NPU: check the driver and the devices")
    if requested == "cuda" or (requested == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise UserError("--device-type cuda, but torch sees no CUDA device")
        return "cuda"
    return "cpu"


def backend_for(device_type):
    return {"npu": "hccl", "cuda": "nccl"}.get(device_type, "gloo")


def device_module(device_type):
    import torch

    return getattr(torch, device_type, None) if device_type in ("npu", "cuda") else None


def setup_device(device_type, local_rank, devices):
    import torch

    if device_type == "cpu":
        return torch.device("cpu"), "cpu"
    index = int(devices[local_rank]) if local_rank < len(devices) else local_rank
    module = device_module(device_type)
    device = torch.device("%s:%d" % (device_type, index))
    module.set_device(device)
    if device_type == "npu" and hasattr(torch.npu, "set_compile_mode"):
        # Binary (precompiled) kernels: shapes change from batch to batch.
        torch.npu.set_compile_mode(jit_compile=False)
    try:
        name = module.get_device_name(index)
    except Exception:  # the name is for the record only
        name = device_type
    return device, name


def synchronize(device_type):
    module = device_module(device_type)
    if module is not None:
        module.synchronize()


def dist_info():
    return (
        int(os.environ.get("RANK", 0)),
        int(os.environ.get("WORLD_SIZE", 1)),
        int(os.environ.get("LOCAL_RANK", 0)),
    )


def init_distributed(device_type, world_size):
    if world_size <= 1:
        return False
    import datetime

    import torch.distributed as dist

    if device_type == "npu":
        os.environ.setdefault("HCCL_WHITELIST_DISABLE", "1")
    # Long enough for rank 0's checkpoint writes and a slow first NPU compilation.
    dist.init_process_group(
        backend_for(device_type), init_method="env://", timeout=datetime.timedelta(minutes=60)
    )
    return True


def barrier(distributed):
    if distributed:
        import torch.distributed as dist

        dist.barrier()


# -- mixed precision ------------------------------------------------------------------------
def amp_dtype(amp, device_type):
    """The autocast dtype for --amp (auto/on/off) on this device, or None (float32)."""
    import torch

    amp = str(amp).lower()
    if amp in ("off", "false", "no", "0", "none"):
        return None
    if amp not in ("auto", "on", "true", "yes", "1", "fp16", "bf16"):
        raise UserError("--amp must be auto, on or off, not %r" % amp)
    if device_type in ("npu", "cuda"):
        return torch.bfloat16 if amp == "bf16" else torch.float16
    if amp == "auto":
        return None  # CPU: float32 unless asked
    if hasattr(torch, "autocast") and hasattr(torch, "bfloat16"):
        return torch.bfloat16
    sys.stderr.write("note: this torch has no CPU autocast: training in float32\n")
    return None


def autocast(device_type, dtype):
    import torch

    if dtype is None:
        return contextlib.nullcontext()
    if device_type == "npu":
        return torch.npu.amp.autocast(dtype=dtype)
    if hasattr(torch, "autocast"):
        return torch.autocast(device_type, dtype=dtype)
    return torch.cuda.amp.autocast()  # torch < 1.10 (CUDA only)


def grad_scaler(device_type, dtype):
    """A dynamic loss scaler for float16 (mmdet / apex O1 use one); None otherwise."""
    import torch

    if dtype is None or dtype != torch.float16:
        return None
    if device_type == "npu":
        return torch.npu.amp.GradScaler()
    amp = getattr(torch, "amp", None)
    if amp is not None and hasattr(amp, "GradScaler"):
        try:
            return amp.GradScaler(device_type)
        except TypeError:  # torch.amp.GradScaler without a device argument
            pass
    return torch.cuda.amp.GradScaler()


# -- RNG state --------------------------------------------------------------------------------
def rng_state(device_type):
    import torch

    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    module = device_module(device_type)
    if module is not None and hasattr(module, "get_rng_state"):
        state["device"] = module.get_rng_state()
    return state


def set_rng_state(state, device_type):
    import torch

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    module = device_module(device_type)
    if module is not None and "device" in state and hasattr(module, "set_rng_state"):
        module.set_rng_state(state["device"])


# -- resume checks ----------------------------------------------------------------------------
# Settings a resumed run must share with the checkpoint to continue the same run exactly.
RESUME_KEYS = (
    "dataset_size",
    "dataset_ids_digest",
    "batch_size",
    "world_size",
    "seed",
    "min_size",
    "max_size",
    "pad_size",
    "base_lr",
    "warmup_iters",
    "warmup_ratio",
    "steps",
)


def check_resumable(saved, current, path):
    different = [
        "%s %s -> %s" % (key, saved.get(key), current.get(key))
        for key in RESUME_KEYS
        if saved.get(key) != current.get(key)
    ]
    if different:
        raise UserError(
            "checkpoint %s comes from another run (%s): pass --resume no to start over in "
            "that work folder, or use the settings it was made with" % (path, "; ".join(different))
        )


def weights_digest(state_dict):
    digest = hashlib.sha256()
    for key in sorted(state_dict):
        digest.update(key.encode())
        digest.update(state_dict[key].detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _fmt_time(seconds):
    seconds = int(seconds)
    if seconds >= 3600:
        return "%dh%02dm" % (seconds // 3600, seconds % 3600 // 60)
    return "%dm%02ds" % (seconds // 60, seconds % 60)


def _say(text):
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


# -- the loop ---------------------------------------------------------------------------------
class LossLog(object):
    """Loss parts kept on the device per iteration; averaged over ranks at each log line."""

    def __init__(self, distributed, world_size):
        self.distributed = distributed
        self.world_size = world_size
        self.pending = []

    def add(self, losses):
        import torch

        self.pending.append(
            torch.stack([losses["loss"], losses["loss_cls"], losses["loss_box"]]).detach()
        )

    def flush(self):
        """(mean loss, mean cls, mean box) over the pending iterations and all ranks."""
        import torch

        if not self.pending:
            return None
        values = torch.stack(self.pending).float().mean(dim=0)
        if self.distributed:
            import torch.distributed as dist

            dist.all_reduce(values)
            values = values / self.world_size
        self.pending = []
        return [float(v) for v in values.cpu().tolist()]


def load_records(path):
    """The records list launch.py parsed from the annotation file."""
    with open(path, "rb") as handle:
        return load_pickle(handle)["records"]


def build_network(config, device):
    from models.retinanet import net
    from models.retinanet.train import checkpoints

    model = net.build_model(seed=config["seed"])
    notes = None
    if config.get("weights"):
        notes = checkpoints.load_backbone(model, config["weights"])
    frozen = checkpoints.freeze(model)
    model.train()
    return model.to(device), notes, frozen


def train(config):
    """Run this rank's share of the training; rank 0 returns the summary dict."""
    import torch

    from models.retinanet import NUM_CLASSES
    from models.retinanet.train import checkpoints, losses
    from models.retinanet.train import data as data_lib
    from models.retinanet.train.schedule import StepSchedule, build_optimizer

    started = time.time()
    rank, world_size, local_rank = dist_info()
    if config.get("threads"):
        torch.set_num_threads(int(config["threads"]))
    device_type = resolve_device_type(config.get("device_type"))
    device, device_name = setup_device(device_type, local_rank, config.get("devices") or [0])
    distributed = init_distributed(device_type, world_size)
    seed = int(config["seed"])
    random.seed(seed + rank)
    np.random.seed(seed + rank)
    torch.manual_seed(seed)

    records = load_records(config["records"])
    dataset = data_lib.TrainDataset(records, config["min_size"], config["max_size"])
    groups = dataset.aspect_groups()
    batch_size = int(config["batch_size"])
    per_epoch = data_lib.steps_per_epoch(groups, batch_size, world_size)
    total = per_epoch * int(config["epochs"])
    stop_at = min(total, int(config["max_iters"])) if config.get("max_iters") else total
    base_lr = config.get("lr") or None
    if base_lr is None:
        from models.retinanet.train.schedule import scaled_lr

        base_lr = scaled_lr(batch_size * world_size)
    current = {
        "dataset_size": len(records),
        "dataset_ids_digest": hashlib.sha256(
            ",".join(str(r["id"]) for r in records).encode()
        ).hexdigest(),
        "batch_size": batch_size,
        "world_size": world_size,
        "seed": seed,
        "min_size": int(config["min_size"]),
        "max_size": int(config["max_size"]),
        "pad_size": int(config.get("pad_size") or 0),
        "base_lr": float(base_lr),
        "warmup_iters": int(config["warmup_iters"]),
        "warmup_ratio": float(config["warmup_ratio"]),
        "steps": [int(s) for s in config["steps"]],
        "epochs": int(config["epochs"]),
    }

    model, weight_notes, frozen = build_network(config, device)
    schedule = StepSchedule(
        base_lr,
        config["steps"],
        warmup_iters=config["warmup_iters"],
        warmup_ratio=config["warmup_ratio"],
    )
    optimizer = build_optimizer(model, base_lr)
    dtype = amp_dtype(config.get("amp", "auto"), device_type)
    scaler = grad_scaler(device_type, dtype)

    work_dir = config["work_dir"]
    resume = str(config.get("resume", "auto")).lower()
    iteration, history, resumed = 0, [], None
    if resume == "no":
        if rank == 0 and os.path.isdir(work_dir):
            removed = checkpoints.clear(work_dir)
            if removed:
                _say(
                    "--resume no: removed %d old checkpoint files from %s"
                    % (len(removed), work_dir)
                )
        barrier(distributed)
    else:
        path, state = checkpoints.load_latest(work_dir)
        if state is None and resume == "yes":
            raise UserError(
                "--resume yes, but %s holds no complete checkpoint: run without --resume "
                "(or with --resume auto) to start" % work_dir
            )
        if state is not None:
            check_resumable(state.get("config", {}), current, path)
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            schedule.load_state_dict(state["schedule"])
            if scaler is not None and state.get("scaler"):
                scaler.load_state_dict(state["scaler"])
            if state.get("rng"):
                set_rng_state(state["rng"], device_type)
            iteration = int(state["iteration"])
            history = list(state.get("history") or [])
            resumed = {"checkpoint": os.path.abspath(path), "iteration": iteration}
            if rank == 0:
                _say("resuming from %s at iteration %d" % (path, iteration))

    network = model
    if distributed:
        import warnings

        from torch.nn.parallel import DistributedDataParallel

        with warnings.catch_warnings():
            # Newer torch renames the flag (FutureWarning); torch 2.1 knows only this one.
            warnings.simplefilter("ignore", FutureWarning)
            network = DistributedDataParallel(
                model,
                device_ids=None if device_type == "cpu" else [device.index],
                broadcast_buffers=False,  # FrozenBN buffers never change
            )

    def snapshot(epoch_end=None):
        if rank != 0:
            return
        state = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "schedule": schedule.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None,
            "iteration": iteration,
            "epoch": iteration // per_epoch,
            "rng": rng_state(device_type),
            "config": current,
            "history": history,
        }
        saved = checkpoints.save_checkpoint(work_dir, state, epoch_end)
        _say("checkpoint %s (iteration %d)" % (saved, iteration))

    if rank == 0:
        _say(
            "training RetinaNet R50-FPN: %d images, %d processes on %s (%s), batch %d per "
            "process, lr %g, %d iterations (%d per epoch x %d epochs)%s, amp %s"
            % (
                len(records),
                world_size,
                device_type,
                device_name,
                batch_size,
                base_lr,
                total,
                per_epoch,
                int(config["epochs"]),
                ", stopping at %d" % stop_at if stop_at < total else "",
                str(dtype).replace("torch.", "") if dtype is not None else "off",
            )
        )
    digests_dir = os.path.join(config["out"], DIGEST_DIR)
    if rank == 0 and os.path.isdir(digests_dir):  # left by an earlier run by hand
        import shutil

        shutil.rmtree(digests_dir)
    collate = data_lib.Collate(NUM_CLASSES, pad_size=int(config.get("pad_size") or 0))
    log = LossLog(distributed, world_size)
    log_every = max(1, int(config.get("log_every") or 20))
    checkpoint_every = int(config.get("checkpoint_every") or 0)
    checkpoint_epochs = int(config.get("checkpoint_epochs", 1) or 0)
    clip = float(config.get("clip_grad") or 0)
    workers = int(config.get("workers") or 0)
    images_per_step = batch_size * world_size
    start_iteration = iteration
    timing = {"t0": None, "i0": None, "wait": 0.0}
    window_start, window_iter = time.time(), iteration
    last_saved = iteration if resumed else None

    loader = torch.utils.data.DataLoader(
        dataset,
        batch_sampler=data_lib.RunBatches(
            groups, batch_size, world_size, rank, seed, iteration, stop_at
        ),
        collate_fn=collate,
        num_workers=workers,
        worker_init_fn=data_lib.worker_init if workers else None,
        pin_memory=device_type == "cuda",
    )
    batches = iter(loader)
    while iteration < stop_at:
        epoch = iteration // per_epoch
        waited = time.time()
        batch = next(batches)
        timing["wait"] += time.time() - waited
        lr = schedule.apply(optimizer, iteration, epoch)
        images = data_lib.to_input(
            batch["pixels"], batch["valid_hw"], device, non_blocking=device_type == "cuda"
        )
        cls_targets = batch["cls_targets"].to(device, non_blocking=True)
        box_targets = batch["box_targets"].to(device, non_blocking=True)
        with autocast(device_type, dtype):
            cls_logits, box_deltas = network(images)
        parts = losses.retinanet_losses(
            cls_logits, box_deltas, cls_targets, box_targets, NUM_CLASSES
        )
        optimizer.zero_grad()
        if scaler is not None:
            scaler.scale(parts["loss"]).backward()
            if clip > 0:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(optimizer.param_groups[0]["params"], clip)
            scaler.step(optimizer)
            scaler.update()
        else:
            parts["loss"].backward()
            if clip > 0:
                torch.nn.utils.clip_grad_norm_(optimizer.param_groups[0]["params"], clip)
            optimizer.step()
        log.add(parts)
        iteration += 1
        if iteration - start_iteration == min(TIMING_SKIP, stop_at - start_iteration - 1):
            synchronize(device_type)
            timing["t0"], timing["i0"] = time.time(), iteration
        if iteration % log_every == 0 or iteration == stop_at:
            values = log.flush()
            now = time.time()
            rate = images_per_step * (iteration - window_iter) / max(now - window_start, 1e-9)
            window_start, window_iter = now, iteration
            if not all(np.isfinite(values)):
                raise UserError(
                    "the loss is %s at iteration %d (lr %g): training diverged; lower --lr "
                    "or set --clip-grad" % (values[0], iteration, lr)
                )
            entry = {
                "iter": iteration,
                "epoch": epoch,
                "lr": lr,
                "loss": values[0],
                "loss_cls": values[1],
                "loss_box": values[2],
                "images_per_s": rate,
            }
            history.append(entry)
            if rank == 0:
                left = (stop_at - iteration) * images_per_step / max(rate, 1e-9)
                _say(
                    "iter %d/%d epoch %d lr %.6f loss %.4f (cls %.4f box %.4f) "
                    "%.1f images/s, %s left"
                    % (
                        iteration,
                        stop_at,
                        epoch + 1,
                        lr,
                        values[0],
                        values[1],
                        values[2],
                        rate,
                        _fmt_time(left),
                    )
                )
        epoch_end = iteration // per_epoch if iteration % per_epoch == 0 else 0
        if epoch_end and checkpoint_epochs and epoch_end % checkpoint_epochs == 0:
            snapshot(epoch_end=epoch_end)
            last_saved = iteration
        elif checkpoint_every and iteration % checkpoint_every == 0:
            snapshot()
            last_saved = iteration
    del batches, loader
    if last_saved != iteration and iteration > start_iteration:
        snapshot()
    synchronize(device_type)
    ended = time.time()

    # Every rank records a digest of its weights; rank 0 collects them.
    out = config["out"]
    if not os.path.isdir(digests_dir):
        os.makedirs(digests_dir, exist_ok=True)
    with open(os.path.join(digests_dir, "rank%d" % rank), "w") as handle:
        handle.write(weights_digest(model.state_dict()))
    barrier(distributed)
    if distributed:
        import torch.distributed as dist

        dist.destroy_process_group()
    if rank != 0:
        return None

    digests = []
    for name in sorted(os.listdir(digests_dir), key=lambda n: int(n[4:])):
        with open(os.path.join(digests_dir, name)) as handle:
            digests.append(handle.read().strip())
    for name in os.listdir(digests_dir):
        os.remove(os.path.join(digests_dir, name))
    os.rmdir(digests_dir)
    checkpoints.save_atomic(
        dict((k, v.detach().cpu()) for k, v in model.state_dict().items()),
        os.path.join(out, FINAL_FILE),
    )
    steady = None
    if timing["t0"] is not None and iteration > timing["i0"]:
        steady = images_per_step * (iteration - timing["i0"]) / max(ended - timing["t0"], 1e-9)
    evaluation = None
    if config.get("eval"):
        model.eval()
        evaluation = evaluate_coco(model, config, device)
    summary = {
        "status": "complete" if iteration >= total else "stopped at --max-iters %d" % stop_at,
        "iterations": iteration,
        "total_iterations": total,
        "iterations_per_epoch": per_epoch,
        "epochs": int(config["epochs"]),
        "epochs_done": iteration / float(per_epoch),
        "this_run_iterations": iteration - start_iteration,
        "resumed_from": resumed,
        "world_size": world_size,
        "device_type": device_type,
        "device_name": device_name,
        "host": platform.node(),
        "batch_per_device": batch_size,
        "global_batch": images_per_step,
        "lr": {
            "base": base_lr,
            "rule": "given" if config.get("lr") else "0.01 x global batch / 16",
            "warmup_iters": schedule.warmup_iters,
            "warmup_ratio": schedule.warmup_ratio,
            "steps": list(schedule.steps),
            "final": schedule.last_lr,
        },
        "amp": str(dtype).replace("torch.", "") if dtype is not None else None,
        "loss_scale": float(scaler.get_scale()) if scaler is not None else None,
        "clip_grad": clip or None,
        "frozen_parameters": frozen,
        "weights": weight_notes,
        "images_per_s": steady,
        "images_per_s_per_device": steady / world_size if steady else None,
        "data_wait_s": round(timing["wait"], 3),
        "run_seconds": round(ended - started, 3),
        "loss_curve": history,
        "final_loss": history[-1] if history else None,
        "rank_weight_digests": digests,
        "ranks_identical": len(set(digests)) == 1,
        "eval": evaluation,
        "checkpoint": FINAL_FILE,
        "work_dir": os.path.abspath(work_dir),
    }
    return summary


# -- evaluation -------------------------------------------------------------------------------
def evaluate_coco(model, config, device):
    """COCO val2017 bbox AP of `model`, as the inference recipe runs it (eager, float32).

    Test-time resize (detectron2's rule, --min-size / --max-size), padding to the fixed
    square --eval-input-size, the recipe's postprocess, pycocotools through
    data_scripts.coco.evaluate. Writes OUT/eval_detections.json.
    """
    import torch

    from data_scripts.coco import evaluate as coco_eval
    from data_scripts.coco import layout, prepare
    from data_scripts.store import read_image
    from models.retinanet import postprocess
    from models.retinanet.train import data as data_lib
    from zoostage.progress import Progress

    root = config.get("eval_data") or config["data"]
    size = int(config.get("eval_input_size") or 1344)
    min_size, max_size = int(config["eval_min_size"]), int(config["eval_max_size"])
    if size < max_size or size % 32:
        raise UserError(
            "--eval-input-size %d must be a multiple of 32 and at least --max-size %d"
            % (size, max_size)
        )
    annotations = layout.load_annotations(root)
    images = layout.list_images(root, annotations, limit=int(config.get("eval_limit") or 0))
    method = prepare.resize_method("auto")
    post = postprocess.Postprocessor((size, size))
    results = []
    started = time.time()
    with torch.no_grad(), Progress(len(images), "evaluate val2017") as progress:
        folder = os.path.join(root, layout.IMAGES_DIR)
        for image in images:
            path = layout.image_file(folder, image["file_name"])
            pixels = read_image(path, reference="pil")  # detectron2 reads with PIL
            hw = prepare.resized_hw(pixels.shape[0], pixels.shape[1], min_size, max_size)
            resized = prepare.resize(pixels, hw, method)
            batch = np.zeros((1, size, size, 3), dtype=np.uint8)
            batch[0, : hw[0], : hw[1]] = resized
            x = data_lib.to_input(torch.from_numpy(batch), torch.tensor([list(hw)]), device)
            cls_logits, box_deltas = model(x)
            boxes, scores, labels = post.detect(
                cls_logits[0].float().cpu().numpy(), box_deltas[0].float().cpu().numpy()
            )
            boxes, scores, labels = postprocess.rescale(boxes, scores, labels, hw, pixels.shape[:2])
            results.extend(postprocess.coco_results(image["id"], boxes, scores, labels))
            progress.update()
    seconds = time.time() - started
    with open(os.path.join(config["out"], "eval_detections.json"), "w") as handle:
        json.dump(results, handle, separators=(",", ":"))
    ids = [image["id"] for image in images]
    if results:
        stats, _, summary = coco_eval.coco_evaluate(annotations, results, ids)
        metrics = coco_eval.metrics_from_stats(stats)
        _say("COCO bbox on %d images:\n%s" % (len(ids), summary))
    else:
        metrics = dict((name, 0.0) for name in coco_eval.METRIC_NAMES)
        _say("COCO bbox on %d images: no detection above the score threshold" % len(ids))
    return {
        "metrics": metrics,
        "images": len(ids),
        "detections": len(results),
        "input_size": size,
        "images_per_s": len(ids) / max(seconds, 1e-9),
        "root": os.path.abspath(root),
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
    """The first rank's UserError, for the launcher's one line."""
    path = os.path.join(out, ERROR_FILE)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except OSError:
        return  # another rank was first
    with os.fdopen(fd, "w") as handle:
        handle.write(message)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="train_config.json from launch.py")
    args = parser.parse_args(argv)
    with open(args.config) as handle:
        config = json.load(handle)
    try:
        summary = train(config)
    except UserError as error:
        message = user_message(error)
        write_error(config["out"], message)
        if not os.environ.get(LAUNCHED_ENV):  # else the launcher prints it, once
            sys.stderr.write("error: %s\n" % message)
        sys.exit(USER_ERROR_EXIT)
    if summary is not None:
        from zoostage import cli

        cli.write_json(os.path.join(config["out"], SUMMARY_FILE), summary)


if __name__ == "__main__":
    main()
