"""Locks: each env's full resolved set, every package `name==version --hash=sha256:...`.

One file per env, install kind and CPU architecture, in docker/requirements/ (the build
context, so the images copy them):

    <env>.<arch>.lock         the spec's `packages` and all they pull in: the CPU image, the venv
    <env>-npu.<arch>.lock     `packages` + `npu_packages`: the image built with the NPU stack
    <name>.<arch>.nolock      instead of the lock where PyPI cannot satisfy the spec on that
                              architecture (torch 1.5.0 has no aarch64 wheel): the resolver's reason

The locks are made by uv (zoobox.envs.lockgen, `invoke envs.lock`), never by hand. Each
starts with the hash of what it was resolved from (the rendered requirements, the Python
version, the platform), so a spec edited without relocking is caught offline, here and in
CI. An image installs its lock with `pip install --require-hashes`; a venv installs the
same file; images.check and envs.list compare what is installed with it (drift).
"""

from __future__ import annotations

import hashlib
import json
import platform
import re
from dataclasses import dataclass
from pathlib import Path

from zoobox.core.envspec import EnvSpec
from zoobox.core.errors import UserError
from zoobox.core.paths import repo_relative
from zoobox.envs import requirements
from zoostage.envinfo import lock_id

ARCHES = ("x86_64", "aarch64")
# The oldest glibc the locks' wheels may need: manylinux2014, which python:X.Y-slim (glibc
# 2.36) and the Ascend base images (EulerOS / openEuler / Ubuntu 18.04+, glibc >= 2.27) meet.
MANYLINUX = "manylinux_2_17"
INPUT_KEY = "# input-sha256: "
_MACHINES = {"amd64": "x86_64", "arm64": "aarch64"}


def machine_arch() -> str:
    """This machine's CPU architecture, named as `uname -m` on Linux names it."""
    machine = platform.machine().lower()
    return _MACHINES.get(machine, machine)


def normalize(name: str) -> str:
    """A distribution name as PEP 503 compares them (Foo_Bar.baz -> foo-bar-baz)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pins_of(requirements_list) -> dict[str, str]:
    """{normalized name: version} of `name==version` requirement strings."""
    found = {}
    for requirement in requirements_list:
        name, _, version = requirement.partition("==")
        found[normalize(name.split("[")[0].strip())] = version.split(";")[0].strip()
    return found


@dataclass(frozen=True)
class LockTarget:
    """One lock to make: an env, with its NPU packages or not, for one architecture."""

    spec: EnvSpec
    npu: bool
    arch: str

    @property
    def name(self) -> str:
        return self.spec.name + ("-npu" if self.npu else "")

    @property
    def label(self) -> str:
        return f"{self.name}.{self.arch}"

    @property
    def lock_path(self) -> Path:
        return requirements.REQUIREMENTS / f"{self.label}.lock"

    @property
    def nolock_path(self) -> Path:
        return requirements.REQUIREMENTS / f"{self.label}.nolock"

    @property
    def keys(self) -> str:
        return "packages + npu_packages" if self.npu else "packages"

    def inputs(self) -> list[tuple[str, str]]:
        """(file name, text) of the requirements files the resolver reads, in order."""
        files = requirements.requirements_files(self.spec)
        names = [f"{self.spec.name}.txt"] + ([f"{self.spec.name}-npu.txt"] if self.npu else [])
        return [(name, files[requirements.REQUIREMENTS / name]) for name in names]

    def pins(self) -> dict[str, str]:
        """What the spec pins for this target: every one must be in the lock, at that version."""
        listed = list(self.spec.packages)
        if self.npu:
            listed += list(requirements.npu_packages(self.spec))
        return pins_of(listed)

    def input_hash(self) -> str:
        """Hash of everything the resolution depends on that the repository holds."""
        content = {
            "python": self.spec.python,
            "platform": f"{self.arch}-{MANYLINUX}",
            "inputs": self.inputs(),
        }
        return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


def targets(spec: EnvSpec, arches=ARCHES) -> list[LockTarget]:
    """Every lock an env has: one per architecture, and its NPU set for NPU envs."""
    if spec.python is None or not spec.packages:
        return []  # the host env: whatever the machine has
    kinds = (False, True) if spec.npu else (False,)
    return [LockTarget(spec, npu, arch) for npu in kinds for arch in arches]


@dataclass
class Lock:
    """A lock file read back: its pins, which of them lack hashes, its input hash."""

    path: Path
    pins: dict  # normalized name -> version
    unhashed: list
    input_hash: str | None

    @property
    def sha256(self) -> str:
        return file_sha256(self.path)

    @property
    def id(self) -> str:
        return lock_id(self.path.name, self.sha256)


_REQUIREMENT = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?\s*==\s*([^\s;\\]+)")
_HASH = re.compile(r"--hash=sha256:[0-9a-f]{64}")


def parse_lock(text: str) -> tuple[dict, list, str | None]:
    """(pins, names without a hash, input hash) of a lock's text (pip requirements format)."""
    pins, unhashed, input_hash, current = {}, [], None, ""
    for raw in text.splitlines():
        if raw.startswith(INPUT_KEY):
            input_hash = raw[len(INPUT_KEY) :].strip()
        line = raw.split(" #", 1)[0].rstrip() if not raw.lstrip().startswith("#") else ""
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        entry, current = (current + line).strip(), ""
        match = _REQUIREMENT.match(entry)
        if match:
            name = normalize(match.group(1))
            pins[name] = match.group(3)
            if not _HASH.search(entry):
                unhashed.append(name)
    return pins, unhashed, input_hash


def read_lock(path: Path) -> Lock:
    pins, unhashed, input_hash = parse_lock(Path(path).read_text())
    return Lock(Path(path), pins, unhashed, input_hash)


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def recorded_input_hash(path: Path) -> str | None:
    return parse_lock(Path(path).read_text())[2]


def nolock_reason(path: Path) -> str:
    """What a .nolock says the resolver found (its `# uv:` lines), as one line."""
    lines = [
        line[len("# uv:") :].strip()
        for line in Path(path).read_text().splitlines()
        if line.startswith("# uv:")
    ]
    return " ".join(line for line in lines if line) or "no reason recorded"


def relock_hint(target: LockTarget) -> str:
    return f"run `invoke envs.lock --env {target.spec.name} --arch {target.arch}`"


def target_problems(target: LockTarget) -> list[str]:
    """What is wrong with one target's lock files (offline); empty when it is current."""
    lock, nolock = target.lock_path, target.nolock_path
    where = repo_relative(lock)
    if lock.is_file() and nolock.is_file():
        return [f"{where} and its .nolock both exist: {relock_hint(target)}"]
    if not lock.is_file() and not nolock.is_file():
        return [f"{where} is missing: {relock_hint(target)}"]
    present = lock if lock.is_file() else nolock
    if recorded_input_hash(present) != target.input_hash():
        return [
            f"{repo_relative(present)} is stale: envs/{target.spec.name}.yaml ({target.keys}) "
            f"changed since it was locked: {relock_hint(target)}"
        ]
    if not lock.is_file():
        return []
    read = read_lock(lock)
    problems = []
    for name, version in target.pins().items():
        found = read.pins.get(name)
        if found != version:
            problems.append(
                f"{where} has {name}=={found or '(nothing)'}, envs/{target.spec.name}.yaml "
                f"pins {version}: {relock_hint(target)}"
            )
    if read.unhashed:
        unhashed = ", ".join(read.unhashed)
        problems.append(f"{where}: {unhashed} without --hash: {relock_hint(target)}")
    return problems


def npu_superset_problems(spec: EnvSpec, arch: str) -> list[str]:
    """An NPU lock must install every package the CPU lock does (no leftover extras)."""
    base, npu = LockTarget(spec, False, arch), LockTarget(spec, True, arch)
    if not (base.lock_path.is_file() and npu.lock_path.is_file()):
        return []
    missing = sorted(set(read_lock(base.lock_path).pins) - set(read_lock(npu.lock_path).pins))
    if not missing:
        return []
    return [f"{repo_relative(npu.lock_path)} lacks {', '.join(missing)}: {relock_hint(npu)}"]


def check_locks(specs) -> list[str]:
    """Every problem with the locks of `specs` (offline: no resolver, no network)."""
    problems = []
    for spec in specs:
        for target in targets(spec):
            problems += target_problems(target)
        if spec.npu:
            for arch in ARCHES:
                problems += npu_superset_problems(spec, arch)
    return problems


def lock_for(spec: EnvSpec, arch: str, npu: bool) -> Lock:
    """The current lock an image or venv of `spec` installs on `arch`, or a UserError."""
    target = LockTarget(spec, npu, arch)
    if target.nolock_path.is_file() and not target.lock_path.is_file():
        raise UserError(
            f"env {spec.name}{' with its NPU stack' if npu else ''} has no lock for {arch}: "
            f"{nolock_reason(target.nolock_path)} -- put the wheels it needs in "
            f"docker/local/wheels/ and run `invoke envs.lock --env {spec.name} --arch {arch} "
            "--find-links docker/local/wheels`, or build it on another architecture "
            "(docker/README.md, 'Locks')"
        )
    problems = target_problems(target)
    if problems:
        raise UserError(problems[0])
    return read_lock(target.lock_path)


# What the interpreter brings, not the lock (pip freeze leaves them out too).
INSTALLER_TOOLS = ("pip", "setuptools", "wheel", "distribute")


def drift(pins: dict, installed: dict) -> list[tuple[str, str, str]]:
    """(name, locked, installed) for every package that differs; '-' where one side lacks it.

    Versions compare by their public part: a local label (`+cu102`) names the same release.
    pip, setuptools and wheel count only when the lock pins them.
    """
    have = {
        normalize(k): v
        for k, v in installed.items()
        if normalize(k) in pins or normalize(k) not in INSTALLER_TOOLS
    }
    found = []
    for name in sorted(set(pins) | set(have)):
        want, got = pins.get(name), have.get(name)
        if (want or "").split("+")[0] != (got or "").split("+")[0]:
            found.append((name, want or "-", got or "-"))
    return found


def describe_drift(rows, limit=4) -> str:
    """'numpy 1.23.5 -> 1.24.0, six - -> 1.16.0, ...' for a report cell."""
    parts = [f"{name} {want} -> {got}" for name, want, got in rows[:limit]]
    if len(rows) > limit:
        parts.append(f"{len(rows) - limit} more")
    return ", ".join(parts)
