"""The 1x schedule of mmdetection v2.9 (schedule_1x.py) and its optimizer.

    optimizer = SGD(lr=0.01, momentum=0.9, weight_decay=0.0001)   # for 16 images a step
    lr_config = dict(policy='step', warmup='linear', warmup_iters=500,
                     warmup_ratio=0.001, step=[8, 11])            # gamma 0.1
    total_epochs = 12

- The base lr scales linearly with the images of one step over all devices:
  lr = 0.01 * batch / 16 (Goyal et al.; mmdet's configs assume 8 GPUs x 2 images).
- Step decay by epoch: x0.1 from epoch 8 (0-based: the 9th epoch), x0.01 from epoch 11.
- Linear warm-up over the first 500 iterations (0-based `iteration` < 500), mmcv's rule:
  lr = regular_lr * (1 - (1 - iteration / warmup_iters) * (1 - warmup_ratio)),
  so iteration 0 runs at regular_lr * warmup_ratio.
- Weight decay applies to every trainable parameter, biases included (mmdet's 1x config
  has no paramwise settings; the frozen BN statistics are buffers, not parameters).
"""

BASE_LR = 0.01
BASE_BATCH = 16
MOMENTUM = 0.9
WEIGHT_DECAY = 1e-4
WARMUP_ITERS = 500
WARMUP_RATIO = 0.001
STEPS = (8, 11)
GAMMA = 0.1
EPOCHS = 12


def scaled_lr(total_batch, base_lr=BASE_LR, base_batch=BASE_BATCH):
    """The linear scaling rule: base_lr for base_batch images a step."""
    return base_lr * float(total_batch) / float(base_batch)


class StepSchedule(object):
    """lr as a function of (iteration, epoch); state_dict() records its settings."""

    def __init__(
        self,
        base_lr,
        steps=STEPS,
        gamma=GAMMA,
        warmup_iters=WARMUP_ITERS,
        warmup_ratio=WARMUP_RATIO,
    ):
        self.base_lr = float(base_lr)
        self.steps = tuple(int(s) for s in steps)
        self.gamma = float(gamma)
        self.warmup_iters = int(warmup_iters)
        self.warmup_ratio = float(warmup_ratio)
        self.last_lr = None

    def regular_lr(self, epoch):
        decays = sum(1 for step in self.steps if epoch >= step)
        return self.base_lr * self.gamma**decays

    def lr(self, iteration, epoch):
        regular = self.regular_lr(epoch)
        if self.warmup_iters > 0 and iteration < self.warmup_iters:
            k = (1.0 - float(iteration) / self.warmup_iters) * (1.0 - self.warmup_ratio)
            return regular * (1.0 - k)
        return regular

    def apply(self, optimizer, iteration, epoch):
        """Set every param group's lr for this iteration; returns it."""
        value = self.lr(iteration, epoch)
        for group in optimizer.param_groups:
            group["lr"] = value
        self.last_lr = value
        return value

    def state_dict(self):
        return {
            "base_lr": self.base_lr,
            "steps": list(self.steps),
            "gamma": self.gamma,
            "warmup_iters": self.warmup_iters,
            "warmup_ratio": self.warmup_ratio,
            "last_lr": self.last_lr,
        }

    def load_state_dict(self, state):
        self.base_lr = float(state["base_lr"])
        self.steps = tuple(int(s) for s in state["steps"])
        self.gamma = float(state["gamma"])
        self.warmup_iters = int(state["warmup_iters"])
        self.warmup_ratio = float(state["warmup_ratio"])
        self.last_lr = state.get("last_lr")


def build_optimizer(model, lr, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY):
    """SGD over the parameters that require gradients (frozen stem and res2 excluded)."""
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
