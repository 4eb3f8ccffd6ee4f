"""The training loop's hooks (trainer.py): schedule, logging and timing, checkpoints, the
ranks' agreement at the end, evaluation.

Each does one job at its points of the loop and keeps what train.json reports about it;
they run in the order registered (worker.py registers them in this file's order), so at
the end the last checkpoint and model_final.pth are written before the process group
closes, and the evaluation, which may take long, runs on rank 0 after that.
"""

import os
import sys
import time

import numpy as np

from models.retinanet.train import device as device_lib
from models.retinanet.train.trainer import HookBase
from zoostage.errors import UserError

TIMING_SKIP = 5  # first iterations left out of the images/s (compilation, allocator warm-up)
FINAL_FILE = "model_final.pth"


def say(text):
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def fmt_time(seconds):
    seconds = int(seconds)
    if seconds >= 3600:
        return "%dh%02dm" % (seconds // 3600, seconds % 3600 // 60)
    return "%dm%02ds" % (seconds // 60, seconds % 60)


class ScheduleHook(HookBase):
    """Sets the lr of each iteration before its step (warm-up, then steps by epoch)."""

    def __init__(self, schedule, optimizer):
        self.schedule = schedule
        self.optimizer = optimizer

    def before_step(self):
        trainer = self.trainer
        trainer.lr = self.schedule.apply(self.optimizer, trainer.iteration, trainer.epoch)


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


class LoggingHook(HookBase):
    """The loss curve (one entry per log line), images/s, and the divergence check.

    Loss parts stay on the device between log lines (no per-iteration host sync). The
    steady images/s leaves out the first TIMING_SKIP iterations of this run.
    """

    def __init__(self, log, history, images_per_step, log_every, device_type, rank):
        self.log = log
        self.history = history
        self.images_per_step = images_per_step
        self.log_every = max(1, int(log_every))
        self.device_type = device_type
        self.rank = rank
        self.steady = None
        self.t0 = self.i0 = None

    def before_train(self):
        self.window_start, self.window_iter = time.time(), self.trainer.iteration

    def after_step(self):
        trainer = self.trainer
        self.log.add(trainer.losses)
        done = trainer.iteration - trainer.start_iter
        if done == min(TIMING_SKIP, trainer.stop_at - trainer.start_iter - 1):
            device_lib.synchronize(self.device_type)
            self.t0, self.i0 = time.time(), trainer.iteration
        if trainer.iteration % self.log_every == 0 or trainer.iteration == trainer.stop_at:
            self._line()

    def _line(self):
        trainer = self.trainer
        values = self.log.flush()
        now = time.time()
        rate = (
            self.images_per_step
            * (trainer.iteration - self.window_iter)
            / max(now - self.window_start, 1e-9)
        )
        self.window_start, self.window_iter = now, trainer.iteration
        if not all(np.isfinite(values)):
            raise UserError(
                "the loss is %s at iteration %d (lr %g): training diverged; lower --lr "
                "or set --clip-grad" % (values[0], trainer.iteration, trainer.lr)
            )
        self.history.append(
            {
                "iter": trainer.iteration,
                "epoch": trainer.epoch,
                "lr": trainer.lr,
                "loss": values[0],
                "loss_cls": values[1],
                "loss_box": values[2],
                "images_per_s": rate,
            }
        )
        if self.rank == 0:
            left = (trainer.stop_at - trainer.iteration) * self.images_per_step / max(rate, 1e-9)
            say(
                "iter %d/%d epoch %d lr %.6f loss %.4f (cls %.4f box %.4f) %.1f images/s, %s left"
                % (
                    trainer.iteration,
                    trainer.stop_at,
                    trainer.epoch + 1,
                    trainer.lr,
                    values[0],
                    values[1],
                    values[2],
                    rate,
                    fmt_time(left),
                )
            )

    def after_train(self):
        device_lib.synchronize(self.device_type)
        iteration = self.trainer.iteration
        if self.t0 is not None and iteration > self.i0:
            seconds = max(time.time() - self.t0, 1e-9)
            self.steady = self.images_per_step * (iteration - self.i0) / seconds


class CheckpointHook(HookBase):
    """Checkpoints (rank 0) after every `epochs` epochs, every `every` iterations, and at
    the end when the last step was not saved; then model_final.pth (weights only).

    `state()` returns the checkpoint's contents (checkpoints.py's module docstring).
    """

    def __init__(self, work_dir, out, state, every, epochs, rank, resumed):
        self.work_dir = work_dir
        self.out = out
        self.state = state
        self.every = int(every or 0)
        self.epochs = int(epochs or 0)
        self.rank = rank
        self.last_saved = None
        self.resumed = resumed

    def before_train(self):
        if self.resumed:
            self.last_saved = self.trainer.iteration

    def _save(self, epoch_end=None):
        from models.retinanet.train import checkpoints

        self.last_saved = self.trainer.iteration
        if self.rank != 0:
            return
        saved = checkpoints.save_checkpoint(self.work_dir, self.state(), epoch_end)
        say("checkpoint %s (iteration %d)" % (saved, self.trainer.iteration))

    def after_step(self):
        trainer = self.trainer
        epoch_end = trainer.epoch_ended()
        if epoch_end and self.epochs and epoch_end % self.epochs == 0:
            self._save(epoch_end=epoch_end)
        elif self.every and trainer.iteration % self.every == 0:
            self._save()

    def after_train(self):
        from models.retinanet.train import checkpoints

        trainer = self.trainer
        if self.last_saved != trainer.iteration and trainer.iteration > trainer.start_iter:
            self._save()
        if self.rank == 0:
            model = self.state()["model"]
            weights = dict((k, v.detach().cpu()) for k, v in model.items())
            checkpoints.save_atomic(weights, os.path.join(self.out, FINAL_FILE))


class RankAgreementHook(HookBase):
    """At the end every rank's weights digest goes to rank 0 over the process group (so
    also from other hosts, whatever folders they write), then every rank waits for the
    others; rank 0 keeps them (`digests`), so train.json says whether the ranks ended identical."""

    def __init__(self, model, out, rank, distributed):
        self.model = model
        self.rank = rank
        self.distributed = distributed
        self.digests = []

    def after_train(self):
        from models.retinanet.train import checkpoints

        digest = checkpoints.weights_digest(self.model.state_dict())
        if not self.distributed:
            self.digests = [digest]
            return
        import torch
        import torch.distributed as dist

        # The 32 bytes as 4 int64s on the model's device (hccl and nccl take no CPU
        # tensors, gloo takes them; every backend gathers int64).
        words = np.frombuffer(bytes.fromhex(digest), dtype="<i8").copy()
        device = next(self.model.parameters()).device
        mine = torch.from_numpy(words).to(device)
        gathered = [torch.zeros_like(mine) for _ in range(dist.get_world_size())]
        dist.all_gather(gathered, mine)
        # Every rank past the gather before any leaves. The process group is not torn
        # down here: the worker ends its process without running torch's destructors
        # (worker.finish_distributed), where gloo's teardown could abort a rank.
        dist.barrier()
        if self.rank == 0:
            self.digests = [t.cpu().numpy().astype("<i8").tobytes().hex() for t in gathered]


class EvalHook(HookBase):
    """COCO val2017 bbox AP of the final model (rank 0), through the inference recipe's
    own stage functions (evaluation.py); `result` is train.json's "eval"."""

    def __init__(self, model, settings, device, rank):
        self.model = model
        self.settings = settings
        self.device = device
        self.rank = rank
        self.result = None

    def after_train(self):
        if self.rank != 0:
            return
        from models.retinanet.train import evaluation

        self.model.eval()
        self.result = evaluation.evaluate(self.model, self.settings, self.device)
