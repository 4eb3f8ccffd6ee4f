"""A toy stage: writes value.txt = upstream value + its own --add; can pause or fail.

python -m tests.toy.stage --out OUT [--input DIR] --add N [--pause-file F]
    [--fail user|crash|exit0]
    [--helper]    (starts a helper process, as a stage's worker pool does; pid in OUT)
"""

import os
import subprocess
import sys
import time

from zoostage import cli
from zoostage.errors import UserError


def main(args):
    value = 0
    if args.input:
        with open(os.path.join(args.input, "value.txt")) as handle:
            value = int(handle.read())
    with open(os.path.join(args.out, "partial.txt"), "w") as handle:
        handle.write("started")
    if args.helper:
        # Ends quietly on any signal, like a pool worker (no KeyboardInterrupt traceback).
        quiet_sleep = "import signal, time; signal.signal(2, signal.SIG_DFL); time.sleep(120)"
        helper = subprocess.Popen([sys.executable, "-c", quiet_sleep])
        with open(os.path.join(args.out, "helper-pid"), "w") as handle:
            handle.write(str(helper.pid))
    if args.pause_file:
        with open(os.path.join(args.out, "pid"), "w") as handle:
            handle.write(str(os.getpid()))
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
    if args.fail == "exit0":
        sys.exit(0)  # a process that ends with 0 before it finished (a library's exit)
    if args.items:
        # A sharded stage: items k with k % N == I, one file each, plus a timing record.
        index, count = (int(v) for v in (args.shard or "0/1").split("/"))
        mine = [k for k in range(args.items) if k % count == index]
        os.makedirs(os.path.join(args.out, "items"))
        for k in mine:
            with open(os.path.join(args.out, "items", "%d.txt" % k), "w") as handle:
                handle.write(str(value + k))
        cli.write_json(
            os.path.join(args.out, "timing.json"),
            {
                "calls": len(mine),
                "images": len(mine),
                "mean_ms": 10.0,
                "p50_ms": 10.0,
                "p99_ms": 12.0,
                "throughput": 100.0,
                "device": args.device,
            },
        )
        cli.write_json(os.path.join(args.out, "detections.json"), [{"image_id": k} for k in mine])
    with open(os.path.join(args.out, "value.txt"), "w") as handle:
        handle.write(str(value + args.add))


def build_parser():
    parser = cli.parser("toy stage")
    parser.add_argument("--input")
    parser.add_argument("--add", type=int, default=1)
    parser.add_argument("--pause-file")
    parser.add_argument("--fail")
    parser.add_argument("--data")
    parser.add_argument("--items", type=int, default=0)
    parser.add_argument("--shard")
    parser.add_argument("--device")
    parser.add_argument("--helper", action="store_true")
    return parser


if __name__ == "__main__":
    cli.run(main, build_parser())
