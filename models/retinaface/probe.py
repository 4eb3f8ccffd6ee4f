"""The network `--backend auto` times on this machine (zoostage.backends.probe).

The recipe's network at its fixed input, seeded random weights: speed does not depend
on the weights, and the probe runs before any weights are fetched.
"""

from models.retinaface import INPUT_SIZE


def probe_model():
    """(RetinaFace in eval mode, (1, 3, 1000, 1000))."""
    from models.retinaface.net import build_model

    return build_model(None, seed=0), (1, 3, INPUT_SIZE, INPUT_SIZE)
