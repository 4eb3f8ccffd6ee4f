"""A Docker-compatible engine on a Docker-less Linux machine: podman serving the Docker API.

`invoke dev.engine` (or `.ci/engine`, or `python -m zoobox.dev.podman up`) makes the docker
runner and `invoke images.*` work for real where no Docker daemon runs and no registry can
be pulled from (see ../shared/notes/this-machine.md for the facts this relies on):

1. installs podman, runc and debootstrap from the distribution (apt-get), when missing;
2. writes a containers.conf that works in a sandbox with hybrid cgroups and low hard limits
   (runtime runc, cgroupfs, file events, explicit nofile/nproc ulimits) and hands it to
   every podman it starts through CONTAINERS_CONF (the system's config is left alone);
3. creates the local base images without a registry (zoobox.dev.bases);
4. starts `podman system service --time=0 unix://<state>/podman.sock` in the background
   (pid file), waits until the API answers and prints `export DOCKER_HOST=...`.

Each step is skipped when already done, so a second call returns in about a second.
`stop` ends the service (SIGTERM, then SIGKILL after a grace period) and removes the socket.
The state (config, socket, pid, log) lives in ~/.cache/zoobox/engine, or $ZOOBOX_ENGINE_DIR.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from zoobox.core.errors import UserError
from zoobox.hosts.detect import dev_engine_dir, dev_engine_host

PACKAGES = ("podman", "runc", "debootstrap")


CONTAINERS_CONF = """\
# Written by zoobox (zoobox/dev/podman.py) for podman serving the Docker API on a machine
# without Docker. crun fails where cgroups are hybrid v1, and the default ulimits exceed
# the hard limits of a sandbox without CAP_SYS_RESOURCE.
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
"""


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# -- state ---------------------------------------------------------------------------------
def state_dir() -> Path:
    return dev_engine_dir()


def socket_path() -> Path:
    return state_dir() / "podman.sock"


def docker_host() -> str:
    return dev_engine_host()


def conf_path() -> Path:
    return state_dir() / "containers.conf"


def podman_env() -> dict:
    env = dict(os.environ)
    env["CONTAINERS_CONF"] = str(conf_path())
    env.pop("DOCKER_HOST", None)
    return env


def podman(*args, check=True, capture=True, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(
        ["podman", *args],
        env=podman_env(),
        capture_output=capture,
        text=True,
        **kwargs,
    )
    if check and result.returncode != 0:
        detail = (result.stderr or result.stdout or "").strip().splitlines()
        raise UserError(
            f"podman {args[0]} failed (exit {result.returncode}): "
            f"{detail[-1] if detail else 'no output'}"
        )
    return result


# -- 1. packages ---------------------------------------------------------------------------
def missing_packages() -> list[str]:
    return [name for name in PACKAGES if shutil.which(name) is None]


def ensure_packages() -> None:
    missing = missing_packages()
    if not missing:
        return
    if shutil.which("apt-get") is None:
        raise UserError(
            f"{', '.join(missing)} not found and there is no apt-get here: install podman, "
            "runc and debootstrap with this system's package manager, then rerun"
        )
    if os.geteuid() != 0:
        raise UserError(
            f"{', '.join(missing)} not found: run `sudo apt-get install -y "
            f"{' '.join(PACKAGES)}` (installing needs root), then rerun"
        )
    log(f"installing {' '.join(PACKAGES)} (apt-get)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for argv in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *PACKAGES]):
        result = subprocess.run(argv, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
            raise UserError(f"{' '.join(argv)} failed: {' / '.join(tail)}")


# -- 2. containers.conf --------------------------------------------------------------------
def write_conf() -> Path:
    path = conf_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.is_file() or path.read_text() != CONTAINERS_CONF:
        path.write_text(CONTAINERS_CONF)
    return path


# -- 4. the service ------------------------------------------------------------------------
def _pid_file() -> Path:
    return state_dir() / "podman.pid"


def service_pid() -> int | None:
    """The pid of the service this module started, if it still runs."""
    try:
        pid = int(_pid_file().read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid
    try:  # a recycled pid is not our service
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return pid
    return pid if b"system service" in cmdline and b"podman" in cmdline else None


def ping(path: Path | None = None, timeout: float = 2.0) -> bool:
    """Whether a Docker-compatible API answers on the unix socket."""
    path = path or socket_path()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(path))
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: d\r\n\r\n")
            reply = sock.recv(256)
    except OSError:
        return False
    return reply.startswith(b"HTTP/1.") and b" 200 " in reply.split(b"\r\n", 1)[0] + b" "


def start_service(timeout: float = 30.0) -> int:
    pid = service_pid()
    if pid is not None and ping():
        return pid
    if pid is not None:
        stop_service()
    sock = socket_path()
    if sock.exists():
        sock.unlink()
    log = open(state_dir() / "service.log", "ab")
    process = subprocess.Popen(
        ["podman", "system", "service", "--time=0", f"unix://{sock}"],
        env=podman_env(),
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
        start_new_session=True,
    )
    log.close()
    _pid_file().write_text(f"{process.pid}\n")
    deadline = time.time() + timeout
    while time.time() < deadline:
        if process.poll() is not None:
            raise UserError(
                f"podman system service exited {process.returncode}; "
                f"see {state_dir() / 'service.log'}"
            )
        if ping():
            return process.pid
        time.sleep(0.2)
    stop_service()
    raise UserError(f"podman system service did not answer on {sock} within {timeout:.0f} s")


def stop_service(grace: float = 10.0) -> bool:
    """Stop the service this module started; True if one was running."""
    pid = service_pid()
    stopped = False
    if pid is not None:
        try:
            os.kill(pid, signal.SIGTERM)
            deadline = time.time() + grace
            while time.time() < deadline and service_pid() == pid:
                _reap(pid)
                time.sleep(0.1)
            if service_pid() == pid:
                os.kill(pid, signal.SIGKILL)
                _reap(pid)
            stopped = True
        except ProcessLookupError:
            pass
    for path in (_pid_file(), socket_path()):
        if path.exists():
            path.unlink()
    return stopped


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


# -- all together --------------------------------------------------------------------------
def up(pythons: list[str] | None = None, bases: bool = True) -> str:
    """Bring the engine up (idempotent); returns the DOCKER_HOST to use."""
    if sys.platform != "linux":
        raise UserError("dev.engine sets up podman on Linux; elsewhere install Docker Desktop")
    state_dir().mkdir(parents=True, exist_ok=True)
    from zoobox.dev.bases import ensure_debian_base, ensure_python_base, python_versions

    ensure_packages()
    write_conf()
    if bases:
        ensure_debian_base()
        for minor in pythons if pythons is not None else python_versions():
            ensure_python_base(minor)
    pid = start_service()
    log(f"podman system service (pid {pid}) answers at {docker_host()}")
    if shutil.which("docker") is None:
        log(
            "warning: no docker CLI on PATH; zoobox's docker runner and images.* call it. "
            "Install Docker's CLI (a static `docker` binary, or Debian's docker.io package)"
        )
    return docker_host()


def status() -> dict:
    pid = service_pid()
    return {
        "docker_host": docker_host(),
        "pid": pid,
        "answers": bool(pid) and ping(),
        "state": str(state_dir()),
        "conf": str(conf_path()),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m zoobox.dev.podman",
        description="podman serving the Docker API on a Docker-less Linux machine",
    )
    parser.add_argument("action", nargs="?", default="up", choices=["up", "stop", "status"])
    parser.add_argument(
        "--python",
        action="append",
        help="make the local python base for this version (repeatable; default: the envs')",
    )
    parser.add_argument("--no-bases", action="store_true", help="start the service only")
    args = parser.parse_args(argv)
    try:
        if args.action == "stop":
            log("stopped" if stop_service() else "no zoobox podman service was running")
        elif args.action == "status":
            info = status()
            for key, value in info.items():
                print(f"{key}: {value}")
            return 0 if info["answers"] else 1
        else:
            host = up(pythons=args.python, bases=not args.no_bases)
            print(f"export DOCKER_HOST={host}")
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
