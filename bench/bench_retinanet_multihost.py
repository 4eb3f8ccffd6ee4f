"""RetinaNet training: 2 hosts x 2 gloo processes against 1 host x 4, measured in one run.

    sudo python3 bench/bench_retinanet_multihost.py [--iters 16] [--size 128] [--images 8]

The two hosts are two Linux network namespaces joined by a veth pair (tests/netns.py:
192.0.2.1 and 192.0.2.2, deleted afterwards), each running `invoke retinanet.train
--nnodes 2 --devices 0,1` as the seed's train_performance_multinodes.sh runs one command
per host; the one host is `invoke retinanet.train --devices 0,1,2,3` on this machine.
Same generated COCO sample, random init, global batch 4 (1 image per process), one
thread per process, --iters iterations each. Prints each run's steady images/s (train.json:
the iterations after the first 5), its wall time, the ratio, and the load average before
and after each run: on a shared machine the numbers move with the load, so quote them
with it. On one machine both runs share its cores: the ratio is the cost of the
namespaces' network path (veth, TCP between "hosts") against the loopback, not of a
real network. Asserts nothing: a bench. Needs root and `ip`.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from tests import netns  # noqa: E402


def params(args):
    return {
        "train_split": "val2017",
        "epochs": args.iters,
        "max_iters": args.iters,
        "train_batch_size": 1,
        "lr": 0.005,
        "warmup_iters": 2,
        "steps": "100000",
        "train_min_size": args.size,
        "train_max_size": args.size,
        "train_workers": 0,
        "train_device": "cpu",
        "train_threads": 1,
        "log_every": 5,
        "checkpoint_epochs": 0,
        "checkpoint_every": 0,
        "connect_timeout": 300,
    }


def invoke_argv(artifacts, data, devices, values, *extra):
    argv = [sys.executable, "-m", "invoke", "retinanet.train", "--runner", "host",
            "--artifacts", artifacts, "--data", data, "--devices", devices]  # fmt: skip
    for key, value in values.items():
        argv += ["--param", "%s=%s" % (key, value)]
    return argv + [str(a) for a in extra]


def start(argv, namespace=None):
    if namespace:
        argv = ["ip", "netns", "exec", namespace, *argv]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = REPO + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return subprocess.Popen(
        argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        universal_newlines=True,
    )  # fmt: skip


def finish(process, what):
    output, _ = process.communicate()
    if process.returncode != 0:
        sys.stderr.write(output[-4000:])
        raise SystemExit("%s failed (exit %d)" % (what, process.returncode))


def load():
    return "%.2f %.2f %.2f" % os.getloadavg()


def result(artifacts, seconds, before):
    path = os.path.join(artifacts, "retinanet", "train", "train.json")
    with open(path) as handle:
        summary = json.load(handle)
    return {
        "images_per_s": summary["images_per_s"],
        "wall_s": seconds,
        "iterations": summary["iterations"],
        "world_size": summary["world_size"],
        "load_before": before,
        "load_after": load(),
    }


def one_host(root, data, values):
    before, t0 = load(), time.time()
    artifacts = os.path.join(root, "one-host")
    finish(start(invoke_argv(artifacts, data, "0,1,2,3", values)), "1 host x 4")
    return result(artifacts, time.time() - t0, before)


def two_hosts(root, data, values):
    with netns.two_hosts() as hosts:
        before, t0 = load(), time.time()
        started = []
        for rank in (0, 1):
            argv = invoke_argv(
                os.path.join(root, "host%d" % rank), data, "0,1", values, "--nnodes", 2,
                "--node-rank", rank, "--master-addr", hosts["addrs"][0],
                "--local-addr", hosts["addrs"][rank],
            )  # fmt: skip
            started.append(start(argv, hosts["names"][rank]))
        for rank, process in enumerate(started):
            finish(process, "2 hosts x 2, node %d" % rank)
        return result(os.path.join(root, "host0"), time.time() - t0, before)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=16, help="iterations per run (16)")
    parser.add_argument("--size", type=int, default=128, help="image side (128)")
    parser.add_argument("--images", type=int, default=8, help="generated images (8)")
    args = parser.parse_args()
    why = netns.unavailable()
    if why:
        raise SystemExit("cannot run: %s" % why)
    from data_scripts.coco.sample import make_sample

    with tempfile.TemporaryDirectory(prefix="bench-multihost-") as root:
        data = os.path.join(root, "coco")
        make_sample(data, images=args.images, seed=0)
        values = params(args)
        print(
            "RetinaNet R50-FPN training, gloo on CPU, %d iterations, %d px, global batch 4, "
            "%d cores, 1 thread per process" % (args.iters, args.size, os.cpu_count())
        )
        one = one_host(root, data, values)
        two = two_hosts(root, data, values)
    print("%-16s %10s %8s  %s" % ("run", "images/s", "wall s", "load average before -> after"))
    for name, row in (("1 host x 4", one), ("2 hosts x 2", two)):
        print("%-16s %10.3f %8.1f  %s -> %s" % (name, row["images_per_s"], row["wall_s"],
                                              row["load_before"], row["load_after"]))  # fmt: skip
    print("2 hosts / 1 host: %.3f (images/s ratio, same run)" % (
        two["images_per_s"] / one["images_per_s"]))  # fmt: skip


if __name__ == "__main__":
    main()
