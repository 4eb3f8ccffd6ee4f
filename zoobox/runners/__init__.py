"""Runners: how a stage's command is executed (host subprocess, docker container).

A runner turns a planned stage into the exact argv to run on this machine, says what
identifies the environment it runs in (for fingerprints), and runs it, streaming its
output. `--dry` prints the same argv without running it.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from zoobox.envs import EnvSpec


@dataclass
class StageCall:
    """One stage, ready to run: module, rendered arguments, where it writes."""

    recipe: str
    stage: str
    module: str
    args: list[str]
    out: Path
    env: EnvSpec
    needs_npu: bool = False
    devices: list[int] = field(default_factory=list)


def quote(argv: list[str]) -> str:
    return shlex.join(str(a) for a in argv)


def execute(argv: list[str], env: dict | None = None, cwd: Path | None = None) -> int:
    """Run argv with inherited stdout/stderr; Ctrl-C stops the child too."""
    process = subprocess.Popen(argv, env=env, cwd=cwd, start_new_session=False)
    try:
        return process.wait()
    except KeyboardInterrupt:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
        raise


class Runner:
    name = "base"

    def argv(self, call: StageCall) -> list[str]:
        raise NotImplementedError

    def env_identity(self, env: EnvSpec, dry: bool = False) -> dict:
        raise NotImplementedError

    def check(self, env: EnvSpec) -> None:
        """Raise UserError when `env` cannot run here, saying what to do."""

    def device_for(self, devices: list[int]) -> str:
        return str(devices[0]) if devices else "0"

    def run(self, call: StageCall) -> int:
        raise NotImplementedError


def process_env(extra: dict) -> dict:
    env = dict(os.environ)
    env.update(extra)
    return env
