"""The artifact folder (the shared volume): one folder per recipe, one per stage.

    ARTIFACTS/<recipe>/<stage>/            a stage's complete output
    ARTIFACTS/<recipe>/<stage>/stage.json  written last: the folder is complete
    ARTIFACTS/<recipe>/.<stage>.tmp-<id>/  a stage at work (removed if it dies)
    ARTIFACTS/<recipe>/.lock               one run at a time per recipe folder

A stage's output becomes visible by one rename, and stage.json is written after it,
so a killed stage never leaves a folder that looks complete. stage.json lists the files
the output held (check_outputs compares them before a skip), and nothing here is written
through a symbolic link: the lock and the JSON records refuse or replace one.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import socket
import stat
import time
import uuid
from pathlib import Path

from zoobox.core import outputs
from zoobox.core.errors import UserError

STAGE_JSON = "stage.json"
ENV_JSON = "env.json"
# Not the stage's output proper: left out of its digest and of the output check.
RECORD_FILES = (STAGE_JSON, ENV_JSON)


def write_text_atomic(path: Path, text: str) -> None:
    """Write `path` through a fresh temporary file beside it, never through a link.

    The temporary file is created with O_EXCL | O_NOFOLLOW (a link or file planted at
    its name is removed first, not written through), and os.replace swaps names: a
    symbolic link at `path` itself is replaced, its target left alone.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_json_atomic(path: Path, data) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: Path):
    """The parsed file, or None when it is absent, unreadable or not JSON."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):  # ValueError: bad JSON or bad UTF-8
        return None


class RecipeLock:
    """An exclusive lock on a recipe folder, released by the kernel if its holder dies."""

    def __init__(self, folder: Path):
        self.path = folder / ".lock"
        self._handle = None

    def acquire(self, what: str) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            handle = self._open()
        except OSError as error:
            raise UserError(
                f"cannot write to the artifact folder {self.path.parent} "
                f"({error.strerror or error}): pass --artifacts with a folder you can write to"
            ) from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise UserError(
                f"{self.path.parent} is in use by {holder}; wait for it to "
                "finish (one run at a time per artifact folder)"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(
            f"pid {os.getpid()} on {socket.gethostname()} since "
            f"{time.strftime('%Y-%m-%d %H:%M:%S')}: {what}"
        )
        handle.flush()
        self._handle = handle

    def _open(self):
        """The lock file, opened without following a link: never a file elsewhere.

        It is truncated and written to, so a symbolic link, a hard link or anything but
        a plain file at its name would put that writing outside the artifact folder.
        """
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
        try:
            fd = os.open(self.path, flags, 0o644)
        except OSError as error:
            if error.errno == errno.ELOOP:  # O_NOFOLLOW met a symbolic link
                link = f"a symbolic link to {os.readlink(self.path)}"
                raise UserError(self._refusal(link)) from None
            raise
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
            os.close(fd)
            what = "not a plain file" if not stat.S_ISREG(info.st_mode) else "a hard link"
            raise UserError(self._refusal(f"{what} ({info.st_nlink} names)"))
        os.set_blocking(fd, True)
        return os.fdopen(fd, "r+")

    def _refusal(self, what: str) -> str:
        return (
            f"{self.path} is {what}: zoobox writes its lock there and never through a "
            "link; remove it (`rm` removes the link, not its target) and run again"
        )

    def fileno(self) -> int:
        """The descriptor holding the lock (stages inherit it: see runners.base.execute)."""
        return self._handle.fileno()

    def release(self) -> None:
        if self._handle is not None:
            self._handle.seek(0)
            self._handle.truncate()
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


class ArtifactStore:
    def __init__(self, root: str | os.PathLike, recipe: str):
        self.root = Path(root).resolve()
        self.folder = self.root / recipe

    def stage_dir(self, stage: str) -> Path:
        return self.folder / stage

    def refuse_links(self, path: Path) -> None:
        """UserError when a folder between the recipe folder and `path` is a symbolic link.

        zoobox removes and writes below such paths (a stage's NPU logs): through a
        planted link that would happen outside the artifact folder.
        """
        path = Path(path)
        parts = path.relative_to(self.folder).parts
        for depth in range(1, len(parts) + 1):
            here = self.folder.joinpath(*parts[:depth])
            if here.is_symlink():
                raise UserError(
                    f"{here} is a symbolic link to {os.readlink(here)}: zoobox writes "
                    "and removes files there and never through a link; remove it and "
                    "run again"
                )

    def record(self, stage: str) -> dict | None:
        """The stage.json of a complete stage output, or None."""
        record = read_json(self.stage_dir(stage) / STAGE_JSON)
        # Anything but a record of a complete run (damaged, a list, hand-edited) means
        # the output is not known to be complete: the stage runs again.
        if isinstance(record, dict) and record.get("status") == "ok":
            return record
        return None

    def check_outputs(self, stage: str, record: dict, refresh: bool = True) -> str | None:
        """What differs between the stage's output on disk and its record, or None.

        The record's `outputs` (size, mtime, sha256 per file) are checked as make and
        DVC do (zoobox.core.outputs.verify). A record from before those lists is checked
        by its content digest, and given the list when it matches. `refresh` (under the
        lock) writes back the mtimes of files that were touched but hold the same bytes.
        """
        folder = self.stage_dir(stage)
        manifest = record.get("outputs")
        if not isinstance(manifest, dict):
            if not folder.is_dir():
                return "the output folder is missing"
            digest, manifest = outputs.scan(folder, RECORD_FILES)
            if digest != record.get("output_digest"):
                return "its files differ from the recorded output digest"
            problem, refreshed = None, manifest
        else:
            problem, refreshed = outputs.verify(folder, manifest, RECORD_FILES)
        if problem is None and refresh and refreshed != record.get("outputs"):
            write_json_atomic(folder / STAGE_JSON, dict(record, outputs=refreshed))
        return problem

    def clean_stale(self) -> list[Path]:
        """Remove temporary folders left by stages that died (call under the lock)."""
        removed = []
        if self.folder.is_dir():
            for path in self.folder.glob(".*.tmp-*"):
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
        return removed

    def new_temp(self, stage: str) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f".{stage}.tmp-{uuid.uuid4().hex[:8]}"
        path.mkdir()
        return path

    def commit(self, stage: str, temp: Path, record: dict) -> Path:
        """Make `temp` the stage's output, then write its stage.json."""
        final = self.stage_dir(stage)
        old = None
        if final.exists():
            old = self.folder / f".{stage}.tmp-old-{uuid.uuid4().hex[:8]}"
            os.replace(final, old)
        os.replace(temp, final)
        env = read_json(final / ENV_JSON)
        if env is not None:
            record["versions"] = env
        write_json_atomic(final / STAGE_JSON, record)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return final

    def discard(self, temp: Path) -> None:
        shutil.rmtree(temp, ignore_errors=True)
