"""Checking the project's invoke.yaml before invoke reads it.

invoke loads the project configuration after importing tasks.py, and a file it cannot
parse ends in a long traceback; a `zoobox:` section of the wrong shape fails later, in
the middle of a task. tasks.py calls `check_settings_file` first, so either becomes one
`error:` line naming the file, the line or key, and what to write instead.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from zoobox.core.errors import UserError
from zoobox.core.paths import REPO
from zoostage.plainyaml import safe_load_plain

SETTINGS_FILES = ("invoke.yaml", "invoke.yml")
# zoobox settings that hold a mapping, and those that hold one plain value.
MAPPING_KEYS = ("data", "docker", "venv")
SCALAR_KEYS = ("artifacts", "cache", "runner", "backend", "devices", "echo")


def check_settings_file(path: Path) -> None:
    """UserError naming what is wrong in a settings file; nothing when it is fine."""
    try:
        # Anchors and aliases refused first: a nest of aliases would load for minutes.
        data = safe_load_plain(Path(path).read_text(), Path(path).name)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise UserError(
            f"{path.name}: {line}not valid YAML ({problem}); fix or remove it"
        ) from None
    except OSError as error:
        raise UserError(f"cannot read {path}: {error.strerror or error}") from None
    if data is None:
        return
    if not isinstance(data, dict):
        raise UserError(
            f"{path.name}: must be a mapping of settings (zoobox: ...), not a list or text"
        )
    zoobox = data.get("zoobox")
    if zoobox is None:
        return
    if not isinstance(zoobox, dict):
        raise UserError(f"{path.name}: zoobox: must be a mapping of settings, not {zoobox!r}")
    for key in MAPPING_KEYS:
        if zoobox.get(key) is not None and not isinstance(zoobox[key], dict):
            raise UserError(f"{path.name}: zoobox.{key}: must be a mapping, not {zoobox[key]!r}")
    for key in SCALAR_KEYS:
        if isinstance(zoobox.get(key), (dict, list)):
            raise UserError(f"{path.name}: zoobox.{key}: must be one value, not {zoobox[key]!r}")


def check_settings_files(root: Path = REPO) -> None:
    for name in SETTINGS_FILES:
        if (Path(root) / name).is_file():
            check_settings_file(Path(root) / name)
