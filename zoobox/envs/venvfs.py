"""Folder work for the venv cache: one build at a time, atomic replacement, sizes."""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import uuid
from pathlib import Path


def relocate(temp: Path, final: Path) -> None:
    """Rewrite the temporary path in bin/ scripts (shebangs, activate) to the final one."""
    old, new = str(temp).encode(), str(final).encode()
    files = [temp / "pyvenv.cfg"]
    bin_dir = temp / "bin"
    if bin_dir.is_dir():
        files += [p for p in bin_dir.iterdir() if p.is_file() and not p.is_symlink()]
    for path in files:
        if not path.is_file() or path.stat().st_size > (1 << 20):
            continue
        data = path.read_bytes()
        if old in data:
            mode = path.stat().st_mode
            path.write_bytes(data.replace(old, new))
            os.chmod(path, mode)


def replace_dir(temp: Path, final: Path) -> None:
    """Make `temp` the folder `final` (moving an old one aside first, then removing it)."""
    old = None
    if final.exists() or final.is_symlink():
        old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(final, old)
    os.replace(temp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


class BuildLock:
    """An exclusive lock per venv; the kernel releases it when its holders die.

    The fd is passed to pip, so a pip orphaned by a killed build still holds it.
    """

    def __init__(self, path: Path, name: str, say):
        self.path = path
        self.name = name
        self.say = say
        self.fd = -1

    def try_acquire(self) -> bool:
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            self.fd = -1
            return False
        return True

    def __enter__(self):
        if not self.try_acquire():
            self.say(f"venv {self.name}: waiting for another build of it to finish")
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def release(self) -> None:
        if self.fd >= 0:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = -1

    def __exit__(self, *exc):
        self.release()


def dir_size(path: Path) -> int:
    """Bytes used by the files under `path` (links not followed)."""
    total = 0
    for dirpath, _dirnames, filenames in os.walk(path):
        for name in filenames:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                pass
    return total


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit != "MB" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"


# The names the cache creates: <env>-<hash12> (a venv), and beside it
# .<stem>.tmp-<id>, .<stem>.old-<id> (builds at work, replaced venvs), .<stem>.lock.
_STEM = r"[A-Za-z0-9_.]+-[0-9a-f]{12}"
_ENTRIES = (
    (re.compile(rf"^({_STEM})$"), "venv"),
    (re.compile(rf"^\.({_STEM})\.tmp-[0-9a-f]+$"), "tmp"),
    (re.compile(rf"^\.({_STEM})\.old-[0-9a-f]+$"), "old"),
    (re.compile(rf"^\.({_STEM})\.lock$"), "lock"),
)


def parse_entry(name: str) -> tuple[str, str] | None:
    """(stem, kind) for a name this cache creates (kind: venv, tmp, old, lock), else None."""
    for pattern, kind in _ENTRIES:
        match = pattern.match(name)
        if match:
            return match.group(1), kind
    return None
