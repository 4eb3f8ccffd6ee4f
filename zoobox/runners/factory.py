"""The one place a runner is built: from the chosen runner name and the settings."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from zoobox.core.errors import UserError
from zoobox.hosts.detect import ContainerEngine, NpuHost
from zoobox.runners.base import Runner


def auto_bool(value):
    """None for unset / "auto", else the setting as a bool ("yes", "true", 1, ...)."""
    if value in (None, "auto"):
        return None
    if isinstance(value, str):
        return value.lower() in ("1", "true", "yes", "on")
    return bool(value)


def make_runner(
    name: str,
    settings: dict,
    *,
    artifacts: Path,
    data: Path | None,
    npu: NpuHost,
    engine: ContainerEngine,
    dry: bool = False,
) -> tuple[Runner, Path]:
    """(runner, artifact folder): a named Docker volume may move the artifact folder."""
    if name == "host":
        from zoobox.runners.host import HostRunner

        return HostRunner(), artifacts
    if name == "venv":
        from zoobox.envs.venvs import cache_from_settings
        from zoobox.runners.venv import VenvRunner

        return VenvRunner(cache_from_settings(settings)), artifacts
    if name == "docker":
        from zoobox.runners.docker import DockerRunner, DockerSettings

        docker = settings.get("docker") or {}
        ascend_runtime = auto_bool(docker.get("ascend_runtime"))
        if ascend_runtime is None:
            ascend_runtime = engine.ascend_runtime
        volume = docker.get("volume")
        if volume:
            artifacts = volume_mountpoint(volume, create=not dry) or artifacts
        runner = DockerRunner(
            DockerSettings(
                artifacts=artifacts,
                volume=volume or None,
                data=data,
                npu=npu,
                ascend_runtime=ascend_runtime,
                tty=auto_bool(docker.get("tty")),
                user=docker.get("user"),
                shm_size=docker.get("shm_size", "2g"),
                ipc_host=str(docker.get("ipc") or "").lower() == "host",
                hccl_connect_timeout=docker.get("hccl_connect_timeout", 1200),
                hccl_exec_timeout=docker.get("hccl_exec_timeout", 1836),
            )
        )
        return runner, artifacts
    raise UserError(f"runner {name} is not available")  # choose() rejects unknown names


def volume_mountpoint(volume: str, create: bool = True) -> Path | None:
    """The host folder behind a named Docker volume (created if absent).

    The engine renames stage outputs and writes stage.json on the host, so it needs the
    volume's folder: root (or a rootless engine's user) can use it directly.
    """

    def inspect():
        return subprocess.run(
            ["docker", "volume", "inspect", "--format", "{{.Mountpoint}}", volume],
            capture_output=True,
            text=True,
            timeout=30,
        )

    result = inspect()
    if result.returncode != 0 and create:
        subprocess.run(["docker", "volume", "create", volume], capture_output=True, timeout=30)
        result = inspect()
    if result.returncode != 0:
        if not create:
            return None
        raise UserError(
            f"docker volume {volume} cannot be created or inspected: "
            f"{result.stderr.strip() or result.stdout.strip()}"
        )
    path = Path(result.stdout.strip())
    if create and not os.access(path, os.W_OK):
        raise UserError(
            f"docker volume {volume} lives in {path}, which this user cannot "
            "write; run as its owner or use a host folder (--artifacts)"
        )
    return path
