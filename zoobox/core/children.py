"""Child processes that end with the task that started them.

Every long host-side task (a stage, an image build, a venv build) runs its commands as
children that lead a process group of their own and get SIGTERM when zoobox dies
(Linux: PR_SET_PDEATHSIG). Ctrl-C, SIGTERM and SIGHUP reaching zoobox are forwarded to
that group, which gets a grace period to stop before SIGKILL; then `on_stop` undoes
what the child started elsewhere (a build's containers on the engine side).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import signal
import subprocess
import sys
import threading

FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# How long a child may take to stop after the signal is forwarded, before SIGKILL.
STOP_GRACE_SECONDS = 10.0
_PR_SET_PDEATHSIG = 1


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP reached zoobox: handled like Ctrl-C, forwarded as it came."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def signal_of(interrupt: BaseException) -> int:
    """The signal an interrupt stands for: SIGINT for Ctrl-C, else the one received."""
    return getattr(interrupt, "signum", signal.SIGINT)


@contextlib.contextmanager
def signals_as_interrupts():
    """While the block runs (main thread only), SIGTERM and SIGHUP raise Terminated.

    A task stopped by `kill` or a closed terminal then unwinds as Ctrl-C does: children
    are stopped, temporary folders removed, locks released last.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def raise_terminated(signum, frame):
        raise Terminated(signum)

    previous = {sig: signal.signal(sig, raise_terminated) for sig in FORWARDED_SIGNALS[1:]}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@functools.lru_cache(maxsize=None)
def _prctl():
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


def die_with_parent_hook():
    """A preexec_fn that makes the child get SIGTERM when zoobox dies (Linux), or None.

    Resolved before the fork: the child then makes one prctl call and nothing else
    (a preexec_fn must not take locks another thread may hold).
    """
    prctl = _prctl() if sys.platform.startswith("linux") else None
    if prctl is None:
        return None
    parent = os.getpid()

    def hook():
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # zoobox died before the prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return hook


def signal_group(process: subprocess.Popen, signum: int) -> None:
    """Signal the group the child leads: the helpers it started get it too."""
    try:
        os.killpg(process.pid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def stop_child(process: subprocess.Popen, signum: int, grace: float = STOP_GRACE_SECONDS):
    """Forward `signum` to the child's group; SIGKILL the group if it outlives `grace`."""
    signal_group(process, signum)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        signal_group(process, signal.SIGKILL)
        process.wait()


def run_child(argv, *, on_stop=None, grace: float = STOP_GRACE_SECONDS, **popen):
    """subprocess.run's job for a long command that must not outlive its task.

    The child leads its own process group and dies with zoobox; an interrupt (Ctrl-C,
    or SIGTERM / SIGHUP under `signals_as_interrupts`) is forwarded to the group, the
    group is killed after `grace`, `on_stop()` cleans up what the child started
    elsewhere, and the interrupt goes on up. `popen` goes to subprocess.Popen (env, cwd,
    stdout, stderr, text, pass_fds...); with stdout/stderr PIPE, read them through
    `on_output(process)` instead of letting this function wait.
    """
    on_output = popen.pop("on_output", None)
    process = subprocess.Popen(
        argv, start_new_session=True, preexec_fn=die_with_parent_hook(), **popen
    )
    try:
        if on_output is not None:
            on_output(process)
        code = process.wait()
    except BaseException as interrupt:
        stop_child(
            process,
            signal_of(interrupt) if isinstance(interrupt, KeyboardInterrupt) else signal.SIGTERM,
            grace,
        )
        if on_stop is not None:
            on_stop()
        raise
    finally:
        # Helpers the command left behind in its group end with it.
        signal_group(process, signal.SIGKILL)
    return code
