"""Runners: how a stage's command is executed (host subprocess, docker container).

A runner turns a planned stage into the exact argv to run on this machine, says what
identifies the environment it runs in (for fingerprints), and runs it, streaming its
output. `--dry` prints the same argv without running it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from zoobox.core.children import (  # noqa: F401 - the engine and shards use them from here
    FORWARDED_SIGNALS,
    Terminated,
    die_with_parent_hook,
    signal_group,
    signal_of,
    signals_as_interrupts,
)
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
    keep_fds: tuple[int, ...] = ()  # stay open in the stage process (the recipe lock)


# How much of a stage's output is kept for diagnosing a failure.
TAIL_BYTES = 64 * 1024
# How long a stage may take to stop after the signal is forwarded, before SIGKILL.
STOP_GRACE_SECONDS = 10.0
# Told to a stage started here: it leads a process group made for it (zoostage.cli
# takes that group down when it is terminated).
GROUP_ENV = "ZOOBOX_STAGE_GROUP"


class Completed:
    """A finished stage process: its exit code and the tail of its output."""

    def __init__(self, returncode: int, tail: str = ""):
        self.returncode = returncode
        self.tail = tail


# Stage processes running now; an interrupt in the main thread stops them all (sharded
# stages run theirs from worker threads).
_LIVE: set = set()
_LIVE_LOCK = threading.Lock()


@contextlib.contextmanager
def _interrupts_deferred():
    """Further Ctrl-C / SIGTERM / SIGHUP wait until the block is done (main thread)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending = []
    previous = {
        sig: signal.signal(sig, lambda s, f: pending.append(s)) for sig in FORWARDED_SIGNALS
    }
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def stop_all(signum: int, grace: float = STOP_GRACE_SECONDS) -> None:
    """Forward `signum` to every live stage's group; SIGKILL what still runs after `grace`.

    Returns when every stage process has exited: only then may the lock go.
    """
    with _LIVE_LOCK:
        processes = list(_LIVE)
    with _interrupts_deferred():
        for process in processes:
            signal_group(process, signum)
        deadline = time.monotonic() + grace
        for process in processes:
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                signal_group(process, signal.SIGKILL)
                process.wait()


def _pump(process: subprocess.Popen, tail: bytearray) -> None:
    """Copy the child's output to ours as it comes, keeping the last TAIL_BYTES."""
    out = sys.stdout.buffer if hasattr(sys.stdout, "buffer") else None
    read = process.stdout.read1 if hasattr(process.stdout, "read1") else process.stdout.read
    while True:
        chunk = read(65536)
        if not chunk:
            return
        if out is not None:
            out.write(chunk)
            out.flush()
        else:
            sys.stdout.write(chunk.decode(errors="replace"))
        tail += chunk
        del tail[:-TAIL_BYTES]


def execute(
    argv: list[str], env: dict | None = None, cwd: Path | None = None, keep_fds=()
) -> Completed:
    """Run argv, passing its output through as it comes and keeping the tail.

    stdout and stderr are merged. The child leads a process group of its own and gets
    SIGTERM if zoobox dies (Linux); Ctrl-C, SIGTERM and SIGHUP reaching zoobox are
    forwarded to that group, and its last words ("interrupted") still come through.
    `keep_fds` stay open in the child (the recipe lock: held while any stage lives).
    """
    env = dict(os.environ if env is None else env)
    # The child writes into a pipe; let its progress lines still redraw in place when
    # we print to a terminal.
    if sys.stdout.isatty():
        env.setdefault("ZOOBOX_TTY", "1")
    env[GROUP_ENV] = "1"
    process = subprocess.Popen(
        argv,
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=die_with_parent_hook(),
        pass_fds=tuple(keep_fds),
    )
    with _LIVE_LOCK:
        _LIVE.add(process)
    tail = bytearray()
    reader = threading.Thread(target=_pump, args=(process, tail), daemon=True)
    reader.start()
    try:
        code = process.wait()
        # Helpers the stage left behind in its group end with it: nothing of the run
        # outlives the run (or keeps the lock, or the output pipe, open).
        signal_group(process, signal.SIGKILL)
    except KeyboardInterrupt as interrupt:  # Ctrl-C, or Terminated
        stop_all(signal_of(interrupt))
        reader.join(STOP_GRACE_SECONDS)  # the stage's last lines
        raise
    finally:
        with _LIVE_LOCK:
            _LIVE.discard(process)
    reader.join(STOP_GRACE_SECONDS)
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
