"""The venv runner: each stage with the interpreter of its env's virtual environment.

The venv is built from the env spec (its CPython version and pins) by `invoke envs.build`
and cached by the hash of what it is made from (see zoobox.envs.venvs); this runner only uses
it, and says how to build it when it is missing. Stages of the `host` env run with the
current interpreter, as under the host runner.

NPU envs (aie, atc, train) get only their pip packages in the venv: CANN and Torch_AIE
are not on PyPI. When the host has them, their set_env scripts are sourced before the
stage starts (`bash -c 'source ... && exec python -m ...'`); when it does not, one line
says which NPU parts are missing, and the CPU parts of the stages still run.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

from zoobox.core.envspec import EnvSpec
from zoobox.core.errors import UserError
from zoobox.core.paths import REPO
from zoobox.envs.interpreters import find_interpreter, missing_interpreter_error
from zoobox.envs.venvs import VenvCache, venv_hash
from zoobox.runners.base import (
    Completed,
    Runner,
    StageCall,
    execute,
    process_env,
    stage_workdir,
)
from zoobox.runners.host import HostRunner

ASCEND_ROOT = Path("/usr/local/Ascend")


class VenvRunner(Runner):
    name = "venv"

    def __init__(self, venvs: VenvCache, ascend_root: Path = ASCEND_ROOT, say=None):
        self.venvs = venvs
        self.ascend_root = Path(ascend_root)
        self.host = HostRunner()
        self.say = say or (lambda text: print(text, flush=True))
        self._checked: set[str] = set()
        self._warned: set[str] = set()

    # -- NPU parts from the host ---------------------------------------------------------
    def npu_scripts(self, env: EnvSpec) -> list[tuple[str, Path]]:
        """(part, set_env script) for the NPU software this env needs from the host."""
        if not env.npu:
            return []
        scripts = [("CANN", self.ascend_root / "ascend-toolkit" / "set_env.sh")]
        if env.npu_stack.get("torch_aie"):
            scripts.append(("Torch_AIE", self.ascend_root / "aie" / "set_env.sh"))
        return scripts

    def sourced(self, env: EnvSpec) -> list[str]:
        return [str(path) for _, path in self.npu_scripts(env) if path.is_file()]

    # -- the command ---------------------------------------------------------------------
    def python(self, env: EnvSpec) -> Path:
        return self.venvs.python(env)

    def argv(self, call: StageCall) -> list[str]:
        if call.env.python is None:
            return self.host.argv(call)
        command = [str(self.python(call.env)), "-m", call.module, *call.args]
        command += ["--out", str(call.out)]
        scripts = self.sourced(call.env)
        if not scripts:
            return command
        sources = " && ".join(f"source {shlex.quote(script)}" for script in scripts)
        return ["bash", "-c", f"{sources} && exec {shlex.join(command)}"]

    def environment(self, call: StageCall) -> dict:
        venv = self.venvs.path(call.env)
        environment = {
            # Only the repository: the caller's PYTHONPATH belongs to another Python.
            "PYTHONPATH": str(REPO),
            "VIRTUAL_ENV": str(venv),
            "PATH": str(venv / "bin") + os.pathsep + os.environ.get("PATH", ""),
            "PYTHONNOUSERSITE": "1",
            "ZOOBOX_ENV": call.env.name,
            "PYTHONUNBUFFERED": "1",
        }
        lock_file = self.venvs.lock_file(call.env)
        if lock_file is not None:  # the stage records it in env.json (provenance)
            environment["ZOOBOX_LOCK_FILE"] = str(lock_file)
        if call.needs_npu and call.logs is not None:
            environment["ASCEND_PROCESS_LOG_PATH"] = str(call.logs)  # as the other runners do
        return environment

    # -- identity, checks, running -------------------------------------------------------
    def env_identity(self, env: EnvSpec, dry: bool = False) -> dict:
        if env.python is None:
            return self.host.env_identity(env, dry)
        marker = self.venvs.marker(env) or {}
        identity = {
            "runner": self.name,
            "env": env.name,
            "spec_hash": venv_hash(env),
            "executable": str(self.python(env)),
            "interpreter": (marker.get("interpreter") or {}).get("path"),
            "python": marker.get("python"),
            "versions": marker.get("packages"),
            "lock": marker.get("lock"),
        }
        if env.npu:
            identity["sourced"] = self.sourced(env)
        return identity

    def check(self, env: EnvSpec) -> None:
        if env.python is None or env.name in self._checked:
            return
        state = self.venvs.state(env)
        if state.broken:
            raise UserError(
                f"the venv of env {env.name} at {state.path} is broken ({state.broken}): "
                f"rebuild it with `invoke envs.build --env {env.name}`"
            )
        if not state.built:
            found, tried = find_interpreter(env.python, self.venvs.pythons)
            if found is None:
                raise missing_interpreter_error(env, tried)
            raise UserError(
                f"the venv of env {env.name} (Python {env.python}, "
                f"{', '.join(env.packages) or 'no packages'}) is not built: run "
                f"`invoke envs.build --env {env.name}`"
            )
        self._checked.add(env.name)
        self._warn_missing_npu(env)

    def _warn_missing_npu(self, env: EnvSpec) -> None:
        missing = [(part, path) for part, path in self.npu_scripts(env) if not path.is_file()]
        if missing and env.name not in self._warned:
            self._warned.add(env.name)
            parts = ", ".join(f"{part} ({path})" for part, path in missing)
            self.say(
                f"venv {env.name}: no {parts} on this host: NPU backends are unavailable, "
                "the CPU parts run"
            )

    def run(self, call: StageCall) -> Completed:
        if call.env.python is None:
            return self.host.run(call)
        env = process_env(self.environment(call))
        env.pop("PYTHONHOME", None)
        if call.needs_npu and call.logs is not None:
            call.logs.mkdir(parents=True, exist_ok=True)
        with stage_workdir(call) as workdir:  # not the checkout: CANN writes into it
            return execute(self.argv(call), env=env, cwd=workdir, keep_fds=call.keep_fds)
