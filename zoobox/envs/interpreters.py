"""The CPython interpreters on this machine: find the one an env names, and check it.

The interpreter for "3.9" is looked for in this order: `zoobox.venv.pythons` in the
settings (authoritative when set), pyenv's `versions/3.9.*` ($PYENV_ROOT, ~/.pyenv,
/root/.pyenv; newest patch release first), `python3.9` on PATH. Every candidate is run
to check that it is a CPython of that version (pyenv shims are scripts that may fail).
Used by the venv cache (zoobox.envs.venvs) and the lock generator (zoobox.envs.lockgen).
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from zoobox.core.envspec import EnvSpec
from zoobox.core.errors import UserError

PYENV_ROOTS = ("~/.pyenv", "/root/.pyenv")
PROBE_TIMEOUT = 30
SETTING = "zoobox.venv.pythons"

_PROBE = (
    "import json, platform, sys; "
    "print(json.dumps([list(sys.version_info[:3]), sys.executable, "
    "platform.python_implementation(), sys.prefix, getattr(sys, 'base_prefix', sys.prefix)]))"
)


@dataclass(frozen=True)
class Interpreter:
    """A CPython found on this machine."""

    path: str  # the executable as it reports itself (sys.executable), never a shim
    version: str  # "3.9.18"
    source: str  # where it was found: the setting, pyenv, PATH


def probe_python(path: str) -> tuple[dict | None, str]:
    """Run `path` and ask what it is: ({version, executable, ...}, "") or (None, why)."""
    if not os.path.isfile(path):
        return None, "does not exist"
    if not os.access(path, os.X_OK):
        return None, "is not executable"
    try:
        result = subprocess.run(
            [path, "-I", "-c", _PROBE],
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT,
            env=clean_environment(),
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return None, f"does not run ({error})"
    if result.returncode != 0:
        lines = (result.stderr or result.stdout).strip().splitlines()
        return None, f"does not run ({lines[0] if lines else f'exit {result.returncode}'})"
    try:
        version, executable, implementation, prefix, base_prefix = json.loads(
            result.stdout.strip().splitlines()[-1]
        )
    except (ValueError, IndexError):
        return None, "does not answer like a Python 3"
    return {
        "version": version,
        "executable": executable or path,
        "implementation": implementation,
        "in_venv": prefix != base_prefix,
        "base_prefix": base_prefix,
    }, ""


def _micro(path: str) -> tuple:
    """Sort key for pyenv version folders: 3.9.18 after 3.9.2; odd names last."""
    name = Path(path).name
    parts = name.split(".")
    try:
        return (1, int(parts[2]), name)
    except (IndexError, ValueError):
        return (0, 0, name)


def candidates(version: str, configured: dict | None = None) -> list[tuple[str, str]]:
    """(path, source) pairs to try for CPython `version`, in order of preference."""
    configured = configured or {}
    if configured.get(version):
        # A configured interpreter is what the user asked for: no silent fallback.
        return [(str(Path(str(configured[version])).expanduser()), f"{SETTING}[{version!r}]")]
    found: list[tuple[str, str]] = []
    roots = [os.environ.get("PYENV_ROOT"), *PYENV_ROOTS]
    seen_roots = set()
    for root in roots:
        if not root:
            continue
        root = os.path.realpath(os.path.expanduser(root))
        if root in seen_roots:
            continue
        seen_roots.add(root)
        folders = glob.glob(os.path.join(glob.escape(root), "versions", f"{version}.*"))
        for folder in sorted(folders, key=_micro, reverse=True):
            found.append((os.path.join(folder, "bin", f"python{version}"), "pyenv"))
    on_path = shutil.which(f"python{version}")
    if on_path:
        found.append((on_path, "PATH"))
    return found


def find_interpreter(version: str, configured: dict | None = None) -> tuple:
    """(Interpreter or None, [what was tried and why it did not do]) for CPython `version`."""
    key = tuple(sorted((str(k), str(v)) for k, v in (configured or {}).items() if v))
    return _find(str(version), key, os.environ.get("PYENV_ROOT", ""), os.environ.get("PATH", ""))


@lru_cache(maxsize=None)
def _find(version: str, configured: tuple, _pyenv_root: str, _path: str) -> tuple:
    tried = []
    wanted = [int(part) for part in version.split(".")[:2]]
    for path, source in candidates(version, dict(configured)):
        info, why = probe_python(path)
        if info is None:
            tried.append(f"{path} {why}")
            continue
        if info["implementation"] != "CPython":
            tried.append(f"{path} is {info['implementation']}, not CPython")
            continue
        if info["version"][:2] != wanted:
            tried.append(f"{path} is Python {'.'.join(map(str, info['version']))}")
            continue
        executable = info["executable"]
        if info["in_venv"]:
            # A venv's python: build from the interpreter it was made from.
            base = os.path.join(info["base_prefix"], "bin", f"python{version}")
            executable = base if os.path.isfile(base) else executable
        full = ".".join(map(str, info["version"]))
        return Interpreter(executable, full, source), tuple(tried)
    if not tried:
        tried.append(f"no pyenv versions/{version}.* and no python{version} on PATH")
    return None, tuple(tried)


def clear_interpreter_cache() -> None:
    _find.cache_clear()


def missing_interpreter_error(spec: EnvSpec, tried) -> UserError:
    return UserError(
        f"env {spec.name} needs CPython {spec.python}, not found here "
        f"({'; '.join(tried)}): install it (e.g. `pyenv install {spec.python}`) or set "
        f'{SETTING} {{"{spec.python}": /path/to/python{spec.python}}} in invoke.yaml, '
        f"then run `invoke envs.build --env {spec.name}`"
    )


_LEAKY = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP", "__PYVENV_LAUNCHER__")


def clean_environment() -> dict:
    """The caller's environment without what would leak another Python into a child."""
    env = {k: v for k, v in os.environ.items() if k not in _LEAKY}
    env["PYTHONNOUSERSITE"] = "1"
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def last_line(text: str) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1] if lines else "no output"
