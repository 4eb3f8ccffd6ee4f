"""Virtual environments built from env locks: the version split without Docker.

Each env spec (`envs/<name>.yaml`) names a CPython version and pinned packages, and its
lock (docker/requirements/<env>.<arch>.lock, zoobox.envs.locks) every package they pull in,
with hashes. The venv runner runs the env's stages with the interpreter of a virtual
environment built from exactly that lock (`pip install --require-hashes`, the same file the
images install), cached by the hash of what the venv depends on:

    CACHE/<env>-<hash12>/                  a complete venv (zoobox-venv.json inside)
    CACHE/<env>-<hash12>/zoobox-venv.json  written last: spec, lock, interpreter, versions
    CACHE/<env>-<hash12>/<env>.<arch>.lock the lock it was installed from (ZOOBOX_LOCK_FILE)
    CACHE/.<env>-<hash12>.tmp-<id>/        a build at work (a killed one is never used)
    CACHE/.<env>-<hash12>.lock             one build at a time per venv

A build happens in the temporary folder and becomes the venv by one rename, after its
marker is written; a folder without the marker never counts as built. A changed lock, spec
or Python version gives a new hash, hence a new venv, never a stale one; `invoke
envs.prune` removes the venvs no spec names any more. Interpreters: zoobox.envs.interpreters.
"""

from __future__ import annotations

import collections
import glob
import hashlib
import json
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from zoobox.core.artifacts import read_json, write_json_atomic
from zoobox.core.children import run_child
from zoobox.core.envspec import EnvSpec
from zoobox.core.errors import UserError
from zoobox.core.paths import default_cache, repo_relative
from zoobox.envs import locks
from zoobox.envs.interpreters import (  # noqa: F401  (re-exported: the cache's public face)
    SETTING,
    Interpreter,
    clean_environment,
    clear_interpreter_cache,
    find_interpreter,
    last_line,
    missing_interpreter_error,
    probe_python,
)
from zoobox.envs.venvfs import (
    BuildLock,
    dir_size,
    human_size,
    parse_entry,
    relocate,
    replace_dir,
)
from zoobox.envs.wheels import pip_environment, require_local_wheels

MARKER = "zoobox-venv.json"
# Bumped when the way a venv is built changes, so old builds are not reused.
# 2: installed from the env's lock (pip --require-hashes) instead of the spec's pins.
LAYOUT = 2

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


# -- the cache ---------------------------------------------------------------------------
def venv_target(spec: EnvSpec) -> locks.LockTarget | None:
    """The lock a venv of `spec` installs on this machine (None: no packages, no lock)."""
    found = locks.targets(spec, arches=(locks.machine_arch(),))
    return found[0] if found else None


def venv_hash(spec: EnvSpec) -> str:
    """Hash of what a venv is made from: Python version, the spec's pins, their lock.

    Not the whole spec's hash: a Dockerfile or description edit rebuilds the image, but
    must not re-download two gigabytes of wheels into an identical venv. The pins count
    as well as the lock, so a spec edited without relocking names a venv that is not built
    (and `envs.build` then says to relock) rather than the old one.
    """
    content = {"layout": LAYOUT, "python": spec.python}
    target = venv_target(spec)
    if target is not None:
        content["input"] = target.input_hash()
        lock = target.lock_path
        content["lock"] = locks.file_sha256(lock) if lock.is_file() else None
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

    def note(self, text: str) -> None:
        """A progress line, through `say` when given."""
        (self.say or _print)(text)

    # -- names -----------------------------------------------------------------------------
    def stem(self, spec: EnvSpec) -> str:
        return f"{spec.name}-{venv_hash(spec)[:12]}"

    def path(self, spec: EnvSpec) -> Path:
        return self.root / self.stem(spec)

    def python(self, spec: EnvSpec) -> Path:
        return self.path(spec) / "bin" / "python"

    def lock_file(self, spec: EnvSpec) -> Path | None:
        """The lock a built venv was installed from (its own copy), or None."""
        name = (self.marker(spec) or {}).get("lock_file")
        return self.path(spec) / name if name else None

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
        target = venv_target(spec)
        # The lock first: a stale or missing one is an error before anything is made.
        lock = locks.lock_for(spec, target.arch, npu=False) if target else None
        with BuildLock(self.root / f".{self.stem(spec)}.lock", spec.name, self.note) as build_lock:
            if not force:
                state = self.state(spec)
                if state.ok:
                    return BuildResult(final, state.marker, built=False)
                if state.broken:
                    self.note(f"venv {spec.name}: {final} is broken ({state.broken}); rebuilding")
            interpreter = self.interpreter(spec)
            for stale in self._leftovers(spec):
                self.note(f"venv {spec.name}: removing {stale.name}, left by a build that died")
                shutil.rmtree(stale, ignore_errors=True)
            started = time.time()
            temp = self.root / f".{self.stem(spec)}.tmp-{uuid.uuid4().hex[:8]}"
            try:
                marker = self._build_in(spec, interpreter, lock, temp, final, build_lock.fd)
                replace_dir(temp, final)
            except BaseException:
                shutil.rmtree(temp, ignore_errors=True)
                raise
        seconds = time.time() - started
        self.note(
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
        self,
        spec: EnvSpec,
        interpreter: Interpreter,
        lock: locks.Lock | None,
        temp: Path,
        final: Path,
        lock_fd: int,
    ) -> dict:
        self.note(
            f"venv {spec.name}: creating with {interpreter.path} (Python {interpreter.version}, "
            f"from {interpreter.source})"
        )
        command = [interpreter.path, "-m", "venv"]
        if lock is None:
            command.append("--without-pip")
        output: list[str] = []
        code = run_child(
            [*command, str(temp)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=clean_environment(),
            pass_fds=(lock_fd,),
            on_output=lambda process: output.append(process.stdout.read()),
        )
        if code != 0:
            raise UserError(
                f"env {spec.name}: `{interpreter.path} -m venv` failed "
                f"({last_line(''.join(output))}); install that Python's venv "
                f"module (Debian: apt-get install python{spec.python}-venv) or point "
                f"{SETTING} at another CPython {spec.python}"
            )
        python = temp / "bin" / "python"
        if lock is not None:
            # The venv keeps the very file it was installed from (ZOOBOX_LOCK_FILE).
            shutil.copyfile(lock.path, temp / lock.path.name)
            self.note(
                f"venv {spec.name}: pip install --require-hashes -r {repo_relative(lock.path)} "
                f"({len(lock.pins)} packages)"
            )
            _pip_install(python, spec, temp / lock.path.name, lock_fd)
        seen = scan_interpreter(python)
        relocate(temp, final)
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
            "lock": lock.id if lock else None,
            "lock_file": lock.path.name if lock else None,
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
            lock = BuildLock(self.root / f".{stem}.lock", stem, self.note)
            if not lock.try_acquire():
                self.note(f"keeping {entry.name}: a build of it is running")
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


def _pip_install(python: Path, spec: EnvSpec, lock_file: Path, lock_fd: int) -> None:
    """pip install the env's lock, hashes checked; its stderr is shown, its last error kept."""
    command = [str(python), "-m", "pip", "install", "--no-input", "--require-hashes"]
    command += [*spec.pip_args, "-r", str(lock_file)]
    tail: collections.deque = collections.deque(maxlen=200)

    def relay(process):
        for line in process.stderr:
            sys.stderr.write(line)
            tail.append(line.rstrip())

    code = run_child(
        command,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
        env=pip_environment(clean_environment()),  # + docker/local/wheels/ when there
        pass_fds=(lock_fd,),
        on_output=relay,
    )
    if code != 0:
        errors = [line for line in tail if line.startswith("ERROR:")]
        why = errors[-1] if errors else last_line("\n".join(tail))
        raise UserError(
            f"env {spec.name}: pip could not install its lock {lock_file.name} into a Python "
            f"{spec.python} venv: {why} -- fix what pip names (the pin in envs/{spec.name}.yaml, "
            f"then `invoke envs.lock --env {spec.name}`), then run "
            f"`invoke envs.build --env {spec.name}`"
        )


def scan_interpreter(python: Path) -> dict:
    result = subprocess.run(
        [str(python), "-I", "-c", _SCAN],
        capture_output=True,
        text=True,
        env=clean_environment(),
        timeout=120,
    )
    if result.returncode != 0:
        raise UserError(f"the new venv's python {python} does not run ({last_line(result.stderr)})")
    return json.loads(result.stdout.strip().splitlines()[-1])
