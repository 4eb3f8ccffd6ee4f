"""Stopping an image build on the engine's side, not only its client.

Docker cancels a build whose client goes away (Ctrl-C on `docker build`). podman's
Docker API does not: its build goes on, RUN steps and all, after the client is killed
(seen with podman 4.3). Where the engine is a podman on this machine with the cgroupfs
driver, zoobox gives the build a cgroup parent of its own (`--cgroup-parent`, which is
not part of the layer cache key) and, when the build is stopped, kills every process in
that cgroup: the RUN step fails and the engine ends the build.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def local_podman_cgroupfs(docker: str = "docker") -> bool:
    """Whether the engine the docker CLI reaches is a podman here, with cgroupfs."""
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if not host.startswith("unix://"):
        return False  # a remote engine: its cgroups are not ours to see
    try:
        result = subprocess.run(
            [docker, "version", "--format", "{{json .Server}}"],
            capture_output=True,
            text=True,
            timeout=20,
        )
        server = json.loads(result.stdout) if result.returncode == 0 else {}
        info = subprocess.run(
            [docker, "info", "--format", "{{.CgroupDriver}}"],
            capture_output=True,
            text=True,
            timeout=20,
        )
    except (OSError, subprocess.TimeoutExpired, json.JSONDecodeError):
        return False
    components = [c.get("Name", "") for c in (server or {}).get("Components") or []]
    podman = any("podman" in name.lower() for name in components)
    return podman and info.stdout.strip() == "cgroupfs"


def new_cgroup_name() -> str:
    """A cgroup parent no other build uses: this process and the time."""
    return f"/zoobox-build-{os.getpid()}-{time.time_ns()}"


def with_cgroup_parent(argv: list[str], cgroup: str) -> list[str]:
    """`docker build ...` with `--cgroup-parent cgroup` right after `build`."""
    at = argv.index("build") + 1
    return [*argv[:at], "--cgroup-parent", cgroup, *argv[at:]]


def cgroup_dirs(cgroup: str, root: Path = CGROUP_ROOT) -> list[Path]:
    """The folders of `cgroup` in every hierarchy mounted under root (v1 and v2)."""
    relative = cgroup.strip("/")
    found = [root / relative] if (root / relative / "cgroup.procs").is_file() else []
    for hierarchy in sorted(root.iterdir()) if root.is_dir() else ():
        candidate = hierarchy / relative
        if (candidate / "cgroup.procs").is_file():
            found.append(candidate)
    return found


def cgroup_pids(cgroup: str, root: Path = CGROUP_ROOT) -> set[int]:
    """Every process in the cgroup and its children cgroups."""
    pids = set()
    for top in cgroup_dirs(cgroup, root):
        for procs in top.rglob("cgroup.procs"):
            try:
                pids.update(int(line) for line in procs.read_text().split() if line)
            except OSError:
                continue
    return pids


def kill_cgroup(cgroup: str, root: Path = CGROUP_ROOT, wait: float = 10.0) -> int:
    """SIGKILL every process of the build's cgroup until none is left; how many were."""
    killed = set()
    deadline = time.monotonic() + wait
    while True:
        pids = cgroup_pids(cgroup, root) - {os.getpid()}
        if not pids or time.monotonic() > deadline:
            return len(killed)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.add(pid)
            except (ProcessLookupError, PermissionError):
                pass
        time.sleep(0.2)
