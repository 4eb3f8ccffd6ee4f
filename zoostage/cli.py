"""The command-line shell every stage module runs in.

A stage is `python -m some.module --out DIR ...`. `run(main, parser)` parses the
arguments, creates DIR, runs `main(args)`, and records the environment it saw in
DIR/env.json (the host side folds it into stage.json). A UserError ends the process
with one line on stderr and USER_ERROR_EXIT, never a traceback.

The stage's last act is DIR/status.json, {"status": "ok"}: the proof that it finished.
The host accepts an output only when it holds that record, never on an exit code alone
(a container engine may report 0 for a container that failed: podman's `docker run
--rm`). A stage stopped by a UserError records {"status": "error", "exit": 3, ...}.
"""

import argparse
import json
import os
import signal
import sys

from zoostage.envinfo import environment
from zoostage.errors import USER_ERROR_EXIT, UserError, signal_name

# Set by zoobox for the stages it starts: "1" when the stage leads its own process group.
GROUP_ENV = "ZOOBOX_STAGE_GROUP"

ENV_FILE = "env.json"
# Written last, by the stage process itself: what the host accepts an output by.
STATUS_FILE = "status.json"


def parser(description):
    """An ArgumentParser with the one argument every stage has: --out."""
    result = argparse.ArgumentParser(description=description)
    result.add_argument("--out", required=True, help="output folder of this stage")
    return result


def call(function, args, **extra):
    """`function` called with the parsed arguments its parameters name, plus `extra`.

    A stage's arguments are declared once, in its parser; the function that does the work
    names its parameters after them (`--batch-size` is `batch_size`), so main() need not
    list them again. A parameter with no argument and no default is a programming error.
    """
    import inspect

    values = vars(args)
    kwargs = {}
    for name, parameter in inspect.signature(function).parameters.items():
        if name in extra:
            kwargs[name] = extra[name]
        elif name in values:
            kwargs[name] = values[name]
        elif parameter.default is inspect.Parameter.empty:
            raise TypeError("%s needs %r, which the parser does not give" % (function, name))
    return function(**kwargs)


def open_new(path, mode="w"):
    """A file created afresh at `path`, for writing; never the target of a link.

    Whatever was at `path` (a file or a link left by an earlier run, or planted) is
    removed first; O_EXCL | O_NOFOLLOW make sure the file opened is the one created
    here. Use it for temporary names that are then renamed over the real one.
    """
    try:
        os.unlink(path)
    except OSError:
        pass
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    return os.fdopen(os.open(path, flags, 0o644), mode)


def write_json(path, data):
    """Write JSON through a temporary file so a reader never sees half of it.

    The temporary file is made by open_new (a link planted at its name is replaced,
    never written through); os.replace then swaps names, not targets.
    """
    tmp = path + ".tmp"
    with open_new(tmp) as handle:
        json.dump(data, handle, indent=2, sort_keys=True)
        handle.write("\n")
    os.replace(tmp, path)


def _record_status(out, status):
    """OUT/status.json; a failure to write it only means the host sees no completion."""
    try:
        write_json(os.path.join(out, STATUS_FILE), status)
    except (IOError, OSError):
        pass


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP: the stage stops as on Ctrl-C (cleanup runs, one line)."""

    def __init__(self, signum):
        KeyboardInterrupt.__init__(self, signum)
        self.signum = signum


def _raise_terminated(signum, frame):
    raise Terminated(signum)


def _stop_own_group():
    """Take down helpers (worker processes) when zoobox made this stage a group leader.

    zoobox starts each stage in a process group of its own and says so in the
    environment; a stage run by hand leaves its shell's group alone.
    """
    if os.environ.get(GROUP_ENV) != "1" or os.getpgrp() != os.getpid():
        return
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    os.killpg(os.getpgrp(), signal.SIGTERM)


def run(main, argparser, argv=None):
    """Parse, run `main(args)`, record env.json; exit with one line on a UserError.

    Ctrl-C, SIGTERM and SIGHUP (also sent when zoobox dies) stop the stage with one
    line ("interrupted" / "terminated by SIGTERM") and the exit status 128 + signal.
    """
    args = argparser.parse_args(argv)
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _raise_terminated)
    try:
        if not os.path.isdir(args.out):
            os.makedirs(args.out)
        main(args)
        write_json(os.path.join(args.out, ENV_FILE), environment())
        # The last act: nothing after this line may fail, so "ok" means finished.
        write_json(os.path.join(args.out, STATUS_FILE), {"status": "ok"})
    except UserError as error:
        sys.stderr.write("error: %s\n" % error)
        sys.stderr.flush()
        if os.path.isdir(args.out):
            _record_status(
                args.out, {"status": "error", "exit": USER_ERROR_EXIT, "error": str(error)}
            )
        sys.exit(USER_ERROR_EXIT)
    except KeyboardInterrupt as interrupt:
        signum = getattr(interrupt, "signum", signal.SIGINT)
        _stop_own_group()  # first: when zoobox died, nobody reads what we write
        try:
            if signum == signal.SIGINT:
                sys.stderr.write("interrupted\n")
            else:
                sys.stderr.write("terminated by %s\n" % signal_name(signum))
            sys.stderr.flush()
        except (IOError, OSError):  # the reading end is gone with zoobox
            pass
        sys.exit(128 + signum)
