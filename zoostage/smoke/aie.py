"""Smoke checks of the aie image: what Torch_AIE does that its docs leave open.

    python -m zoostage.smoke.aie --out OUT [--devices 0,1] [--dev-root /dev] \
        [--soc-version Ascend310P3]

A 1-conv TorchScript module is compiled the way zoobox's aie backend compiles (on the
first device), saved, then loaded and run by a new process on each device given,
against the CPU's output. Writes OUT/smoke.json (zoostage.smoke.checks).
"""

import inspect
import os
import subprocess
import sys

import numpy as np

from zoostage import cli
from zoostage.smoke import common
from zoostage.smoke.checks import NeedsHost, Skip

SHAPE = (1, 3, 16, 16)
# fp16 on the device against fp32 on the CPU, for a 3x3 conv of values in [-1, 1]:
# 27 products, each rounded to about 1e-3 relative; 2e-2 absolute leaves margin.
TOLERANCE = 2e-2


def import_torch_aie(state):
    try:
        import torch_aie
    except ImportError as error:
        raise NeedsHost(
            "torch_aie does not import here (%s): the aie image built with the NPU installers "
            "has it" % error
        ) from None
    state["torch_aie"] = torch_aie
    return "torch_aie %s" % getattr(torch_aie, "__version__", "(no __version__)")


def _module(state):
    if "torch_aie" not in state:
        raise NeedsHost("needs torch_aie (see above)")
    return state["torch_aie"]


def input_dtype(state):
    """What torch_aie.Input(shape) assumes when no dtype is given (zoobox passes
    dtype=torch.float, as both seeds do; this reports the default for other callers)."""
    spec = _module(state).Input(SHAPE)
    dtype = getattr(spec, "dtype", None)
    return "Input(%s).dtype = %r" % (list(SHAPE), dtype) if dtype is not None else repr(spec)


def precision_default(state):
    """compile()'s precision_policy default, from its signature."""
    compile_ = _module(state).compile
    try:
        parameters = inspect.signature(compile_).parameters
    except (TypeError, ValueError):
        return "compile's signature cannot be read (a builtin): %r" % compile_
    if "precision_policy" not in parameters:
        return "no precision_policy parameter: compile%s" % inspect.signature(compile_)
    default = parameters["precision_policy"].default
    return "precision_policy defaults to %r" % (
        "(required)" if default is inspect.Parameter.empty else default
    )


def conv_module(out):
    """A traced 1-conv module with fixed weights, its input and its CPU output."""
    import torch

    torch.manual_seed(0)
    model = torch.nn.Conv2d(SHAPE[1], 4, 3, padding=1).eval()
    x = torch.from_numpy(np.random.RandomState(0).uniform(-1, 1, SHAPE).astype(np.float32))
    with torch.no_grad():
        reference = model(x).numpy()
    path = os.path.join(out, "conv.ts")
    torch.jit.trace(model, x).save(path)
    np.save(os.path.join(out, "input.npy"), x.numpy())
    np.save(os.path.join(out, "reference.npy"), reference)
    return path


def compile_conv(state, out, devices, dev_root, soc_version):
    common.require_devices(dev_root)
    _module(state)
    from zoostage.backends import get_backend

    source = conv_module(out)
    target = os.path.join(out, "conv_aie.ts")
    facts = get_backend("aie", device="npu:%d" % devices[0]).compile(
        source, target, list(SHAPE), precision="fp16", soc_version=soc_version
    )
    state["compiled"] = target
    return "compiled on npu:%d, saved %s (%s)" % (devices[0], os.path.basename(target), facts)


def load_elsewhere(state, out, device):
    """A new process loads the saved module on `device`, runs it, matches the CPU."""
    if "compiled" not in state:
        raise NeedsHost("needs the compiled module (see above)")
    result_path = os.path.join(out, "output-npu%d.npy" % device)
    command = [sys.executable, "-m", "zoostage.smoke.aie_load", state["compiled"]]
    command += [str(device), os.path.join(out, "input.npy"), result_path]
    done = subprocess.run(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True
    )
    if done.returncode != 0:
        lines = [line for line in done.stdout.splitlines() if line.strip()] or ["no output"]
        raise RuntimeError("the loading process exited %d: %s" % (done.returncode, lines[-1]))
    found = np.load(result_path)
    reference = np.load(os.path.join(out, "reference.npy"))
    difference = float(np.abs(found - reference).max())
    if found.shape != reference.shape or difference > TOLERANCE:
        raise RuntimeError(
            "outputs differ from the CPU's: shape %s vs %s, max difference %.4g (tolerance %g)"
            % (found.shape, reference.shape, difference, TOLERANCE)
        )
    return "loaded and run by pid %s on npu:%d, max difference %.2g" % (
        done.stdout.strip().split()[-1],
        device,
        difference,
    )


def main(args):
    devices, checks = common.start(args, "aie env")
    state = {}
    checks.run("AIE runtime set_env.sh, from its own folder", common.set_env, common.AIE_SET_ENV)
    checks.run("import torch_aie", import_torch_aie, state)
    checks.run("torch_aie.Input default dtype", input_dtype, state)
    checks.run("torch_aie.compile default precision policy", precision_default, state)
    checks.run(
        "compile a 1-conv module (fp16, as the aie backend does)",
        compile_conv,
        state,
        args.out,
        devices,
        args.dev_root,
        args.soc_version,
    )
    checks.run(
        "saved module loads and runs in another process, npu:%d" % devices[0],
        load_elsewhere,
        state,
        args.out,
        devices[0],
    )
    if len(devices) > 1:
        checks.run(
            "saved module loads and runs on another device id, npu:%d" % devices[1],
            load_elsewhere,
            state,
            args.out,
            devices[1],
        )
    else:
        checks.run("saved module runs on another device id", _one_device)
    checks.write(args.out)


def _one_device():
    raise Skip("one device given: pass --devices 0,1 where the host has two")


def build_parser():
    return common.parser(__doc__.splitlines()[0])


if __name__ == "__main__":
    cli.run(main, build_parser())
