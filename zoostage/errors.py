"""Errors a user can cause, reported as one line with no traceback."""


class UserError(Exception):
    """Something the user can fix: a missing dataset, a wrong checkpoint, a corrupt image.

    The message is the whole report: say what is wrong and what to do about it.
    """


# Exit status of a stage that stopped on a UserError: the host side knows the stage
# already printed its one-line reason and adds no traceback of its own.
USER_ERROR_EXIT = 3


def signal_name(number):
    """'SIGKILL' for 9."""
    import signal

    try:
        return signal.Signals(number).name
    except ValueError:
        return "signal %d" % number


def describe_exit(code):
    """How a process ended, in words: -9 -> 'killed by SIGKILL (signal 9)'.

    Shells and container engines report a process killed by signal N as 128 + N.
    """
    if code is not None and code < 0:
        return "killed by %s (signal %d)" % (signal_name(-code), -code)
    if code is not None and 128 < code < 128 + 65:
        return "exit %d: 128 + %d, killed by %s" % (code, code - 128, signal_name(code - 128))
    return "exit %s" % code
