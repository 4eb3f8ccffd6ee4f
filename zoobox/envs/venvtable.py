"""What the `envs` tasks show and do over the venv cache: the list (with drift), build all."""

from __future__ import annotations

import sys

from zoobox.core.errors import UserError
from zoobox.envs import locks, venvs
from zoobox.envs.interpreters import find_interpreter
from zoobox.envs.venvfs import dir_size, human_size
from zoobox.envs.venvs import VenvCache


def lock_state(cache: VenvCache, spec) -> str:
    """The venv's lock, and whether what is installed now still equals it (drift)."""
    lock_file = cache.lock_file(spec)
    if lock_file is None or not lock_file.is_file():
        return "-"  # no packages: nothing to lock
    lock = locks.read_lock(lock_file)
    drifted = locks.drift(lock.pins, venvs.scan_interpreter(cache.python(spec))["packages"])
    if drifted:
        return f"DRIFT from {lock.id}: {locks.describe_drift(drifted)}"
    return f"{lock.id}, installed = lock"


def _lock_problem(spec) -> str:
    """For a venv not built: the lock a build would install, or why there is none."""
    found = locks.targets(spec, (locks.machine_arch(),))
    if not found:
        return "-"
    target = found[0]
    if locks.target_problems(target):
        return f"not current: run `invoke envs.lock --env {spec.name}`"
    if not target.lock_path.is_file():
        return f"none for {target.arch} (see {target.nolock_path.name})"
    return f"would install {locks.read_lock(target.lock_path).id}"


def list_table(cache: VenvCache, specs: dict) -> str:
    """One row per env: Python wanted and found, venv built or not, its size, its lock."""
    from zoobox.core.text import table

    rows = []
    for spec in specs.values():
        if spec.python is None:
            rows.append([spec.name, "this one", sys.executable, "not needed (host)", "-", "-"])
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
                lock_state(cache, spec) if state.ok else _lock_problem(spec),
            ]
        )
    return table(rows, ["env", "python wanted", "python found", "venv", "size", "lock"])


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
            cache.note(f"venv {spec.name}: up to date at {result.path}")
    if failed:
        raise UserError(
            f"{len(failed)} of {len(chosen)} venvs could not be built ({', '.join(failed)}); "
            "see the errors above"
        )
