"""Two "hosts" on one machine: Linux network namespaces joined by a veth pair.

Used by tests/test_retinanet_multihost.py and bench/bench_retinanet_multihost.py. Needs
root and iproute2's `ip`; `unavailable()` says why not when they are missing. Addresses
come from the documentation range 192.0.2.0/24, so nothing outside the namespaces is
ever addressed; names carry the pid and a counter, so parallel runs do not collide, and
the namespaces (with every process still in them) are deleted on the way out.
"""

import contextlib
import itertools
import os
import shutil
import signal
import subprocess

ADDRESSES = ("192.0.2.1", "192.0.2.2")
_COUNTER = itertools.count()


def ip(*args):
    return subprocess.run(
        ["ip", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True
    )


def unavailable():
    """Why namespaces cannot be made here, or None."""
    if os.geteuid() != 0:
        return "making network namespaces needs root"
    if shutil.which("ip") is None:
        return "no `ip` command (iproute2) to make network namespaces"
    return None


def kill_all(namespace):
    """SIGKILL every process in `namespace`: the host dies at once."""
    for pid in ip("netns", "pids", namespace).stdout.split():
        try:
            os.kill(int(pid), signal.SIGKILL)
        except OSError:
            pass


@contextlib.contextmanager
def two_hosts():
    """{"names": [ns0, ns1], "addrs": [...], "links": [...]}; raises RuntimeError with
    ip's message when a namespace cannot be made."""
    tag = "%d%d" % (os.getpid(), next(_COUNTER))
    names = ["zb%sa" % tag, "zb%sb" % tag]
    links = ["zv%sa" % tag, "zv%sb" % tag]  # interface names: 15 characters at most
    made = []
    try:
        for name in names:
            done = ip("netns", "add", name)
            if done.returncode:
                raise RuntimeError("cannot make a network namespace: %s" % done.stderr.strip())
            made.append(name)
        steps = [
            ["link", "add", links[0], "type", "veth", "peer", "name", links[1]],
            ["link", "set", links[0], "netns", names[0]],
            ["link", "set", links[1], "netns", names[1]],
        ]
        for ns, link, addr in zip(names, links, ADDRESSES):
            steps += [
                ["-n", ns, "link", "set", "lo", "up"],
                ["-n", ns, "addr", "add", addr + "/24", "dev", link],
                ["-n", ns, "link", "set", link, "up"],
            ]
        for step in steps:
            done = ip(*step)
            if done.returncode:
                raise RuntimeError("ip %s: %s" % (" ".join(step), done.stderr.strip()))
        yield {"names": names, "addrs": list(ADDRESSES), "links": links}
    finally:
        for name in made:
            kill_all(name)
            ip("netns", "del", name)  # its end of the veth pair goes with it
