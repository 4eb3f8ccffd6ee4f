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


@dataclass
class NpuHost:
    devices: list[int] = field(default_factory=list)
    driver_version: str | None = None
    driver_dir: Path = DRIVER_DIR
    npu_smi: Path | None = None
    dev_root: Path = DEV_ROOT
    group_gid: int | None = None  # the group owning the device nodes (HwHiAiUser)

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
    dev_root: Path = DEV_ROOT, driver_dir: Path = DRIVER_DIR, npu_smi_candidates=NPU_SMI_CANDIDATES
) -> NpuHost:
    devices = npu_devices(dev_root)
    return NpuHost(
        devices=devices,
        group_gid=device_group(dev_root, devices),
        driver_version=driver_version(driver_dir),
        driver_dir=Path(driver_dir),
        npu_smi=find_npu_smi(npu_smi_candidates),
        dev_root=Path(dev_root),
    )


@dataclass
class ContainerEngine:
    """A Docker-compatible engine as the docker CLI sees it."""

    reachable: bool
    detail: str
    server_version: str | None = None
    runtimes: tuple[str, ...] = ()

    @property
    def ascend_runtime(self) -> bool:
        return "ascend" in self.runtimes


def container_engine(timeout: float = 5.0) -> ContainerEngine:
    """Ask `docker info` (honours DOCKER_HOST); never raises."""
    if shutil.which("docker") is None:
        return ContainerEngine(False, "no docker CLI on PATH")
    try:
        result = subprocess.run(
            ["docker", "info", "--format", "{{json .}}"],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return ContainerEngine(False, f"docker info timed out after {timeout:.0f} s")
    if result.returncode != 0:
        lines = (result.stderr or result.stdout).strip().splitlines()
        return ContainerEngine(
            False, lines[-1] if lines else f"docker info exited {result.returncode}"
        )
    try:
        info = json.loads(result.stdout)
    except json.JSONDecodeError:
        return ContainerEngine(True, "reachable", None)
    runtimes = tuple(sorted((info.get("Runtimes") or {}).keys()))
    version = info.get("ServerVersion")
    host = os.environ.get("DOCKER_HOST", "default socket")
    return ContainerEngine(True, f"server {version} at {host}", version, runtimes)


def dev_engine_dir() -> Path:
    """Where `invoke dev.engine` keeps its podman service's state (socket, pid, config)."""
    return Path(os.environ.get("ZOOBOX_ENGINE_DIR") or default_cache() / "engine")


def dev_engine_host() -> str:
    """The DOCKER_HOST of the podman service `invoke dev.engine` starts."""
    return f"unix://{dev_engine_dir() / 'podman.sock'}"
