"""train.json: what a run did, and how it compares with the published training.

`summarize` is rank 0's record of the run (worker.py writes it); launch.py adds the
recipe's `published_train` numbers for this number of devices (`published_numbers`) and
the comparison (`compare`, zoostage.verdict's rule): AP against the published AP minus
the tolerance, images/s as information. A published row says how many epochs its AP
was measured after (12 on 1 and on 8 devices); a run of another length is not judged
against it. The numbers are the seed profile's: an upstream run is measured only.
"""

import os
import platform

from models.retinanet.train import data as data_lib
from models.retinanet.train import device as device_lib
from models.retinanet.train.hooks import FINAL_FILE
from zoostage import verdict


def summarize(config, run, trainer, step, hooks, seconds):
    """train.json's content (launch.py adds the published numbers and the comparison)."""
    steady = hooks["logging"].steady
    digests = hooks["agreement"].digests
    return {
        "status": "complete"
        if trainer.iteration >= run.total
        else "stopped at --max-iters %d" % run.stop_at,
        "iterations": trainer.iteration,
        "total_iterations": run.total,
        "iterations_per_epoch": run.per_epoch,
        "epochs": int(config["epochs"]),
        "epochs_done": trainer.iteration / float(run.per_epoch),
        "this_run_iterations": trainer.iteration - trainer.start_iter,
        "resumed_from": run.resumed,
        "world_size": run.world_size,
        "device_type": run.device_type,
        "device_name": run.device_name,
        "host": platform.node(),
        "batch_per_device": run.batch_size,
        "global_batch": run.batch_size * run.world_size,
        "lr": {
            "base": run.base_lr,
            "rule": "given" if config.get("lr") else "0.01 x global batch / 16",
            "warmup_iters": run.schedule.warmup_iters,
            "warmup_ratio": run.schedule.warmup_ratio,
            "steps": list(run.schedule.steps),
            "final": run.schedule.last_lr,
        },
        "profile": run.profile.name,
        "boxes_cap": boxes_cap(run.records, run.profile.max_boxes),
        "padding": padding(config, run.profile),
        "amp": device_lib.dtype_name(run.dtype),
        "loss_scale": float(run.scaler.get_scale()) if run.scaler is not None else None,
        "clip_grad": float(config.get("clip_grad") or 0) or None,
        "frozen_parameters": run.frozen,
        "weights": run.weight_notes,
        "images_per_s": steady,
        "images_per_s_per_device": steady / run.world_size if steady else None,
        "data_wait_s": round(step.data_wait, 3),
        "run_seconds": round(seconds, 3),
        "loss_curve": run.history,
        "final_loss": run.history[-1] if run.history else None,
        "rank_weight_digests": digests,
        "ranks_identical": len(set(digests)) == 1,
        "eval": hooks["evaluation"].result,
        "checkpoint": FINAL_FILE,
        "work_dir": os.path.abspath(config["work_dir"]),
    }


def boxes_cap(records, max_boxes):
    """How many images the seed profile's cap cut, and how many boxes it left out."""
    if not max_boxes:
        return None
    over = [len(r["labels"]) - max_boxes for r in records if len(r["labels"]) > max_boxes]
    return {"max_boxes": max_boxes, "images_capped": len(over), "boxes_left_out": sum(over)}


def padding(config, profile):
    """How the run padded its images, in words."""
    if profile.fixed_frames:
        frame = data_lib.seed_frame(1, 0, config["min_size"], config["max_size"])
        return "fixed frames %d x %d / %d x %d (h x w, seed)" % (frame + frame[::-1])
    if config.get("pad_size"):
        return "%d x %d" % (config["pad_size"], config["pad_size"])
    return "multiple of 32"


def published_numbers(recipe):
    """The recipe's `published_train` section, or {} (no recipe file given or no section)."""
    if not recipe:
        return {}
    from zoostage.recipe import load_recipe

    return dict(load_recipe(recipe).get("published_train") or {})


def compare(summary, published):
    """Rows: AP and images/s measured vs the ModelZoo's for this number of devices.

    The ModelZoo's numbers are the seed profile's; a run of another profile is measured
    only, with no published number and no verdict.
    """
    runs = published.get("runs") or {}
    world = summary.get("world_size")
    ref = runs.get(world) or runs.get(str(world)) or {}
    profile = summary.get("profile") or "seed"
    if profile != "seed":
        return other_profile_rows(summary, ref, profile)
    rows = []
    evaluation = summary.get("eval") or {}
    measured_ap = (evaluation.get("metrics") or {}).get("AP")
    ap_ref = ref.get("AP")
    tolerance = float(published.get("AP_tolerance", 0.5))
    eval_images = int(published.get("eval_images", 5000))
    published_epochs = ref.get("epochs")
    if measured_ap is None and ap_ref is not None:
        status = "not evaluated (pass --eval)"
    elif published_epochs and ap_ref is not None and summary.get("epochs") != published_epochs:
        status = "published after %s epochs, this run has %s: not compared" % (
            published_epochs,
            summary.get("epochs"),
        )
    else:
        status = verdict.accuracy_status(
            measured_ap,
            ap_ref,
            tolerance,
            images=evaluation.get("images", 0),
            full_images=eval_images,
            partial=summary.get("iterations") != summary.get("total_iterations"),
        )
    if status == "no published number":
        status = "no published number for %s devices" % world
    elif status == "subset":
        status = "subset (%d images)" % evaluation.get("images", 0)
    rows.append(
        {
            "metric": "AP",
            "measured": measured_ap,
            "published": ap_ref,
            "published_epochs": published_epochs,
            "tolerance": tolerance,
            "status": status,
        }
    )
    speed_ref = ref.get("images_per_s")
    measured = summary.get("images_per_s")
    status = verdict.speed_status(
        measured,
        speed_ref,
        summary.get("device_type") == "npu",
        device=summary.get("device_name"),
    )
    if status == "no published number":
        status = "no published number for %s devices" % world
    elif status == "info":
        status = "measured"
    rows.append(
        {
            "metric": "images_per_s",
            "measured": measured,
            "published": speed_ref,
            "ratio": verdict.ratio(measured, speed_ref),
            "status": status,
        }
    )
    return rows


def other_profile_rows(summary, ref, profile):
    """AP and images/s of a run whose profile has no published training numbers."""
    measured_ap = ((summary.get("eval") or {}).get("metrics") or {}).get("AP")
    seed = "AP %s after %s epochs" % (ref.get("AP"), ref.get("epochs")) if ref else "nothing"
    status = "published for the seed profile only (%s); none for the %s profile: not compared"
    return [
        {
            "metric": "AP",
            "measured": measured_ap,
            "published": None,
            "status": status % (seed, profile),
        },
        {
            "metric": "images_per_s",
            "measured": summary.get("images_per_s"),
            "published": None,
            "status": status
            % ("%s images/s" % ref.get("images_per_s") if ref else "nothing", profile),
        },
    ]
