"""Smoke checks of the train image: what the RetinaNet training recipe needs of a 910 host.

    python -m zoostage.smoke.train --out OUT [--devices 0,1] [--dev-root /dev] \
        [--soc-version Ascend910B3]

torch_npu imports and sees the devices given; two ranks on the first two devices
all-reduce (HCCL, as training's DistributedDataParallel does) and get the right sum; the
CANN operator kernels package the worker needs (it compiles with jit_compile=False) is
installed. Writes OUT/smoke.json (zoostage.smoke.checks).
"""

import glob
import json
import os
import socket
import subprocess
import sys

from zoostage import cli
from zoostage.envinfo import ASCEND_ROOT
from zoostage.smoke import common
from zoostage.smoke.checks import NeedsHost, Skip

IMPORT = "import torch_npu"
SEES = "torch_npu sees the devices"
ALL_REDUCE = "HCCL all-reduce of 2 ranks on npu:%d and npu:%d"
KERNELS = "CANN operator kernels package installed"
RANK_TIMEOUT = 600  # seconds: HCCL's first connect takes a while on a cold host


def all_reduce_name(devices):
    if len(devices) < 2:
        return "HCCL all-reduce of 2 ranks on two devices"
    return ALL_REDUCE % (devices[0], devices[1])


def planned_checks(devices):
    """The names of the checks main() runs for `devices`, in order."""
    return [*common.COMMON_CHECKS, IMPORT, SEES, all_reduce_name(devices), KERNELS]


def import_torch_npu(state):
    try:
        import torch  # noqa: F401
        import torch_npu
    except ImportError as error:
        raise NeedsHost(
            "torch_npu does not import here (%s): the train image built with the NPU "
            "installers has it" % error
        ) from None
    state["torch_npu"] = torch_npu
    state["versions"]["torch_npu"] = getattr(torch_npu, "__version__", None)
    return "torch_npu %s" % getattr(torch_npu, "__version__", "(no __version__)")


def sees_devices(state, devices):
    if "torch_npu" not in state:
        raise NeedsHost("needs torch_npu (see above)")
    import torch

    if not torch.npu.is_available():
        raise RuntimeError("torch.npu.is_available() is False: no device reachable")
    count = torch.npu.device_count()
    if count < len(devices):
        raise RuntimeError(
            "torch.npu.device_count() = %d, fewer than the %d devices given (%s)"
            % (count, len(devices), ",".join(map(str, devices)))
        )
    return "torch.npu.device_count() = %d" % count


def _free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def all_reduce(state, out, devices):
    """Two processes, rank r on devices[r], all-reduce [r + 1] * 4: both must hold 3."""
    if len(devices) < 2:
        raise Skip("one device given: pass --devices 0,1 where the host has two")
    if "torch_npu" not in state:
        raise NeedsHost("needs torch_npu (see above)")
    port = _free_port()
    ranks = []
    for rank in (0, 1):
        command = [sys.executable, "-m", "zoostage.smoke.train_rank", str(rank), "2"]
        command += [str(devices[rank]), str(port), os.path.join(out, "rank%d.json" % rank)]
        ranks.append(
            subprocess.Popen(
                command,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                universal_newlines=True,
            )
        )
    outputs = []
    for process in ranks:
        try:
            outputs.append(process.communicate(timeout=RANK_TIMEOUT)[0])
        except subprocess.TimeoutExpired:
            for other in ranks:
                other.kill()
            raise RuntimeError(
                "the ranks did not finish in %d s (HCCL hung?)" % RANK_TIMEOUT
            ) from None
    for rank, (process, output) in enumerate(zip(ranks, outputs)):
        if process.returncode != 0:
            lines = [line for line in output.splitlines() if line.strip()] or ["no output"]
            raise RuntimeError("rank %d exited %d: %s" % (rank, process.returncode, lines[-1]))
    sums = []
    for rank in (0, 1):
        with open(os.path.join(out, "rank%d.json" % rank)) as handle:
            sums.append(json.load(handle)["result"])
    if any(values != [3.0] * 4 for values in sums):
        raise RuntimeError("all-reduce of [1]*4 and [2]*4 gave %s, not [3.0]*4 on each" % sums)
    with open(os.path.join(out, "rank0.json")) as handle:
        backend = json.load(handle).get("backend")
    return "both ranks hold [3.0]*4 (backend %s)" % backend


def kernels(root=ASCEND_ROOT):
    """The operator kernels package: its install record, or its binary kernels."""
    toolkit = os.path.join(root, "ascend-toolkit", "latest")
    if not os.path.isdir(toolkit):
        raise NeedsHost("no CANN toolkit in %s (a CPU image)" % toolkit)
    record = os.path.join(toolkit, "opp_kernel", "version.info")
    if os.path.isfile(record):
        with open(record) as handle:
            for line in handle:
                key, _, value = line.strip().partition("=")
                if key.strip().lower() == "version":
                    return "kernels %s (%s)" % (value.strip(), record)
        return "kernels installed (%s)" % record
    pattern = os.path.join(toolkit, "opp", "built-in", "op_impl", "ai_core", "tbe", "kernel", "*")
    found = sorted(p for p in glob.glob(pattern) if os.path.isdir(p) and os.listdir(p))
    if found:
        return "binary kernels for %s" % ", ".join(os.path.basename(p) for p in found)
    raise RuntimeError(
        "no operator kernels in %s (neither opp_kernel/version.info nor binary kernels under "
        "opp/built-in/op_impl/ai_core/tbe/kernel): install Ascend-cann-kernels-910* for this "
        "CANN (images.build takes it from docker/npu-installers/train/)" % toolkit
    )


def main(args):
    devices, checks = common.start(args, "train env")
    state = {"versions": checks.versions}
    checks.versions.setdefault("torch_npu", None)
    checks.run(IMPORT, import_torch_npu, state)
    checks.run(SEES, sees_devices, state, devices)
    checks.run(all_reduce_name(devices), all_reduce, state, args.out, devices)
    checks.run(KERNELS, kernels, args.ascend_root)
    checks.write(args.out)


def build_parser():
    parser = common.parser(__doc__.splitlines()[0])
    parser.add_argument("--ascend-root", default=ASCEND_ROOT, help="where CANN is installed")
    return parser


if __name__ == "__main__":
    cli.run(main, build_parser())
