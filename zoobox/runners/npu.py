"""What an NPU container needs besides its command: devices, driver, workdir, logs, HCCL.

The docker runner asks this module for the arguments of a stage that uses the NPU:

- the davinciN nodes and the control nodes (or the Ascend Docker Runtime), the group that
  owns them, the host's driver read-only at the container's standard path (the entrypoint
  looks there), and the other host files NPU tools read, mounted only where they exist;
- a writable working directory: CANN's op compiler writes kernel_meta/ into the working
  directory and the graph engine its debug files, and /workspace (the repository) is
  read-only. A tmpfs per container: shards running side by side never share it, and a
  stage's output folder stays free of compiler leftovers;
- ASCEND_PROCESS_LOG_PATH in the recipe's logs/<stage>/ folder, so CANN's and ATC's logs
  outlive the `--rm` container (and a failed stage, whose output folder is discarded);
- for training: /dev/shm sized for the loader workers (or the host's IPC namespace), the
  host network and the device NIC configuration when ranks span machines, and HCCL's
  connect / execute timeouts set explicitly.

Every bind mount is `--mount type=bind`: a source that does not exist is an error naming
it, where `-v` would quietly create an empty folder in its place.
"""

from __future__ import annotations

from pathlib import Path

from zoobox.core.errors import UserError
from zoobox.hosts.detect import NPU_CONTROL_NODES, NpuHost
from zoobox.runners.base import StageCall

ASCEND_DRIVER = "/usr/local/Ascend/driver"  # where the entrypoint and CANN look for it
WORKDIR = "/tmp/zoobox-work"  # the tmpfs an NPU container works in
# Envs whose stages run several ranks over HCCL (one container, several devices).
DISTRIBUTED_ENVS = ("train",)
# One training loader worker holds up to 2 prefetched batches in /dev/shm. A batch of 8
# images at 1344 x 800 is 25.8 MB of uint8 pixels plus the anchor targets of its
# 201,600 anchors (int64 labels 12.9 MB, float32 boxes 25.8 MB): 64.5 MB, so 129 MB per
# worker (models/retinanet/train/data.py Collate); 256 MiB leaves twice that.
SHM_PER_WORKER_MIB = 256
# CANN's documented ranges (seconds); HCCL_EXEC_TIMEOUT is rounded down to a multiple of 68.
HCCL_CONNECT_RANGE = (120, 7200)
HCCL_EXEC_RANGE = (68, 17340)


def bind(source, target, readonly: bool = True) -> list[str]:
    """A bind mount that fails, naming `source`, when `source` does not exist.

    `--mount` takes any path but one with a comma, its field separator (a ':' is fine,
    where `-v` would split on it): such a path is refused here, naming it.
    """
    if "," in str(source):
        raise UserError(
            f"the docker runner cannot mount {source}: `docker run --mount` splits on ','; "
            "move or rename it to a path without ',', or use --runner host"
        )
    spec = f"type=bind,source={source},target={target}"
    return ["--mount", spec + (",readonly" if readonly else "")]


def flag_value(args: list[str], flag: str) -> str | None:
    """The value after `flag` in a stage's rendered arguments, or None."""
    for index, value in enumerate(args[:-1]):
        if value == flag:
            return args[index + 1]
    return None


def device_args(npu: NpuHost, devices: list[int], ascend_runtime: bool) -> list[str]:
    """Devices and driver: node by node, or through the Ascend Docker Runtime."""
    # The driver's device nodes belong to the HwHiAiUser group (mode 660): a container
    # running as the caller's uid needs that group to open them.
    args = ["--group-add", str(npu.group_gid)] if npu.group_gid is not None else []
    if ascend_runtime:
        visible = ",".join(str(d) for d in devices)
        return ["--runtime", "ascend", "-e", f"ASCEND_VISIBLE_DEVICES={visible}", *args]
    # Each node goes to its /dev name inside, wherever the host keeps it (dev_root):
    # CANN looks in /dev only.
    for device in devices:
        args += ["--device", f"{npu.dev_root}/davinci{device}:/dev/davinci{device}"]
    for node in NPU_CONTROL_NODES:
        args += ["--device", f"{npu.dev_root}/{node}:/dev/{node}"]
    # The driver goes where the container looks for it, wherever the host keeps it. Like
    # every host path here, only when it exists: a run without it stops in preflight().
    if Path(npu.driver_dir).is_dir():
        args += bind(npu.driver_dir, ASCEND_DRIVER)
    for path in npu.driver_files:
        args += bind(path, path)
    if npu.npu_smi is not None:
        args += bind(npu.npu_smi, npu.npu_smi)
    return args


def workdir_args(call: StageCall, container_path) -> list[str]:
    """A writable working directory and the folder CANN writes its logs to."""
    args = ["--tmpfs", f"{WORKDIR}:rw,exec,mode=1777", "-w", WORKDIR]
    if call.logs is not None:
        args += ["-e", f"ASCEND_PROCESS_LOG_PATH={container_path(str(call.logs))}"]
    return args


def processes(call: StageCall) -> int:
    return max(1, len(call.devices))


def shm_size_mib(call: StageCall, configured_mib: int) -> int:
    """/dev/shm for a stage: its loader workers' need (--workers N per process) or more."""
    workers = flag_value(call.args, "--workers")
    need = processes(call) * int(workers) * SHM_PER_WORKER_MIB if workers else 0
    return max(configured_mib, need)


def parse_size_mib(text: str) -> int:
    """'2g' / '512m' / '1024' (MiB) -> MiB, as docker's --shm-size takes them."""
    value = str(text).strip().lower()
    units = {"g": 1024, "m": 1, "k": 1 / 1024}
    try:
        if value and value[-1] in units:
            return max(1, int(float(value[:-1]) * units[value[-1]]))
        return max(1, int(value))
    except ValueError:
        raise UserError(
            f"zoobox.docker.shm_size takes a size like 2g or 512m, not {text!r}"
        ) from None


def nodes(call: StageCall) -> int:
    value = flag_value(call.args, "--nnodes")
    try:
        return int(value) if value else 1
    except ValueError:
        return 1


def distributed_args(call: StageCall, npu: NpuHost, connect: int, execute: int) -> list[str]:
    """HCCL's timeouts; the host network and the NIC configuration across machines."""
    if call.env.name not in DISTRIBUTED_ENVS:
        return []
    args = ["-e", f"HCCL_CONNECT_TIMEOUT={connect}", "-e", f"HCCL_EXEC_TIMEOUT={execute}"]
    if nodes(call) > 1:
        # Ranks on other machines reach this one through the host's addresses.
        args += ["--network", "host"]
        args += bind(npu.hccn_conf or "/etc/hccn.conf", "/etc/hccn.conf")
    return args


def check_timeouts(connect, execute) -> tuple[int, int]:
    """The HCCL timeouts as ints inside CANN's ranges, or a UserError naming the setting."""
    checked = []
    for name, value, (low, high) in (
        ("hccl_connect_timeout", connect, HCCL_CONNECT_RANGE),
        ("hccl_exec_timeout", execute, HCCL_EXEC_RANGE),
    ):
        try:
            number = int(value)
        except (TypeError, ValueError):
            number = None
        if number is None or not low <= number <= high:
            raise UserError(
                f"zoobox.docker.{name} must be a number of seconds in [{low}, {high}] "
                f"(CANN's range), not {value!r}"
            )
        checked.append(number)
    return checked[0], checked[1]


def preflight(call: StageCall, npu: NpuHost, ascend_runtime: bool) -> None:
    """What must exist on the host before an NPU container can start, said in one line."""
    if not ascend_runtime and not Path(npu.driver_dir).is_dir():
        raise UserError(
            f"stage {call.stage}: the Ascend driver folder {npu.driver_dir} does not exist; "
            "install the driver, or set zoobox.docker.driver_dir to where it is"
        )
    if call.env.name in DISTRIBUTED_ENVS and nodes(call) > 1 and npu.hccn_conf is None:
        raise UserError(
            f"stage {call.stage}: training on {nodes(call)} machines needs the device NIC "
            "configuration /etc/hccn.conf on each (set it up with hccn_tool), and it is "
            "missing here"
        )
