"""A stage's output files as recorded in its stage.json, and checking them again.

stage.json lists every file the stage wrote: size, mtime and sha256. Before a stage is
skipped the files on disk are checked against that list, the way make and DVC do: the
size and mtime first (a stat per file), the content digest only for a file whose mtime
moved while its size did not (a copy, a `touch`). A file deleted, added, resized or
with other bytes means the output is not the one recorded: the stage runs again.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

# Read in one buffer, refilled: stores run to gigabytes.
_BUFFER_BYTES = 8 << 20


def _files(folder: Path, exclude: tuple[str, ...]):
    """(relative name as os.walk sees it, name in the manifest, full path), sorted."""
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        rel = os.path.relpath(dirpath, folder)
        for name in sorted(filenames):
            if rel == "." and name in exclude:
                continue
            key = name if rel == "." else os.path.join(rel, name)
            yield rel, key, os.path.join(dirpath, name)


def scan(folder: str | os.PathLike, exclude: tuple[str, ...] = ()) -> tuple[str, dict]:
    """(content digest of the folder, {name: {size, mtime_ns, sha256}}), in one read.

    The digest is zoobox.core.fingerprint.content_digest's (names, sizes and contents):
    what downstream stages fingerprint this output by.
    """
    folder = Path(folder)
    total = hashlib.sha256()
    manifest = {}
    buffer = bytearray(_BUFFER_BYTES)
    view = memoryview(buffer)
    for rel, key, path in _files(folder, exclude):
        one = hashlib.sha256()
        with open(path, "rb") as handle:
            stat = os.fstat(handle.fileno())
            # name and size first: no two different trees hash the same bytes
            name = f"{rel}/{os.path.basename(path)}\0{stat.st_size}\0"
            total.update(name.encode(errors="surrogateescape"))
            while True:
                count = handle.readinto(buffer)
                if not count:
                    break
                total.update(view[:count])
                one.update(view[:count])
        manifest[key] = {
            "size": stat.st_size,
            "mtime_ns": stat.st_mtime_ns,
            "sha256": one.hexdigest(),
        }
    return total.hexdigest(), manifest


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    buffer = bytearray(_BUFFER_BYTES)
    view = memoryview(buffer)
    with open(path, "rb") as handle:
        while True:
            count = handle.readinto(buffer)
            if not count:
                break
            digest.update(view[:count])
    return digest.hexdigest()


def _names(keys) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:3])
    return shown + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")


def verify(
    folder: str | os.PathLike, manifest: dict, exclude: tuple[str, ...] = ()
) -> tuple[str | None, dict]:
    """(what differs from `manifest`, or None; the manifest with refreshed mtimes).

    A file whose size and mtime match is taken as unchanged without reading it; one
    whose mtime moved is read, and kept when its sha256 still matches (the refreshed
    manifest then carries its new mtime, so the next check is a stat again).
    """
    folder = Path(folder)
    if not folder.is_dir():
        return "the output folder is missing", manifest
    present = {key: path for _, key, path in _files(folder, exclude)}
    missing = set(manifest) - set(present)
    added = set(present) - set(manifest)
    changed = []
    refreshed = {}
    for key in sorted(set(present) & set(manifest)):
        entry = manifest[key]
        try:
            stat = os.stat(present[key])
        except OSError:
            missing.add(key)
            continue
        if stat.st_size != entry.get("size"):
            changed.append(key)
            continue
        if stat.st_mtime_ns != entry.get("mtime_ns"):
            if sha256_file(present[key]) != entry.get("sha256"):
                changed.append(key)
                continue
            entry = dict(entry, mtime_ns=stat.st_mtime_ns)
        refreshed[key] = entry
    problems = []
    if missing:
        problems.append(f"{_names(missing)} missing")
    if changed:
        problems.append(f"{_names(changed)} changed")
    if added:
        problems.append(f"{_names(added)} added")
    return ("; ".join(problems) or None), (refreshed if not problems else manifest)
