"""The docker runner: each stage in `docker run --rm` of its env's image.

The container sees the repository read-only at /workspace, the artifact folder (the
shared volume) read-write at /artifacts and the dataset read-only at /data, and runs as
the calling user so the files it writes are the caller's. Stages of the `host` env
(fetching weights, evaluation, reports) need no image and run on the host.

For stages that use an NPU backend the container gets the Ascend devices: either the
device nodes and read-only driver folders, mounted one by one, or the Ascend Docker
Runtime (`--runtime ascend` + ASCEND_VISIBLE_DEVICES) where the engine has it. Never
`--privileged`. Inside the container the mounted devices are numbered from 0.
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
from zoobox.hosts.probe import NPU_CONTROL_NODES, NpuHost
from zoobox.runners.base import Completed, Runner, StageCall, execute
from zoobox.runners.host import HostRunner

WORKSPACE = "/workspace"
ARTIFACTS = "/artifacts"
DATA = "/data"
# Read-only host paths an NPU container needs when the Ascend runtime is not used.
DRIVER_MOUNTS = ("/usr/local/Ascend/driver", "/usr/local/dcmi", "/etc/ascend_install.info")


def bind(host, inside: str, mode: str = "") -> str:
    """A `-v` value; a host path with a ':' (which -v would split on) is a UserError."""
    if ":" in str(host):
        raise UserError(
            f"the docker runner cannot mount {host}: `docker run -v` splits on ':'; "
            "move or rename it to a path without ':', or use --runner host"
        )
    return f"{host}:{inside}" + (f":{mode}" if mode else "")


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
    # small for training batches.
    shm_size: str | None = "2g"


class DockerRunner(Runner):
    name = "docker"

    def __init__(self, settings: DockerSettings):
        self.settings = settings
        self.host = HostRunner()
        self._image_ids: dict[str, str | None] = {}

    # -- paths ---------------------------------------------------------------------------
    def _roots(self) -> list[tuple[str, str]]:
        roots = [(str(Path(self.settings.artifacts).resolve()), ARTIFACTS), (str(REPO), WORKSPACE)]
        if self.settings.data is not None:
            roots.append((str(Path(self.settings.data).resolve()), DATA))
        # Longest first: a data folder inside the artifact folder maps to /data.
        return sorted(roots, key=lambda item: len(item[0]), reverse=True)

    def container_path(self, value: str) -> str:
        for host, inside in self._roots():
            if value == host or value.startswith(host + os.sep):
                return inside + value[len(host) :]
        return value

    # -- the command ---------------------------------------------------------------------
    def user(self) -> str:
        return self.settings.user or f"{os.getuid()}:{os.getgid()}"

    def npu_args(self, devices: list[int]) -> list[str]:
        npu = self.settings.npu
        # The driver's device nodes belong to the HwHiAiUser group (mode 660): a container
        # running as the caller's uid needs that group to open them.
        group = ["--group-add", str(npu.group_gid)] if npu.group_gid is not None else []
        if self.settings.ascend_runtime:
            return [
                "--runtime",
                "ascend",
                "-e",
                "ASCEND_VISIBLE_DEVICES=" + ",".join(str(d) for d in devices),
                *group,
            ]
        args: list[str] = list(group)
        for device in devices:
            args += ["--device", f"{npu.dev_root}/davinci{device}"]
        for node in NPU_CONTROL_NODES:
            args += ["--device", f"{npu.dev_root}/{node}"]
        mounts = [str(npu.driver_dir)] + [m for m in DRIVER_MOUNTS[1:]]
        if npu.npu_smi is not None:
            mounts.append(str(npu.npu_smi))
        for path in mounts:
            args += ["-v", bind(path, path, "ro")]
        return args

    def tty(self) -> bool:
        if self.settings.tty is not None:
            return self.settings.tty
        return sys.stdout.isatty()

    def argv(self, call: StageCall) -> list[str]:
        if call.env.name == "host":
            return self.host.argv(call)
        artifacts = str(Path(self.settings.artifacts).resolve())
        argv = [self.settings.docker, "run", "--rm"]
        if self.tty():
            argv.append("-t")
        argv += [
            "--user",
            self.user(),
            "-v",
            bind(REPO, WORKSPACE, "ro"),
            "-v",
            bind(self.settings.volume or artifacts, ARTIFACTS),
        ]
        if self.settings.data is not None:
            argv += ["-v", bind(Path(self.settings.data).resolve(), DATA, "ro")]
        if self.settings.shm_size:
            argv += ["--shm-size", self.settings.shm_size]
        argv += [
            "-w",
            WORKSPACE,
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
            argv += self.npu_args(call.devices)
        argv += list(self.settings.extra_args)
        argv += [call.env.image, "python", "-m", call.module]
        argv += [self.container_path(a) for a in call.args]
        argv += ["--out", self.container_path(str(call.out))]
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
        return execute(self.argv(call), keep_fds=call.keep_fds)
