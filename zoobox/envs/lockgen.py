"""Making the locks (`invoke envs.lock`): uv resolves each env for its Python and platform.

    uv pip compile --generate-hashes --python <pyenv's CPython X.Y> \
        --python-platform <arch>-manylinux_2_17 -o <env>.<arch>.lock <env>.txt [<env>-npu.txt]

uv (pinned in pyproject's dev extra) resolves for another architecture from the package
index's metadata, so one x86_64 machine locks both x86_64 and aarch64. It runs with the
env's own interpreter where this machine has it (pyenv), else for its version. A lock that
exists is the starting point (uv keeps its versions unless `--upgrade PKG` names them, or
the spec now asks otherwise); an NPU lock starts from the CPU lock, so both agree where
they can. Where PyPI cannot satisfy the spec on an architecture, a `.nolock` records uv's
reason instead (zoobox.envs.locks).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

from zoobox.core.errors import UserError
from zoobox.core.paths import repo_relative
from zoobox.envs import requirements
from zoobox.envs.interpreters import find_interpreter
from zoobox.envs.locks import INPUT_KEY, MANYLINUX, LockTarget, targets

UV_TIMEOUT = 600
# uv's word for "these requirements cannot be satisfied here", as opposed to a network error.
UNSATISFIABLE = "No solution found when resolving dependencies"


def find_uv() -> list[str]:
    """The command that runs uv: the one pip installed with the dev extra, else uv on PATH."""
    try:
        from uv import find_uv_bin

        return [find_uv_bin()]
    except (ImportError, FileNotFoundError):
        pass
    on_path = shutil.which("uv")
    if on_path:
        return [on_path]
    raise UserError(
        "uv is not installed: `python3 -m pip install -e '.[dev]'` installs the pinned one"
    )


@dataclass(frozen=True)
class Options:
    """How to resolve, beyond the spec: what to upgrade, extra places to find wheels."""

    upgrade: tuple[str, ...] = ()  # packages to move to their newest allowed version
    find_links: str | None = None  # a folder of wheels (e.g. a vendor's aarch64 torch)
    extra_index_url: str | None = None  # another index (e.g. download.pytorch.org/whl/cpu)


def uv_command(target: LockTarget, output: str, options: Options, uv=None) -> list[str]:
    """The uv command for `target`; it runs in docker/requirements/ (inputs by file name)."""
    command = [*(uv or find_uv()), "pip", "compile", "--quiet", "--no-config"]
    command += ["--generate-hashes", "--no-header", "--annotation-style", "split"]
    command += ["--python-platform", f"{target.arch}-{MANYLINUX}"]
    interpreter, _tried = find_interpreter(target.spec.python)
    if interpreter is not None:
        command += ["--python", interpreter.path]
    else:  # uv resolves for the version from the index's metadata all the same
        command += ["--python-version", target.spec.python]
    for package in options.upgrade:
        command += ["--upgrade-package", package]
    if options.find_links:
        command += ["--find-links", str(Path(options.find_links).resolve())]
    if options.extra_index_url:
        command += ["--extra-index-url", options.extra_index_url]
    command += ["-o", output, *(name for name, _ in target.inputs())]
    return command


def header(target: LockTarget, options: Options) -> str:
    spec = target.spec
    lines = [
        f"# Lock of envs/{spec.name}.yaml ({target.keys}) for CPython {spec.python} on "
        f"{target.arch} ({MANYLINUX}):",
        "# every package pinned, with the hashes of its files. Made by "
        f"`invoke envs.lock --env {spec.name}` (uv); never edited by hand.",
    ]
    if options.find_links or options.extra_index_url:
        where = options.extra_index_url or f"wheels in {repo_relative(options.find_links)}"
        lines.append(f"# Resolved with {where}: the build needs them too.")
    lines.append(INPUT_KEY + target.input_hash())
    return "\n".join(lines) + "\n"


def nolock_text(target: LockTarget, uv_output: str) -> str:
    spec = target.spec
    said = [
        line.strip()
        for line in uv_output.splitlines()
        if line.strip() and not line.lstrip().startswith("warning:")
    ]
    lines = [
        f"# No lock: envs/{spec.name}.yaml ({target.keys}) cannot be resolved from the index "
        f"for CPython {spec.python} on {target.arch} ({MANYLINUX}).",
        INPUT_KEY + target.input_hash(),
    ]
    lines += [f"# uv: {line}" for line in said if not line.startswith("error: No solution")]
    return "\n".join(lines) + "\n"


def _write(path: Path, text: str) -> None:
    temp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    temp.write_text(text)
    os.replace(temp, path)


def _starting_point(target: LockTarget) -> str:
    """What uv starts from: the target's own lock, else (NPU) the CPU lock beside it."""
    if target.lock_path.is_file():
        return target.lock_path.read_text()
    base = LockTarget(target.spec, False, target.arch).lock_path
    return base.read_text() if target.npu and base.is_file() else ""


def compile_target(target: LockTarget, options: Options = Options(), uv=None) -> str:
    """Resolve one target; write its .lock (or .nolock); returns what happened, in words."""
    folder = requirements.REQUIREMENTS
    requirements.write_requirements([target.spec])
    output = folder / f".{target.label}.lock.tmp-{uuid.uuid4().hex[:8]}"
    output.write_text(_starting_point(target))
    try:
        result = subprocess.run(
            uv_command(target, output.name, options, uv),
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=UV_TIMEOUT,
            env=dict(os.environ, UV_NO_PROGRESS="1"),
        )
        resolved = output.read_text() if result.returncode == 0 else ""
    except subprocess.TimeoutExpired:
        raise UserError(f"uv took over {UV_TIMEOUT} s to lock {target.label}: retry") from None
    finally:
        output.unlink(missing_ok=True)
    if result.returncode != 0:
        said = (result.stderr or result.stdout).strip()
        if UNSATISFIABLE not in said:
            last = said.splitlines()[-1] if said else f"exit {result.returncode}"
            raise UserError(
                f"uv could not lock {target.label} ({last}): check the network or the index, "
                "then run `invoke envs.lock` again"
            )
        _write(target.nolock_path, nolock_text(target, said))
        target.lock_path.unlink(missing_ok=True)
        return f"{repo_relative(target.nolock_path)}: cannot be locked (recorded why)"
    text = header(target, options) + resolved
    before = target.lock_path.read_text() if target.lock_path.is_file() else None
    if before != text:
        _write(target.lock_path, text)
    target.nolock_path.unlink(missing_ok=True)
    count = sum(1 for line in resolved.splitlines() if line[:1].isalnum())
    verb = "unchanged" if before == text else "wrote"
    return f"{verb} {repo_relative(target.lock_path)} ({count} packages)"


def lock_envs(specs, arches, options: Options = Options(), say=None) -> list[str]:
    """Lock every target of `specs` on `arches` (CPU locks first: NPU locks start from them)."""
    say = say or (lambda text: print(text, flush=True))
    uv = find_uv()
    done = []
    for spec in specs:
        for target in sorted(targets(spec, arches), key=lambda t: t.npu):
            line = compile_target(target, options, uv)
            say(line)
            done.append(line)
    if not done:
        say("no env with packages to lock")
    return done


def check_or_lock(
    env: str | None = None,
    arch: str | None = None,
    upgrade: tuple = (),
    find_links: str | None = None,
    extra_index_url: str | None = None,
    check: bool = False,
) -> None:
    """What `invoke envs.lock` does: check the locks offline, or regenerate them."""
    from zoobox.core.envspec import get_env, load_envs
    from zoobox.envs.locks import ARCHES, check_locks

    specs = [get_env(env)] if env else [s for s in load_envs().values() if s.python]
    if arch is not None and arch not in ARCHES:
        raise UserError(f"--arch {arch}: locks are made for {' or '.join(ARCHES)}")
    if check:
        problems = check_locks(specs)
        if problems:
            raise UserError("\n".join(problems))
        print(f"every lock in {repo_relative(requirements.REQUIREMENTS)} is current")
        return
    if find_links and not Path(find_links).is_dir():
        raise UserError(f"--find-links {find_links}: no such folder")
    options = Options(upgrade, find_links, extra_index_url)
    lock_envs(specs, (arch,) if arch else ARCHES, options)
