"""What the orchestrating machine offers: a container engine, NPUs, an Ascend driver.

Every probe is cheap and never raises: the answers feed the automatic runner and backend
choice and `invoke doctor`. Roots are parameters so tests can stand in fake device
nodes and driver folders for a 310P host.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from zoobox.core.paths import default_cache

DEV_ROOT = Path("/dev")
ASCEND_ROOT = Path("/usr/local/Ascend")
DRIVER_DIR = ASCEND_ROOT / "driver"
NPU_SMI_CANDIDATES = (Path("/usr/local/bin/npu-smi"), Path("/usr/local/sbin/npu-smi"))
# Device nodes every NPU container needs besides its davinciN.
NPU_CONTROL_NODES = ("davinci_manager", "devmm_svm", "hisi_hdc")
# Host files an NPU container reads besides the driver folder, where the host has them
# (npu-smi needs dcmi; CANN reads the install info). Not every host has every one.
DRIVER_FILES = (Path("/usr/local/dcmi"), Path("/etc/ascend_install.info"))
# The device NICs' configuration (hccn_tool): HCCL reads it when ranks span machines.
HCCN_CONF = Path("/etc/hccn.conf")


@dataclass
class NpuHost:
    devices: list[int] = field(default_factory=list)
    driver_version: str | None = None
    driver_dir: Path = DRIVER_DIR
    npu_smi: Path | None = None
    dev_root: Path = DEV_ROOT
    group_gid: int | None = None  # the group owning the device nodes (HwHiAiUser)
    driver_files: list[Path] = field(default_factory=list)  # those of DRIVER_FILES here
    hccn_conf: Path | None = None  # /etc/hccn.conf when the host has it

    @property
    def present(self) -> bool:
        return bool(self.devices)


def npu_devices(dev_root: Path = DEV_ROOT) -> list[int]:
    ids = []
    for path in Path(dev_root).glob("davinci*"):
        match = re.fullmatch(r"davinci(\d+)", path.name)
        if match:
            ids.append(int(match.group(1)))
    return sorted(ids)


def driver_version(driver_dir: Path = DRIVER_DIR) -> str | None:
    """The driver version from driver/version.info ("Version=23.0.rc1")."""
    try:
        text = (Path(driver_dir) / "version.info").read_text()
    except OSError:
        return None
    match = re.search(r"^\s*Version\s*=\s*(\S+)", text, re.MULTILINE | re.IGNORECASE)
    return match.group(1) if match else None


def find_npu_smi(candidates=NPU_SMI_CANDIDATES) -> Path | None:
    for path in candidates:
        if Path(path).is_file():
            return Path(path)
    found = shutil.which("npu-smi")
    return Path(found) if found else None


def device_group(dev_root: Path, devices: list[int]) -> int | None:
    """The gid owning davinciN when it is not root's (the driver's HwHiAiUser group)."""
    for device in devices:
        try:
            gid = (Path(dev_root) / f"davinci{device}").stat().st_gid
        except OSError:
            continue
        return gid if gid != 0 else None
    return None


def npu_host(
    dev_root: Path = DEV_ROOT,
    driver_dir: Path = DRIVER_DIR,
    npu_smi_candidates=NPU_SMI_CANDIDATES,
    driver_files=DRIVER_FILES,
    hccn_conf: Path = HCCN_CONF,
) -> NpuHost:
    devices = npu_devices(dev_root)
    return NpuHost(
        devices=devices,
        group_gid=device_group(dev_root, devices),
        driver_version=driver_version(driver_dir),
        driver_dir=Path(driver_dir),
        npu_smi=find_npu_smi(npu_smi_candidates),
        dev_root=Path(dev_root),
        driver_files=[Path(p) for p in driver_files if Path(p).exists()],
        hccn_conf=Path(hccn_conf) if Path(hccn_conf).is_file() else None,
    )


def device_access_problem(
    dev_root: Path, devices: list[int], uid: int, gids: set[int]
) -> str | None:
    """Why a process with `uid` and groups `gids` could not open a davinciN, or None.

    The driver makes the nodes mode 660, group HwHiAiUser; a container running as the
    caller gets that group through --group-add. When the nodes belong to root's group
    (gid 0) nobody adds it, and a caller who is not root cannot open them.
    """
    if uid == 0:
        return None
    for device in devices:
        node = Path(dev_root) / f"davinci{device}"
        try:
            info = node.stat()
        except OSError:
            continue  # a missing node is the choice's error (device not present)
        mode = info.st_mode
        readable_writable = (
            (info.st_uid == uid and mode & 0o600 == 0o600)
            or (info.st_gid in gids and mode & 0o060 == 0o060)
            or mode & 0o006 == 0o006
        )
        if not readable_writable:
            owner = "root's group (gid 0)" if info.st_gid == 0 else f"gid {info.st_gid}"
            return (
                f"{node} belongs to {owner} with mode {mode & 0o777:o}, and uid {uid} "
                f"(groups {sorted(gids)}) could not open it"
            )
    return None


NO_DOCKER_CLI = "no docker CLI on PATH"


@dataclass
class ContainerEngine:
    """A Docker-compatible engine as the docker CLI sees it."""

    reachable: bool
    detail: str
    server_version: str | None = None
    runtimes: tuple[str, ...] = ()
    docker_host: str | None = None  # the DOCKER_HOST that reached it; None: the default
    dev_fallback: bool = False  # found at the `invoke dev.engine` socket, not DOCKER_HOST

    @property
    def ascend_runtime(self) -> bool:
        return "ascend" in self.runtimes

    def advice(self) -> str | None:
        """What a user of the plain `docker` CLI must know about this engine, or None.

        zoobox finds the podman service `invoke dev.engine` started by its socket; the
        docker CLI in the user's shell does not, until DOCKER_HOST is exported.
        """
        if self.dev_fallback and self.docker_host:
            return (
                "zoobox uses the engine `invoke dev.engine` started; the plain `docker` CLI "
                f'needs `export DOCKER_HOST={self.docker_host}` (or `eval "$(.ci/engine)"`)'
            )
        if self.reachable:
            return None
        if self.detail == NO_DOCKER_CLI:
            return (
                "install the docker CLI and an engine, or on a Linux machine without Docker "
                "run `invoke dev.engine` (podman serving the Docker API)"
            )
        return (
            "no Docker daemon here? `invoke dev.engine` brings up podman serving the Docker "
            "API (zoobox then finds it without DOCKER_HOST)"
        )


def container_engine(timeout: float = 5.0, dev_fallback: bool = True) -> ContainerEngine:
    """Ask `docker info`; never raises.

    DOCKER_HOST when it is set; else the default socket, then (dev_fallback) the socket
    of the podman service `invoke dev.engine` started, the way the container tests find
    it, so a user need not export its DOCKER_HOST line first.
    """
    if shutil.which("docker") is None:
        return ContainerEngine(False, NO_DOCKER_CLI)
    configured = os.environ.get("DOCKER_HOST") or None
    found = _docker_info(timeout, configured)
    if found.reachable or configured or not dev_fallback:
        return found
    dev = dev_engine_host()
    if not Path(dev[len("unix://") :]).exists():
        return found
    fallback = _docker_info(timeout, dev)
    if not fallback.reachable:
        return found
    fallback.detail += " (the engine `invoke dev.engine` started)"
    fallback.dev_fallback = True
    return fallback


def _docker_info(timeout: float, docker_host: str | None) -> ContainerEngine:
    env = dict(os.environ)
    if docker_host:
        env["DOCKER_HOST"] = docker_host
    try:
        result = subprocess.run(
            ["docker", "info", "--format", "{{json .}}"],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
        )
    except subprocess.TimeoutExpired:
        return ContainerEngine(False, f"docker info timed out after {timeout:.0f} s")
    if result.returncode != 0:
        lines = (result.stderr or result.stdout).strip().splitlines()
        return ContainerEngine(
            False, lines[-1] if lines else f"docker info exited {result.returncode}"
        )
    where = docker_host or "the default socket"
    try:
        info = json.loads(result.stdout)
    except json.JSONDecodeError:
        return ContainerEngine(True, f"reachable at {where}", docker_host=docker_host)
    runtimes = tuple(sorted((info.get("Runtimes") or {}).keys()))
    version = info.get("ServerVersion")
    return ContainerEngine(True, f"server {version} at {where}", version, runtimes, docker_host)


def use_engine(engine: ContainerEngine) -> None:
    """Point this process's docker commands (and their children) at the engine found."""
    if engine.reachable and engine.docker_host:
        os.environ["DOCKER_HOST"] = engine.docker_host


def dev_engine_dir() -> Path:
    """Where `invoke dev.engine` keeps its podman service's state (socket, pid, config)."""
    return Path(os.environ.get("ZOOBOX_ENGINE_DIR") or default_cache() / "engine")


def dev_engine_host() -> str:
    """The DOCKER_HOST of the podman service `invoke dev.engine` starts."""
    return f"unix://{dev_engine_dir() / 'podman.sock'}"
