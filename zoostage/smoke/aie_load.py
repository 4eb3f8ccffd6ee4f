"""The other process of the aie smoke check: load a saved compiled module, run it once.

    python -m zoostage.smoke.aie_load MODEL DEVICE INPUT.npy OUTPUT.npy

Loads MODEL on npu:DEVICE the way the aie backend's infer does, runs INPUT through it,
saves the first output to OUTPUT.npy and prints its own pid (the check shows it).
"""

import os
import sys

import numpy as np


def main(argv):
    from zoostage.backends import get_backend

    model, device, source, target = argv
    backend = get_backend("aie", device="npu:%d" % int(device)).load(model)
    outputs = backend.run(np.load(source))
    np.save(target, outputs[0])
    print("pid %d" % os.getpid())


if __name__ == "__main__":
    main(sys.argv[1:])
