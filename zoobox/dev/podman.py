"""A Docker-compatible engine on a Docker-less Linux machine: podman serving the Docker API.

`invoke dev.engine` (or `.ci/engine`, or `python -m zoobox.dev.podman up`) makes the docker
runner and `invoke images.*` work for real where no Docker daemon runs and no registry can
be pulled from (see ../shared/notes/this-machine.md for the facts this relies on):

1. installs podman, runc and debootstrap from the distribution (apt-get), when missing;
2. writes a containers.conf that works in a sandbox with hybrid cgroups and low hard limits
   (runtime runc, cgroupfs, file events, explicit nofile/nproc ulimits) and hands it to
   every podman it starts through CONTAINERS_CONF (the system's config is left alone);
3. creates the local base images without a registry: `localhost/zoobox/debian:bookworm`
   (debootstrap --variant=minbase from the machine's own Debian mirror, `podman import`),
   and one `localhost/zoobox/python:X.Y-bookworm` per Python the env specs name, holding
   the CPython build that pyenv already has on this machine (its standard library, pip from
   its bundled ensurepip, nothing of its site-packages), laid out like the official
   python:X.Y-slim images (`python` at /usr/local/bin). `invoke images.build --base local`
   builds the env images FROM these instead of the registry's python images;
4. starts `podman system service --time=0 unix://<state>/podman.sock` in the background
   (pid file), waits until the API answers and prints `export DOCKER_HOST=...`.

Each step is skipped when already done, so a second call returns in about a second.
`stop` ends the service (SIGTERM, then SIGKILL after a grace period) and removes the socket.
The state (config, socket, pid, log) lives in ~/.cache/zoobox/engine, or $ZOOBOX_ENGINE_DIR.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from zoobox.core.errors import UserError
from zoobox.core.paths import default_cache

PACKAGES = ("podman", "runc", "debootstrap")
SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
DEBIAN_IMAGE = f"localhost/zoobox/debian:{SUITE}"
PYTHON_IMAGE = "localhost/zoobox/python:{version}-" + SUITE
PYENV_ROOT = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")

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

# The shared libraries a pyenv CPython's extension modules link against (what the
# official python:X.Y-slim images install), plus CA certificates, netbase and tzdata.
PYTHON_RUNTIME_PACKAGES = (
    "ca-certificates",
    "netbase",
    "tzdata",
    "libbz2-1.0",
    "libexpat1",
    "libffi8",
    "liblzma5",
    "libncursesw6",
    "libnsl2",
    "libreadline8",
    "libsqlite3-0",
    "libssl3",
    "libtirpc3",
    "libuuid1",
    "zlib1g",
)

PYTHON_CONTAINERFILE = """\
# A local stand-in for python:{minor}-slim-{suite}, made by zoobox/dev/podman.py from the
# CPython {version} build that pyenv has on this machine (no registry needed).
FROM {base}
ENV LANG=C.UTF-8 PATH=/usr/local/bin:$PATH PYTHON_VERSION={version}
RUN apt-get update \\
 && apt-get install -y --no-install-recommends {packages} \\
 && rm -rf /var/lib/apt/lists/*
COPY python/ /usr/local/
RUN ldconfig \\
 && python3 -m ensurepip --default-pip \\
 && ln -sf python3 /usr/local/bin/python \\
 && find /usr/local/lib -depth -name __pycache__ -type d -exec rm -rf {{}} + \\
 && python --version
LABEL org.zoobox.base-key="{key}" org.zoobox.python="{version}" \\
      org.opencontainers.image.title="zoobox local python {minor}" \\
      org.opencontainers.image.description="CPython {version} from pyenv on {suite} (minbase)"
CMD ["python3"]
"""

# Parts of a pyenv build an image does not need (tests, Tk, IDLE, the static library) or
# must not carry (site-packages: pip comes from ensurepip; anything else there is the
# machine's own business).
_PRUNE_DIRS = {"test", "tests", "tkinter", "idlelib", "turtledemo", "__pycache__", "pkgconfig"}
_PRUNE_FILES = re.compile(r"(^_tkinter.*\.so$|^libpython.*\.a$|.*-gdb\.py$)")
_PRUNE_SCRIPTS = re.compile(r"^(idle|2to3|pip)")  # in bin/: pip comes back from ensurepip


def _log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# -- state ---------------------------------------------------------------------------------
def state_dir() -> Path:
    configured = os.environ.get("ZOOBOX_ENGINE_DIR")
    return Path(configured) if configured else default_cache() / "engine"


def socket_path() -> Path:
    return state_dir() / "podman.sock"


def docker_host() -> str:
    return f"unix://{socket_path()}"


def conf_path() -> Path:
    return state_dir() / "containers.conf"


def podman_env() -> dict:
    env = dict(os.environ)
    env["CONTAINERS_CONF"] = str(conf_path())
    env.pop("DOCKER_HOST", None)
    return env


def _podman(*args, check=True, capture=True, **kwargs) -> subprocess.CompletedProcess:
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
    _log(f"installing {' '.join(PACKAGES)} (apt-get)")
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


# -- 3. base images ------------------------------------------------------------------------
def debian_mirror(apt_dir: Path = Path("/etc/apt")) -> str:
    """The machine's Debian mirror serving `bookworm` (deb822 .sources or one-line lists)."""
    candidates = []
    for path in sorted(Path(apt_dir).glob("sources.list.d/*.sources")):
        for stanza in re.split(r"\n\s*\n", _read(path)):
            fields = {}
            for line in stanza.splitlines():
                if line.strip().startswith("#") or ":" not in line:
                    continue
                key, _, value = line.partition(":")
                fields[key.strip().lower()] = value.split()
            if SUITE in fields.get("suites", []) and "deb" in fields.get("types", ["deb"]):
                candidates += fields.get("uris", [])
    lists = [Path(apt_dir) / "sources.list", *sorted(Path(apt_dir).glob("sources.list.d/*.list"))]
    for path in lists:
        for line in _read(path).splitlines():
            parts = re.sub(r"\[[^\]]*\]", " ", line.split("#", 1)[0]).split()
            if len(parts) >= 3 and parts[0] == "deb" and parts[2] == SUITE:
                candidates.append(parts[1])
    for uri in candidates:
        if uri.startswith(("http://", "https://", "file:/")):
            return uri.rstrip("/")
    return DEFAULT_MIRROR


def _read(path: Path) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def image_labels(name: str) -> dict | None:
    """The labels of a local image, or None when it does not exist."""
    result = _podman("image", "inspect", "--format", "{{json .Labels}}", name, check=False)
    if result.returncode != 0:
        return None
    try:
        return json.loads(result.stdout.strip() or "{}") or {}
    except json.JSONDecodeError:
        return {}


def ensure_debian_base(mirror: str | None = None) -> str:
    if image_labels(DEBIAN_IMAGE) is not None:
        return DEBIAN_IMAGE
    if os.geteuid() != 0:
        raise UserError("creating the base image needs root (debootstrap); rerun as root")
    mirror = mirror or debian_mirror()
    _log(f"creating {DEBIAN_IMAGE}: debootstrap --variant=minbase {SUITE} from {mirror}")
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="zoobox-rootfs-", dir=state_dir()) as tmp:
        rootfs = Path(tmp) / "rootfs"
        result = subprocess.run(
            ["debootstrap", "--variant=minbase", SUITE, str(rootfs), mirror],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
            raise UserError(f"debootstrap failed: {' / '.join(tail)}")
        (rootfs / "etc/apt/sources.list").write_text(
            f"deb {mirror} {SUITE} main\ndeb {mirror} {SUITE}-updates main\n"
        )
        # Like the registry's slim images: no package lists or caches in the base.
        for leftover in ("var/lib/apt/lists", "var/cache/apt", "var/log"):
            target = rootfs / leftover
            if target.is_dir():
                for child in target.iterdir():
                    if child.is_dir() and not child.is_symlink():
                        shutil.rmtree(child, ignore_errors=True)
                    else:
                        child.unlink()
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        imported = subprocess.run(
            ["podman", "import", "--change", 'CMD ["/bin/bash"]', "-", DEBIAN_IMAGE],
            stdin=tar.stdout,
            env=podman_env(),
            capture_output=True,
            text=True,
        )
        tar.stdout.close()
        tar.wait()
        if imported.returncode != 0:
            raise UserError(f"podman import failed: {imported.stderr.strip()}")
        shutil.rmtree(rootfs, ignore_errors=True)
    _log(f"created {DEBIAN_IMAGE} in {time.time() - started:.0f} s")
    return DEBIAN_IMAGE


def pyenv_python(minor: str, root: Path = PYENV_ROOT) -> Path | None:
    """The newest pyenv build of CPython `minor` ("3.9" -> ~/.pyenv/versions/3.9.18)."""
    found = []
    for path in Path(root, "versions").glob(f"{minor}.*"):
        match = re.fullmatch(re.escape(minor) + r"\.(\d+)", path.name)
        if match and (path / "bin" / f"python{minor}").exists():
            found.append((int(match.group(1)), path))
    return max(found)[1] if found else None


def _prune(directory: str, names: list[str]) -> set[str]:
    ignored = set()
    for name in names:
        full = os.path.join(directory, name)
        if name in _PRUNE_DIRS and os.path.isdir(full):
            ignored.add(name)
        elif _PRUNE_FILES.match(name) and not os.path.isdir(full):
            ignored.add(name)
        elif os.path.basename(directory) == "bin" and _PRUNE_SCRIPTS.match(name):
            ignored.add(name)
        elif name == "site-packages" and os.path.isdir(full):
            ignored.add(name)
    return ignored


def python_image_key(version: str) -> str:
    text = PYTHON_CONTAINERFILE + version + " ".join(PYTHON_RUNTIME_PACKAGES)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def ensure_python_base(minor: str) -> str | None:
    """Build localhost/zoobox/python:<minor>-bookworm from pyenv; None if pyenv lacks it."""
    source = pyenv_python(minor)
    name = PYTHON_IMAGE.format(version=minor)
    if source is None:
        _log(f"no CPython {minor} under {PYENV_ROOT}/versions: {name} not made")
        return None
    version = source.name
    key = python_image_key(version)
    labels = image_labels(name)
    if labels is not None and labels.get("org.zoobox.base-key") == key:
        return name
    _log(f"creating {name} from {source}")
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="zoobox-python-", dir=state_dir()) as tmp:
        context = Path(tmp)
        shutil.copytree(source, context / "python", symlinks=True, ignore=_prune)
        site = context / "python" / "lib" / f"python{minor}" / "site-packages"
        site.mkdir(exist_ok=True)
        (context / "Containerfile").write_text(
            PYTHON_CONTAINERFILE.format(
                base=DEBIAN_IMAGE,
                suite=SUITE,
                minor=minor,
                version=version,
                key=key,
                packages=" ".join(PYTHON_RUNTIME_PACKAGES),
            )
        )
        result = _podman(
            "build",
            "--layers",
            "-f",
            str(context / "Containerfile"),
            "-t",
            name,
            str(context),
            check=False,
        )
        if result.returncode != 0:
            tail = (result.stderr or result.stdout).strip().splitlines()[-5:]
            raise UserError(f"building {name} failed: {' / '.join(tail)}")
    _log(f"created {name} in {time.time() - started:.0f} s")
    return name


def python_versions() -> list[str]:
    """The CPython versions the env specs with a Dockerfile name ("3.9", "3.7", ...)."""
    from zoobox.envs.spec import load_envs

    versions = []
    for spec in load_envs().values():
        if spec.dockerfile and spec.python and spec.python not in versions:
            versions.append(spec.python)
    return versions


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
    ensure_packages()
    write_conf()
    if bases:
        ensure_debian_base()
        for minor in pythons if pythons is not None else python_versions():
            ensure_python_base(minor)
    pid = start_service()
    _log(f"podman system service (pid {pid}) answers at {docker_host()}")
    if shutil.which("docker") is None:
        _log(
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
            _log("stopped" if stop_service() else "no zoobox podman service was running")
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
