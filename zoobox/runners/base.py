"""Runners: how a stage's command is executed (host subprocess, docker container).

A runner turns a planned stage into the exact argv to run on this machine, says what
identifies the environment it runs in (for fingerprints), and runs it, streaming its
output. `--dry` prints the same argv without running it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from zoobox.core.envspec import EnvSpec
from zoobox.core.text import quote  # noqa: F401 - runners and the engine use it from here


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
    uses_data: bool = True  # the stage takes {data}: containers get the dataset mounted
    logs: Path | None = None  # where NPU tools keep their logs (ASCEND_PROCESS_LOG_PATH)


# How much of a stage's output is kept for diagnosing a failure.
TAIL_BYTES = 64 * 1024


class Completed:
    """A finished stage process: its exit code and the tail of its output."""

    def __init__(self, returncode: int, tail: str = ""):
        self.returncode = returncode
        self.tail = tail


def execute(argv: list[str], env: dict | None = None, cwd: Path | None = None) -> Completed:
    """Run argv, passing its output through as it comes and keeping the tail.

    stdout and stderr are merged. Ctrl-C stops the child too.
    """
    env = dict(os.environ if env is None else env)
    # The child writes into a pipe; let its progress lines still redraw in place when
    # we print to a terminal.
    if sys.stdout.isatty():
        env.setdefault("ZOOBOX_TTY", "1")
    process = subprocess.Popen(
        argv, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    tail = bytearray()
    out = sys.stdout.buffer if hasattr(sys.stdout, "buffer") else None
    try:
        while True:
            chunk = (
                process.stdout.read1(65536)
                if hasattr(process.stdout, "read1")
                else process.stdout.read(4096)
            )
            if not chunk:
                break
            if out is not None:
                out.write(chunk)
                out.flush()
            else:
                sys.stdout.write(chunk.decode(errors="replace"))
            tail += chunk
            del tail[:-TAIL_BYTES]
        code = process.wait()
    except KeyboardInterrupt:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
        raise
    return Completed(code, tail.decode(errors="replace"))


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

    def devices_for(self, devices: list[int]) -> list[int]:
        """The ids a process sees for `devices` (a container renumbers from 0)."""
        return list(devices)

    def npu_identity(self) -> tuple[int, set[int]]:
        """(uid, gids) the stage processes open the NPU device nodes with."""
        return os.getuid(), {os.getgid(), *os.getgroups()}

    def run(self, call: StageCall) -> Completed:
        raise NotImplementedError


def process_env(extra: dict) -> dict:
    env = dict(os.environ)
    env.update(extra)
    return env
