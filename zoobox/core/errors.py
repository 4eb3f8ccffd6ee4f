"""Host-side errors. The same UserError class the stages use, so one handler serves both."""

import signal
import sys

from zoobox.core.children import signals_as_interrupts
from zoostage.errors import USER_ERROR_EXIT, UserError, describe_exit, signal_name

__all__ = [
    "USER_ERROR_EXIT",
    "StageFailed",
    "StageIncomplete",
    "StageStopped",
    "UserError",
    "main_guard",
]


class StageFailed(UserError):
    """A stage exited non-zero; its own output already said why."""

    def __init__(self, stage, returncode, command, logs=None):
        self.stage = stage
        self.returncode = returncode
        self.command = command
        where = f"; the NPU tools' logs are in {logs}" if logs else ""
        super().__init__(
            f"stage {stage} failed ({describe_exit(returncode)}){where}; earlier artifacts "
            f"are intact. Rerun by hand: {command}"
        )


class StageIncomplete(UserError):
    """A stage's process reported success but the stage never recorded its completion."""

    def __init__(self, stage, why, command):
        self.stage = stage
        super().__init__(
            f"stage {stage} did not finish: {why} (its runner reported exit 0, which a "
            "container engine may do for a container that failed); its output was "
            f"discarded and earlier artifacts are intact. Rerun by hand: {command}"
        )


class StageStopped(UserError):
    """A stage stopped on a user error and already printed its one `error:` line."""

    def __init__(self, stage):
        self.stage = stage
        super().__init__(
            f"stage {stage} stopped (see its error above); earlier artifacts are intact"
        )


def main_guard(func):
    """Run func(); a UserError becomes one line on stderr and exit code 2.

    A stage that stopped on a user error already printed its own `error:` line. An
    interrupt (Ctrl-C, or SIGTERM / SIGHUP turned into one) is one line too, and the
    exit status a shell gives a process killed by that signal. Children started with
    zoobox.core.children stop with the task.
    """
    try:
        with signals_as_interrupts():
            return func()
    except StageStopped:
        raise SystemExit(2) from None  # the stage's own `error:` line says it all
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt as interrupt:
        signum = getattr(interrupt, "signum", signal.SIGINT)
        how = "Ctrl-C (SIGINT)" if signum == signal.SIGINT else signal_name(signum)
        print(
            f"error: interrupted by {how}; earlier artifacts are intact, and the next run "
            "continues from the last complete stage",
            file=sys.stderr,
        )
        raise SystemExit(128 + signum) from None
