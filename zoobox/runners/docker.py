"""The docker runner: each stage in `docker run --rm` of its env's image.

The container sees the repository read-only at /workspace, the artifact folder (the
shared volume) read-write at /artifacts and, for stages that read the dataset ({data} in
their arguments), the dataset read-only at /data; it runs as the calling user so the
files it writes are the caller's. Stages of the `host` env (fetching weights,
evaluation, reports) need no image and run on the host.

For stages that use an NPU backend the container also gets what zoobox.runners.npu
builds: the Ascend devices (node by node with the driver read-only, or through the
Ascend Docker Runtime where the engine has it; never `--privileged`), a writable working
directory and a log folder that outlives it, and for training the shared memory, HCCL
timeouts and network it needs. Inside the container the mounted devices are numbered
from 0.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from zoobox.core.envspec import EnvSpec
from zoobox.core.errors import UserError
from zoobox.core.paths import REPO
from zoobox.hosts.detect import NpuHost
from zoobox.runners import npu as npu_args
from zoobox.runners.base import Completed, Runner, StageCall, execute
from zoobox.runners.host import HostRunner

WORKSPACE = "/workspace"
ARTIFACTS = "/artifacts"
DATA = "/data"


@dataclass
class DockerSettings:
    artifacts: Path
    data: Path | None = None
    npu: NpuHost = field(default_factory=NpuHost)
    ascend_runtime: bool = False
    tty: bool | None = None  # None: only when stdout is a terminal
    user: str | None = None  # "uid:gid"; None: the caller's
    docker: str = "docker"
    extra_args: tuple[str, ...] = ()
    volume: str | None = None  # a named volume as the shared folder, instead of a bind mount
    # Data-loader workers pass batches through /dev/shm; Docker's default 64 MB is too
    # small for training batches. Stages with --workers get more (zoobox.runners.npu).
    shm_size: str | None = "2g"
    ipc_host: bool = False  # stages with loader workers share the host's IPC instead
    hccl_connect_timeout: int = 1200  # seconds; CANN's default 120 is short for 8 ranks
    hccl_exec_timeout: int = 1836  # 27 x 68 s: CANN rounds down to a multiple of 68


class DockerRunner(Runner):
    name = "docker"

    def __init__(self, settings: DockerSettings):
        self.settings = settings
        self.host = HostRunner()
        self._image_ids: dict[str, str | None] = {}
        self._timeouts = npu_args.check_timeouts(
            settings.hccl_connect_timeout, settings.hccl_exec_timeout
        )

    # -- paths ---------------------------------------------------------------------------
    def _roots(self, with_data: bool = True) -> list[tuple[str, str]]:
        roots = [(str(Path(self.settings.artifacts).resolve()), ARTIFACTS), (str(REPO), WORKSPACE)]
        if self.settings.data is not None and with_data:
            roots.append((str(Path(self.settings.data).resolve()), DATA))
        # Longest first: a data folder inside the artifact folder maps to /data.
        return sorted(roots, key=lambda item: len(item[0]), reverse=True)

    def container_path(self, value: str, with_data: bool = True) -> str:
        for host, inside in self._roots(with_data):
            if value == host or value.startswith(host + os.sep):
                return inside + value[len(host) :]
        return value

    # -- the command ---------------------------------------------------------------------
    def user(self) -> str:
        return self.settings.user or f"{os.getuid()}:{os.getgid()}"

    def npu_identity(self) -> tuple[int, set[int]]:
        uid, _, gid = self.user().partition(":")
        groups = {int(gid or uid)}
        if self.settings.npu.group_gid is not None:
            groups.add(self.settings.npu.group_gid)  # --group-add
        return int(uid), groups

    def tty(self) -> bool:
        if self.settings.tty is not None:
            return self.settings.tty
        return sys.stdout.isatty()

    def mounts(self, call: StageCall) -> list[str]:
        artifacts = str(Path(self.settings.artifacts).resolve())
        args = npu_args.bind(REPO, WORKSPACE)
        if self.settings.volume:
            args += ["--mount", f"type=volume,source={self.settings.volume},target={ARTIFACTS}"]
        else:
            args += npu_args.bind(artifacts, ARTIFACTS, readonly=False)
        if call.uses_data and self.settings.data is not None:
            args += npu_args.bind(Path(self.settings.data).resolve(), DATA)
        return args

    def ipc_args(self, call: StageCall) -> list[str]:
        loader_workers = npu_args.flag_value(call.args, "--workers") not in (None, "0")
        if self.settings.ipc_host and loader_workers:
            return ["--ipc", "host"]
        if not self.settings.shm_size:
            return []
        configured = npu_args.parse_size_mib(self.settings.shm_size)
        size = npu_args.shm_size_mib(call, configured)
        return ["--shm-size", self.settings.shm_size if size == configured else f"{size}m"]

    def argv(self, call: StageCall) -> list[str]:
        if call.env.name == "host":
            return self.host.argv(call)
        argv = [self.settings.docker, "run", "--rm"]
        if self.tty():
            argv.append("-t")
        argv += ["--user", self.user(), *self.mounts(call), *self.ipc_args(call)]

        def path(value: str) -> str:
            return self.container_path(value, call.uses_data)

        if call.needs_npu:
            argv += npu_args.workdir_args(call, path)
        else:
            argv += ["-w", WORKSPACE]
        argv += [
            "-e",
            f"PYTHONPATH={WORKSPACE}",
            "-e",
            "HOME=/tmp",
            "-e",
            "PYTHONUNBUFFERED=1",
            "-e",
            f"ZOOBOX_ENV={call.env.name}",
            "-e",
            f"ZOOBOX_IMAGE={call.env.image}",
        ]
        if call.needs_npu:
            argv += npu_args.device_args(
                self.settings.npu, call.devices, self.settings.ascend_runtime
            )
            argv += npu_args.distributed_args(call, self.settings.npu, *self._timeouts)
        argv += list(self.settings.extra_args)
        argv += [call.env.image, "python", "-m", call.module]
        argv += [path(a) for a in call.args]
        argv += ["--out", path(str(call.out))]
        return argv

    def devices_for(self, devices: list[int]) -> list[int]:
        return list(range(len(devices)))

    def device_for(self, devices: list[int]) -> str:
        # Each container sees only its mounted devices, numbered from 0.
        return "0"

    # -- images --------------------------------------------------------------------------
    def image_id(self, image: str) -> str | None:
        if image not in self._image_ids:
            try:
                result = subprocess.run(
                    [self.settings.docker, "image", "inspect", "--format", "{{.Id}}", image],
                    capture_output=True,
                    text=True,
                    timeout=30,
                )
                self._image_ids[image] = result.stdout.strip() if result.returncode == 0 else None
            except (OSError, subprocess.TimeoutExpired):
                self._image_ids[image] = None
        return self._image_ids[image]

    def env_identity(self, env: EnvSpec, dry: bool = False) -> dict:
        if env.name == "host":
            return self.host.env_identity(env, dry)
        return {
            "runner": self.name,
            "env": env.name,
            "image": env.image,
            "image_id": self.image_id(env.image),
        }

    def check(self, env: EnvSpec) -> None:
        if env.name != "host" and self.image_id(env.image) is None:
            raise UserError(
                f"image {env.image} for env {env.name} is not built: run "
                f"`invoke images.build --env {env.name}`"
            )

    def run(self, call: StageCall) -> Completed:
        if call.env.name == "host":
            return self.host.run(call)
        if call.needs_npu:
            npu_args.preflight(call, self.settings.npu, self.settings.ascend_runtime)
        # Bind mounts need their sources: the output and log folders are made here, as
        # the caller, so the container (another uid for the engine) can write into them.
        Path(call.out).mkdir(parents=True, exist_ok=True)
        if call.needs_npu and call.logs is not None:
            Path(call.logs).mkdir(parents=True, exist_ok=True)
        return execute(self.argv(call), keep_fds=call.keep_fds)
