"""A toy stage: writes value.txt = upstream value + its own --add; can pause or fail.

    python -m tests.toy.stage --out OUT [--input DIR] --add N [--pause-file F] [--fail user]
"""

import os
import time

from zoobox.stage import cli
from zoobox.stage.errors import UserError


def main(args):
    value = 0
    if args.input:
        with open(os.path.join(args.input, "value.txt")) as handle:
            value = int(handle.read())
    with open(os.path.join(args.out, "pid"), "w") as handle:
        handle.write(str(os.getpid()))
    with open(os.path.join(args.out, "partial.txt"), "w") as handle:
        handle.write("started")
    if args.pause_file:
        # Wait (up to 60 s) until the test removes the file: a window to kill us in.
        with open(args.pause_file, "w") as handle:
            handle.write(args.out)
        deadline = time.time() + 60
        while os.path.exists(args.pause_file) and time.time() < deadline:
            time.sleep(0.05)
    if args.fail == "user":
        raise UserError("toy stage refused its input")
    if args.fail == "crash":
        raise RuntimeError("toy stage crashed")
    with open(os.path.join(args.out, "value.txt"), "w") as handle:
        handle.write(str(value + args.add))


def build_parser():
    parser = cli.parser("toy stage")
    parser.add_argument("--input")
    parser.add_argument("--add", type=int, default=1)
    parser.add_argument("--pause-file")
    parser.add_argument("--fail")
    parser.add_argument("--data")
    return parser


if __name__ == "__main__":
    cli.run(main, build_parser())
