"""Wheels inside release archives, under a name pip accepts.

Some Ascend release archives (the Torch_AIE tar.gz) carry their wheel under a file name
that is not a wheel name: pip refuses it ("Invalid wheel filename") before reading a
byte. The wheel's own metadata says what it is: `*.dist-info/METADATA` (Name, Version)
and `*.dist-info/WHEEL` (Tag lines). `wheel_in_archive` finds the member and the name
pip will take: its own when valid, else the one built from that metadata; the image
build renames the member to it on extraction.

A wheel file name (the binary distribution format): NAME-VERSION[-BUILD]-PYTHON-ABI-
PLATFORM.whl, no '-' inside a part, NAME of letters, digits, '_' and '.', VERSION a PEP
440 version, BUILD starting with a digit, each tag part letters, digits, '_' and '.'.
"""

from __future__ import annotations

import io
import re
import tarfile
import zipfile
from email.parser import HeaderParser
from pathlib import Path

from zoobox.core.errors import UserError

_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._]*[A-Za-z0-9])?")
# PEP 440, every spelling it normalizes (1.0.rc1, 1.0RC1, 1.0_post1, ...); no '-', which
# a file name cannot hold inside a part.
_VERSION = re.compile(
    r"v?(?:\d+!)?\d+(?:\.\d+)*"
    r"(?:[._]?(?:a|b|c|rc|alpha|beta|pre|preview)[._]?\d*)?"
    r"(?:[._]?(?:post|rev|r)[._]?\d*)?"
    r"(?:[._]?dev[._]?\d*)?"
    r"(?:\+[a-z0-9]+(?:[._][a-z0-9]+)*)?",
    re.IGNORECASE,
)
_BUILD = re.compile(r"\d[A-Za-z0-9_.]*")
_TAG = re.compile(r"[A-Za-z0-9_.]+")


def parse_wheel_name(filename: str) -> dict | None:
    """{name, version, build, python, abi, platform} of a valid wheel file name, or None."""
    if not filename.endswith(".whl"):
        return None
    parts = filename[: -len(".whl")].split("-")
    if len(parts) not in (5, 6):
        return None
    name, version, *rest = parts
    build = rest.pop(0) if len(rest) == 4 else None
    python, abi, platform = rest
    if not _NAME.fullmatch(name) or not _VERSION.fullmatch(version):
        return None
    if build is not None and not _BUILD.fullmatch(build):
        return None
    if not all(_TAG.fullmatch(tag) for tag in (python, abi, platform)):
        return None
    return {
        "name": name,
        "version": version,
        "build": build,
        "python": python,
        "abi": abi,
        "platform": platform,
    }


def canonical(name: str) -> str:
    """A distribution name as a wheel file spells it: runs of -_. become one '_', lower."""
    return re.sub(r"[-_.]+", "_", name).lower()


def name_from_metadata(data: bytes, member: str) -> str:
    """The wheel file name its own dist-info describes, or a UserError saying why not."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        names = archive.namelist()
        meta = next(n for n in names if n.endswith(".dist-info/METADATA"))
        wheel = next(n for n in names if n.endswith(".dist-info/WHEEL"))
        headers = HeaderParser().parsestr(archive.read(meta).decode("utf-8", "replace"))
        tags = HeaderParser().parsestr(archive.read(wheel).decode("utf-8", "replace"))
    except (zipfile.BadZipFile, StopIteration, KeyError, OSError) as error:
        raise UserError(
            f"{member} is not a wheel pip accepts by name, and its metadata cannot be read "
            f"({type(error).__name__}: {error}): rename it by hand (NAME-VERSION-PYTHON-ABI-"
            "PLATFORM.whl) in a copy of the archive"
        ) from None
    name, version = headers.get("Name"), headers.get("Version")
    found = [t.strip() for t in tags.get_all("Tag") or [] if t.strip()]
    if not name or not version or not found:
        raise UserError(
            f"{member}: its dist-info lacks Name, Version or Tag; rename it by hand "
            "(NAME-VERSION-PYTHON-ABI-PLATFORM.whl) in a copy of the archive"
        )
    # Several Tag lines make a compressed tag set: each part's values joined by '.'.
    columns = list(zip(*(t.split("-") for t in found if t.count("-") == 2)))
    if len(columns) != 3:
        raise UserError(f"{member}: unreadable Tag lines in its WHEEL file: {found}")
    tag = "-".join(".".join(dict.fromkeys(column)) for column in columns)
    result = f"{canonical(name)}-{version.replace('-', '_')}-{tag}.whl"
    if parse_wheel_name(result) is None:
        raise UserError(f"{member}: its metadata makes {result}, still not a wheel name")
    return result


def _python_fits(python_tag: str, python: str | None) -> bool:
    """Whether a wheel's python tag (cp39, py3, py2.py3) runs on CPython `python` ("3.9")."""
    if not python:
        return True
    digits = python.replace(".", "")
    accepted = {"cp" + digits, "py" + digits, "py" + python.split(".")[0]}
    return any(tag in accepted for tag in python_tag.split("."))


def wheel_in_archive(archive: Path, dist: str, python: str | None = None) -> tuple[str, str]:
    """(member path in `archive`, the file name pip installs it under) of `dist`'s wheel
    for `python` ("3.9"); UserError when the archive holds none, or several that fit."""
    try:
        with tarfile.open(archive) as tar:
            wheels = [m for m in tar.getmembers() if m.isfile() and m.name.endswith(".whl")]
            candidates = []
            for member in wheels:
                base = member.name.rsplit("/", 1)[-1]
                parsed = parse_wheel_name(base)
                if parsed is None:
                    handle = tar.extractfile(member)
                    pip_name = name_from_metadata(handle.read() if handle else b"", member.name)
                    parsed = parse_wheel_name(pip_name)
                else:
                    pip_name = base
                if canonical(parsed["name"]) == canonical(dist) and _python_fits(
                    parsed["python"], python
                ):
                    candidates.append((member.name, pip_name))
    except (tarfile.TarError, OSError) as error:
        raise UserError(f"{archive} is not a readable tar archive: {error}") from None
    if len(candidates) == 1:
        return candidates[0]
    seen = ", ".join(m.name for m in wheels) or "no .whl at all"
    if not candidates:
        raise UserError(
            f"{archive.name} holds no {dist} wheel for Python {python or 'any'} ({seen}): "
            "is it the release for this architecture and Python?"
        )
    raise UserError(
        f"{archive.name} holds several {dist} wheels for Python {python}: "
        f"{', '.join(m for m, _ in candidates)}"
    )
