"""Local base images made without a registry, for podman on development machines.

- `localhost/zoobox/debian:bookworm`: debootstrap --variant=minbase from the machine's own
  Debian mirror, then `podman import`;
- one `localhost/zoobox/python:X.Y-bookworm` per Python the env specs name, holding the
  CPython build that pyenv already has on this machine (its standard library, pip from its
  bundled ensurepip, nothing of its site-packages), laid out like the official
  python:X.Y-slim images (`python` at /usr/local/bin). `invoke images.build --base local`
  builds the env images FROM these instead of the registry's python images.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from zoobox.core.errors import UserError
from zoobox.dev.podman import log, podman, podman_env, state_dir

SUITE = "bookworm"


DEFAULT_MIRROR = "http://deb.debian.org/debian"


DEBIAN_IMAGE = f"localhost/zoobox/debian:{SUITE}"


PYTHON_IMAGE = "localhost/zoobox/python:{version}-" + SUITE


PYENV_ROOT = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")


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
    result = podman("image", "inspect", "--format", "{{json .Labels}}", name, check=False)
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
    log(f"creating {DEBIAN_IMAGE}: debootstrap --variant=minbase {SUITE} from {mirror}")
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
    log(f"created {DEBIAN_IMAGE} in {time.time() - started:.0f} s")
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
        log(f"no CPython {minor} under {PYENV_ROOT}/versions: {name} not made")
        return None
    version = source.name
    key = python_image_key(version)
    labels = image_labels(name)
    if labels is not None and labels.get("org.zoobox.base-key") == key:
        return name
    log(f"creating {name} from {source}")
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
        result = podman(
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
    log(f"created {name} in {time.time() - started:.0f} s")
    return name


def python_versions() -> list[str]:
    """The CPython versions the env specs with a Dockerfile name ("3.9", "3.7", ...)."""
    from zoobox.core.envspec import load_envs

    versions = []
    for spec in load_envs().values():
        if spec.dockerfile and spec.python and spec.python not in versions:
            versions.append(spec.python)
    return versions
