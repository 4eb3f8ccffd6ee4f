"""The command-line shell every stage module runs in.

A stage is `python -m some.module --out DIR ...`. `run(main, parser)` parses the
arguments, creates DIR, runs `main(args)`, and records the environment it saw in
DIR/env.json (the host side folds it into stage.json). A UserError ends the process
with one line on stderr and USER_ERROR_EXIT, never a traceback.
"""

import argparse
import json
import os
import sys

from zoostage.envinfo import environment
from zoostage.errors import USER_ERROR_EXIT, UserError

ENV_FILE = "env.json"


def parser(description):
    """An ArgumentParser with the one argument every stage has: --out."""
    result = argparse.ArgumentParser(description=description)
    result.add_argument("--out", required=True, help="output folder of this stage")
    return result


def write_json(path, data):
    """Write JSON through a temporary file so a reader never sees half of it."""
    tmp = path + ".tmp"
    with open(tmp, "w") as handle:
        json.dump(data, handle, indent=2, sort_keys=True)
        handle.write("\n")
    os.replace(tmp, path)


def run(main, argparser, argv=None):
    """Parse, run `main(args)`, record env.json; exit with one line on a UserError."""
    args = argparser.parse_args(argv)
    try:
        if not os.path.isdir(args.out):
            os.makedirs(args.out)
        main(args)
        write_json(os.path.join(args.out, ENV_FILE), environment())
    except UserError as error:
        sys.stderr.write("error: %s\n" % error)
        sys.stderr.flush()
        sys.exit(USER_ERROR_EXIT)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        sys.exit(130)
