"""The artifact folder (the shared volume): one folder per recipe, one per stage.

    ARTIFACTS/<recipe>/<stage>/            a stage's complete output
    ARTIFACTS/<recipe>/<stage>/stage.json  written last: the folder is complete
    ARTIFACTS/<recipe>/.<stage>.tmp-<id>/  a stage at work (removed if it dies)
    ARTIFACTS/<recipe>/.lock               one run at a time per recipe folder

A stage's output becomes visible by one rename, and stage.json is written after it,
so a killed stage never leaves a folder that looks complete.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import time
import uuid
from pathlib import Path

from zoobox.core.errors import UserError

STAGE_JSON = "stage.json"
ENV_JSON = "env.json"


def write_json_atomic(path: Path, data) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    os.replace(tmp, path)


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
            handle = open(self.path, "a+")
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

    def record(self, stage: str) -> dict | None:
        """The stage.json of a complete stage output, or None."""
        record = read_json(self.stage_dir(stage) / STAGE_JSON)
        # Anything but a record of a complete run (damaged, a list, hand-edited) means
        # the output is not known to be complete: the stage runs again.
        if isinstance(record, dict) and record.get("status") == "ok":
            return record
        return None

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
