"""The training loop: one step at a time, everything else in hooks (detectron2's TrainerBase).

    trainer = Trainer(step, start_iter, stop_at, per_epoch)
    trainer.register([ScheduleHook(...), LoggingHook(...), CheckpointHook(...), ...])
    trainer.train()

`Trainer.train` is the whole loop: before_train, then for each iteration before_step,
the step, after_step; then after_train, each in the order the hooks were registered.
`Step` is one iteration's work (next batch, forward under autocast, losses in float32,
backward, optional clipping, optimizer step); hooks read what it leaves on the trainer
(`iteration`, `epoch`, `losses`, `lr`). hooks.py holds the schedule, logging / timing,
checkpoint, rank-agreement and evaluation hooks.
"""

import time


class HookBase(object):
    """A hook sees the trainer as `self.trainer` once registered."""

    trainer = None

    def before_train(self):
        pass

    def before_step(self):
        pass

    def after_step(self):
        pass

    def after_train(self):
        pass


class Trainer(object):
    """Runs iterations start_iter .. stop_at - 1 of a run with `per_epoch` steps an epoch."""

    def __init__(self, step, start_iter, stop_at, per_epoch):
        self.step = step
        self.start_iter = int(start_iter)
        self.iteration = int(start_iter)
        self.stop_at = int(stop_at)
        self.per_epoch = int(per_epoch)
        self.epoch = self.iteration // self.per_epoch
        self.losses = None
        self.lr = None
        self.hooks = []

    def register(self, hooks):
        for hook in hooks:
            hook.trainer = self
            self.hooks.append(hook)

    def _call(self, name):
        for hook in self.hooks:
            getattr(hook, name)()

    def train(self):
        self._call("before_train")
        while self.iteration < self.stop_at:
            self.epoch = self.iteration // self.per_epoch
            self._call("before_step")
            self.losses = self.step.run()
            self.iteration += 1
            self._call("after_step")
        self._call("after_train")

    def epoch_ended(self):
        """The epoch (1-based) the last step completed, or 0 mid-epoch."""
        done = self.iteration % self.per_epoch == 0
        return self.iteration // self.per_epoch if done else 0


class Step(object):
    """One iteration: a batch through the network, the losses, the optimizer step.

    `network` may be the DistributedDataParallel wrapper; `parameters` are the ones the
    optimizer updates (clipped together, as mmcv's grad_clip does); `scaler` is the
    float16 loss scaler or None; `autocast()` gives the forward's precision context.
    """

    def __init__(self, network, optimizer, parameters, batches, to_device, autocast, scaler, clip):
        from models.retinanet import NUM_CLASSES

        self.network = network
        self.optimizer = optimizer
        self.parameters = parameters
        self.batches = batches
        self.to_device = to_device
        self.autocast = autocast
        self.scaler = scaler
        self.clip = float(clip or 0)
        self.num_classes = NUM_CLASSES
        self.data_wait = 0.0

    def run(self):
        import torch

        from models.retinanet.train import losses

        waited = time.time()
        batch = next(self.batches)
        self.data_wait += time.time() - waited
        images, cls_targets, box_targets = self.to_device(batch)
        with self.autocast():
            cls_logits, box_deltas = self.network(images)
        parts = losses.retinanet_losses(
            cls_logits, box_deltas, cls_targets, box_targets, self.num_classes
        )
        self.optimizer.zero_grad()
        if self.scaler is not None:
            self.scaler.scale(parts["loss"]).backward()
            if self.clip > 0:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.parameters, self.clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            parts["loss"].backward()
            if self.clip > 0:
                torch.nn.utils.clip_grad_norm_(self.parameters, self.clip)
            self.optimizer.step()
        return parts
