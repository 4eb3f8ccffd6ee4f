"""Inference backends (stage side): one interface, four runtimes.

| backend      | model file          | device                 | where            |
| ------------ | ------------------- | ---------------------- | ---------------- |
| torchscript  | TorchScript (.ts)   | cpu (or cuda)          | anywhere         |
| onnxruntime  | ONNX (.onnx)        | cpu                    | anywhere         |
| aie          | torch_aie-compiled  | npu:N                  | `aie` env, NPU   |
| om           | ATC .om             | NPU device N           | `atc` env, NPU   |

Each backend module imports its runtime (torch, onnxruntime, torch_aie, ais_bench) only
when it is used, so this package imports anywhere.
"""

import importlib

# name -> module holding a `Backend` class
_MODULES = {
    "torchscript": "zoostage.backends.torchscript",
    "onnxruntime": "zoostage.backends.onnxrt",
    "aie": "zoostage.backends.aie",
    "om": "zoostage.backends.om",
}
NAMES = tuple(_MODULES)
NPU_BACKENDS = ("aie", "om")
# The distribution each backend imports: an env must provide it for a stage that runs the
# backend there. The NPU ones come from installers (docker/npu-installers/), not pins.
DISTRIBUTIONS = {
    "torchscript": "torch",
    "onnxruntime": "onnxruntime",
    "aie": "torch_aie",
    "om": "ais_bench",
}


def get_backend(name, **options):
    """A backend instance by name; options go to its constructor (device, precision...)."""
    from zoostage.errors import UserError

    if name not in _MODULES:
        raise UserError("unknown backend %r (choose from %s)" % (name, ", ".join(NAMES)))
    module = importlib.import_module(_MODULES[name])
    return module.Backend(**options)
