"""The host runner: each stage in a subprocess of the current interpreter."""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata
from pathlib import Path

from zoobox.core.envspec import EnvSpec
from zoobox.core.paths import REPO
from zoobox.runners.base import (
    Completed,
    Runner,
    StageCall,
    execute,
    process_env,
    stage_workdir,
)

# Versions that decide a stage's numbers; read from package metadata (no imports).
_PACKAGES = ("torch", "numpy", "onnxruntime", "opencv-python-headless", "torch_aie")


def _installed(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


class HostRunner(Runner):
    name = "host"

    def __init__(self, python: str = sys.executable):
        self.python = python

    def argv(self, call: StageCall) -> list[str]:
        return [self.python, "-m", call.module, *call.args, "--out", str(call.out)]

    def env_identity(self, env: EnvSpec, dry: bool = False) -> dict:
        identity = {
            "runner": self.name,
            "env": env.name,
            "python": platform.python_version(),
            "executable": self.python,
        }
        identity.update({name: _installed(name) for name in _PACKAGES})
        return identity

    def environment(self, call: StageCall) -> dict:
        path = os.environ.get("PYTHONPATH")
        env = {
            "PYTHONPATH": str(REPO) + (os.pathsep + path if path else ""),
            # The stage runs in this interpreter, whichever env the recipe names for it
            # elsewhere: its report must not say `aie` for a CPU run here.
            "ZOOBOX_ENV": "host",
            "PYTHONUNBUFFERED": "1",
        }
        if call.needs_npu and call.logs is not None:
            # The same place as in containers: the recipe's logs/<stage>/ folder.
            env["ASCEND_PROCESS_LOG_PATH"] = str(call.logs)
        return env

    def run(self, call: StageCall) -> Completed:
        if call.needs_npu and call.logs is not None:
            Path(call.logs).mkdir(parents=True, exist_ok=True)
        env = process_env(self.environment(call))
        with stage_workdir(call) as workdir:  # not the checkout: CANN writes into it
            return execute(self.argv(call), env=env, cwd=workdir, keep_fds=call.keep_fds)
