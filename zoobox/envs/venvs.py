"""Virtual environments built from env specs: the version split without Docker.

Each env spec (`envs/<name>.yaml`) names a CPython version and pinned packages. The venv
runner runs the env's stages with the interpreter of a virtual environment built from
exactly that, cached by the hash of what the venv depends on:

    CACHE/<env>-<hash12>/                  a complete venv (zoobox-venv.json inside)
    CACHE/<env>-<hash12>/zoobox-venv.json  written last: spec, interpreter, versions
    CACHE/.<env>-<hash12>.tmp-<id>/        a build at work (a killed one is never used)
    CACHE/.<env>-<hash12>.lock             one build at a time per venv

A build happens in the temporary folder and becomes the venv by one rename, after its
marker is written; a folder without the marker never counts as built. A changed pin,
Python version or pip argument gives a new hash, hence a new venv, never a stale one;
`invoke envs.prune` removes the venvs no spec names any more.

The interpreter for "3.9" is looked for in this order: `zoobox.venv.pythons` in the
settings (authoritative when set), pyenv's `versions/3.9.*` ($PYENV_ROOT, ~/.pyenv,
/root/.pyenv; newest patch release first), `python3.9` on PATH. Every candidate is run
to check that it is a CPython of that version (pyenv shims are scripts that may fail).
"""

from __future__ import annotations

import collections
import fcntl
import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from zoobox.core.artifacts import read_json, write_json_atomic
from zoobox.core.envspec import EnvSpec
from zoobox.core.errors import UserError
from zoobox.core.paths import default_cache
from zoobox.envs.wheels import pip_environment, require_local_wheels

MARKER = "zoobox-venv.json"
# Bumped when the way a venv is built changes, so old builds are not reused.
LAYOUT = 1
PYENV_ROOTS = ("~/.pyenv", "/root/.pyenv")
PROBE_TIMEOUT = 30
SETTING = "zoobox.venv.pythons"

_PROBE = (
    "import json, platform, sys; "
    "print(json.dumps([list(sys.version_info[:3]), sys.executable, "
    "platform.python_implementation(), sys.prefix, getattr(sys, 'base_prefix', sys.prefix)]))"
)

# Run with the venv's python (3.7 and up, stdlib only): its Python version and the
# distributions in its site-packages, read from the .dist-info / .egg-info names.
_SCAN = r"""
import json, os, platform, sys
found = {}
for entry in sys.path:
    if not entry.endswith("site-packages") or not os.path.isdir(entry):
        continue
    for name in os.listdir(entry):
        if name.endswith(".dist-info"):
            stem = name[: -len(".dist-info")]
        elif name.endswith(".egg-info"):
            stem = name[: -len(".egg-info")]
        else:
            continue
        dist, _, version = stem.partition("-")
        version = version.split("-py")[0]
        found[dist.lower().replace("_", "-")] = version
print(json.dumps({"python": platform.python_version(), "executable": sys.executable,
                  "packages": found}))
"""


# -- interpreters ------------------------------------------------------------------------
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
            env=_clean_environment(),
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


# -- the cache ---------------------------------------------------------------------------
def venv_hash(spec: EnvSpec) -> str:
    """Hash of what a venv is made from: Python version, pins, pip arguments.

    Not the whole spec's hash: a Dockerfile or description edit rebuilds the image, but
    must not re-download two gigabytes of wheels into an identical venv.
    """
    content = {
        "layout": LAYOUT,
        "python": spec.python,
        "packages": list(spec.packages),
        "pip_args": list(spec.pip_args),
    }
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


@dataclass
class VenvState:
    """What the cache holds for one env."""

    path: Path
    marker: dict | None = None  # the completion marker, when the venv is complete
    broken: str | None = None  # why a complete-looking venv cannot run, or None

    @property
    def built(self) -> bool:
        return self.marker is not None

    @property
    def ok(self) -> bool:
        return self.marker is not None and self.broken is None


@dataclass
class BuildResult:
    path: Path
    marker: dict
    built: bool  # False: an existing venv was reused
    seconds: float = 0.0


@dataclass
class VenvCache:
    """The folder of venvs, one per (env, venv hash), and how they are built."""

    root: Path
    pythons: dict = field(default_factory=dict)  # "3.9" -> path (zoobox.venv.pythons)
    say: object = None  # callable(str) for progress lines; None: print

    def __post_init__(self):
        self.root = Path(self.root).expanduser()
        self.pythons = {str(k): str(v) for k, v in (self.pythons or {}).items() if v}

    def _say(self, text: str) -> None:
        (self.say or _print)(text)

    # -- names -----------------------------------------------------------------------------
    def stem(self, spec: EnvSpec) -> str:
        return f"{spec.name}-{venv_hash(spec)[:12]}"

    def path(self, spec: EnvSpec) -> Path:
        return self.root / self.stem(spec)

    def python(self, spec: EnvSpec) -> Path:
        return self.path(spec) / "bin" / "python"

    def interpreter(self, spec: EnvSpec) -> Interpreter:
        """The CPython this env's venv is built from, or a UserError saying what to do."""
        found, tried = find_interpreter(spec.python, self.pythons)
        if found is None:
            raise missing_interpreter_error(spec, tried)
        return found

    # -- state -----------------------------------------------------------------------------
    def marker(self, spec: EnvSpec) -> dict | None:
        """The completion marker of this env's venv, or None when it is not (fully) built."""
        data = read_json(self.path(spec) / MARKER)
        if not isinstance(data, dict) or data.get("venv_hash") != venv_hash(spec):
            return None
        return data

    def state(self, spec: EnvSpec, probe: bool = True) -> VenvState:
        """Built or not, and (probe=True) whether its python still runs."""
        state = VenvState(self.path(spec), self.marker(spec))
        if state.marker is not None and probe:
            info, why = probe_python(str(self.python(spec)))
            if info is None:
                state.broken = f"its python {why}"
            elif info["version"][:2] != [int(p) for p in spec.python.split(".")[:2]]:
                state.broken = f"its python is now {'.'.join(map(str, info['version']))}"
        return state

    # -- building --------------------------------------------------------------------------
    def build(self, spec: EnvSpec, force: bool = False) -> BuildResult:
        """Build this env's venv unless a complete, working one exists (force: rebuild)."""
        if spec.python is None:
            raise UserError(f"env {spec.name} is the host interpreter: it has no venv to build")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise UserError(
                f"cannot create the venv cache {self.root} ({error.strerror}): set "
                "zoobox.venv.cache to a writable folder"
            ) from None
        require_local_wheels(spec)  # a pin PyPI lacks for this machine: say so, not pip
        final = self.path(spec)
        with _BuildLock(self.root / f".{self.stem(spec)}.lock", spec.name, self._say) as lock:
            if not force:
                state = self.state(spec)
                if state.ok:
                    return BuildResult(final, state.marker, built=False)
                if state.broken:
                    self._say(f"venv {spec.name}: {final} is broken ({state.broken}); rebuilding")
            interpreter = self.interpreter(spec)
            for stale in self._leftovers(spec):
                self._say(f"venv {spec.name}: removing {stale.name}, left by a build that died")
                shutil.rmtree(stale, ignore_errors=True)
            started = time.time()
            temp = self.root / f".{self.stem(spec)}.tmp-{uuid.uuid4().hex[:8]}"
            try:
                marker = self._build_in(spec, interpreter, temp, final, lock.fd)
                _replace_dir(temp, final)
            except BaseException:
                shutil.rmtree(temp, ignore_errors=True)
                raise
        seconds = time.time() - started
        self._say(
            f"venv {spec.name}: built in {seconds:.1f} s at {final} ({human_size(dir_size(final))})"
        )
        return BuildResult(final, marker, built=True, seconds=seconds)

    def _leftovers(self, spec: EnvSpec) -> list[Path]:
        stem = glob.escape(self.stem(spec))
        return sorted(
            Path(p)
            for pattern in (f".{stem}.tmp-*", f".{stem}.old-*")
            for p in glob.glob(str(self.root / pattern))
        )

    def _build_in(
        self, spec: EnvSpec, interpreter: Interpreter, temp: Path, final: Path, lock_fd: int
    ) -> dict:
        self._say(
            f"venv {spec.name}: creating with {interpreter.path} (Python {interpreter.version}, "
            f"from {interpreter.source})"
        )
        command = [interpreter.path, "-m", "venv"]
        if not spec.packages:
            command.append("--without-pip")
        result = subprocess.run(
            [*command, str(temp)],
            capture_output=True,
            text=True,
            env=_clean_environment(),
            pass_fds=(lock_fd,),
        )
        if result.returncode != 0:
            raise UserError(
                f"env {spec.name}: `{interpreter.path} -m venv` failed "
                f"({_last_line(result.stderr or result.stdout)}); install that Python's venv "
                f"module (Debian: apt-get install python{spec.python}-venv) or point "
                f"{SETTING} at another CPython {spec.python}"
            )
        python = temp / "bin" / "python"
        if spec.packages:
            self._say(f"venv {spec.name}: pip install {' '.join(spec.pip_args + spec.packages)}")
            _pip_install(python, spec, lock_fd)
        seen = _scan(python)
        _relocate(temp, final)
        marker = {
            "env": spec.name,
            "venv_hash": venv_hash(spec),
            "spec": {
                "python": spec.python,
                "packages": list(spec.packages),
                "pip_args": list(spec.pip_args),
            },
            "interpreter": {
                "path": interpreter.path,
                "version": interpreter.version,
                "source": interpreter.source,
            },
            "python": seen["python"],
            "packages": seen["packages"],
            "built": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "layout": LAYOUT,
        }
        # Written last: only a venv with its marker is complete.
        write_json_atomic(temp / MARKER, marker)
        return marker

    # -- pruning ---------------------------------------------------------------------------
    def prune(self, specs: dict, dry: bool = False) -> list[Path]:
        """Remove venvs (and dead builds) whose env or hash no spec names any more.

        Only folders named like this cache's own entries are touched; a venv or build
        that is being built (its lock held) is kept.
        """
        if not self.root.is_dir():
            return []
        current = {self.stem(s) for s in specs.values() if s.python is not None}
        removed = []
        for entry in sorted(self.root.iterdir()):
            parsed = parse_entry(entry.name)
            if parsed is None or not entry.is_dir() or entry.is_symlink():
                continue  # not ours (or a lock file): never touched here
            stem, kind = parsed
            if kind == "venv" and stem in current:
                continue
            lock = _BuildLock(self.root / f".{stem}.lock", stem, self._say)
            if not lock.try_acquire():
                self._say(f"keeping {entry.name}: a build of it is running")
                continue
            try:
                removed.append(entry)
                if not dry:
                    shutil.rmtree(entry, ignore_errors=True)
            finally:
                lock.release()
        if not dry:
            entries = [(p, parse_entry(p.name)) for p in self.root.iterdir()]
            left = {parsed[0] for _, parsed in entries if parsed and parsed[1] != "lock"}
            for entry, parsed in entries:
                if parsed and parsed[1] == "lock" and parsed[0] not in current | left:
                    entry.unlink(missing_ok=True)
        return removed


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


def cache_from_settings(settings: dict, say=None) -> VenvCache:
    """The venv cache the settings name (`zoobox.venv.cache`, `zoobox.venv.pythons`)."""
    from zoobox.core.paths import REPO

    venv = settings.get("venv") or {}
    configured = venv.get("cache")
    if configured in (None, ""):
        root = default_cache() / "venvs"
    else:
        root = Path(str(configured)).expanduser()
        root = root if root.is_absolute() else REPO / root
    pythons = dict(venv.get("pythons") or {})
    return VenvCache(root, pythons, say=say)


# -- helpers -----------------------------------------------------------------------------
def _print(text: str) -> None:
    print(text, flush=True)


_LEAKY = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP", "__PYVENV_LAUNCHER__")


def _clean_environment() -> dict:
    """The caller's environment without what would leak another Python into a child."""
    env = {k: v for k, v in os.environ.items() if k not in _LEAKY}
    env["PYTHONNOUSERSITE"] = "1"
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def _last_line(text: str) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def _pip_install(python: Path, spec: EnvSpec, lock_fd: int) -> None:
    """pip install the spec's pins; its stderr is shown and its last error line kept."""
    command = [str(python), "-m", "pip", "install", "--no-input", *spec.pip_args, *spec.packages]
    process = subprocess.Popen(
        command,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
        env=pip_environment(_clean_environment()),  # + docker/local/wheels/ when there
        pass_fds=(lock_fd,),
    )
    tail: collections.deque = collections.deque(maxlen=200)
    try:
        for line in process.stderr:
            sys.stderr.write(line)
            tail.append(line.rstrip())
        code = process.wait()
    except BaseException:
        process.kill()
        process.wait()
        raise
    if code != 0:
        errors = [line for line in tail if line.startswith("ERROR:")]
        why = errors[-1] if errors else _last_line("\n".join(tail))
        raise UserError(
            f"env {spec.name}: pip could not install its pins into a Python {spec.python} "
            f"venv: {why} -- fix the pin in envs/{spec.name}.yaml (or what pip names), then run "
            f"`invoke envs.build --env {spec.name}`"
        )


def _scan(python: Path) -> dict:
    result = subprocess.run(
        [str(python), "-I", "-c", _SCAN],
        capture_output=True,
        text=True,
        env=_clean_environment(),
        timeout=120,
    )
    if result.returncode != 0:
        raise UserError(
            f"the new venv's python {python} does not run ({_last_line(result.stderr)})"
        )
    return json.loads(result.stdout.strip().splitlines()[-1])


def _relocate(temp: Path, final: Path) -> None:
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


def _replace_dir(temp: Path, final: Path) -> None:
    """Make `temp` the folder `final` (moving an old one aside first, then removing it)."""
    old = None
    if final.exists() or final.is_symlink():
        old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(final, old)
    os.replace(temp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


class _BuildLock:
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


# -- what the `envs` tasks show and do ------------------------------------------------------
def list_table(cache: VenvCache, specs: dict) -> str:
    """One row per env: Python wanted and found, venv built or not, its size."""
    from zoobox.core.text import table

    rows = []
    for spec in specs.values():
        if spec.python is None:
            rows.append([spec.name, "this one", sys.executable, "not needed (host)", "-"])
            continue
        found, _tried = find_interpreter(spec.python, cache.pythons)
        state = cache.state(spec)
        if state.broken:
            venv = f"broken ({state.broken}): {state.path}"
        elif state.built:
            venv = f"built: {state.path}"
        else:
            venv = f"not built ({state.path.name})"
        rows.append(
            [
                spec.name,
                spec.python,
                f"{found.version} {found.path}" if found else "not found",
                venv,
                human_size(dir_size(state.path)) if state.built else "-",
            ]
        )
    return table(rows, ["env", "python wanted", "python found", "venv", "size"])


def build_all(cache: VenvCache, specs: dict, env: str | None = None, force: bool = False):
    """Build one env's venv, or every env's that has a Python version; errors at the end."""
    if env is not None:
        if env not in specs:
            raise UserError(f"unknown env {env!r} (envs/ has {', '.join(sorted(specs))})")
        chosen = [specs[env]]
        if chosen[0].python is None:
            raise UserError(f"env {env} is the host interpreter: it has no venv to build")
    else:
        chosen = [spec for spec in specs.values() if spec.python is not None]
    failed = []
    for spec in chosen:
        try:
            result = cache.build(spec, force=force)
        except UserError as error:
            if env is not None:
                raise
            print(f"error: {error}", file=sys.stderr, flush=True)
            failed.append(spec.name)
            continue
        if not result.built:
            cache._say(f"venv {spec.name}: up to date at {result.path}")
    if failed:
        raise UserError(
            f"{len(failed)} of {len(chosen)} venvs could not be built ({', '.join(failed)}); "
            "see the errors above"
        )
