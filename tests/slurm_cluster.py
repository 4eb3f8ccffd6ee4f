"""A real two-node Slurm cluster on this machine, for the cluster tests.

munged, slurmctld and two slurmd daemons from Debian's slurm-wlm, with a minimal
slurm.conf in a temporary folder. Each daemon runs in its own network and UTS namespace
(its own address from 192.0.2.0/24 and its own hostname), so Slurm sees three distinct
hosts: the controller `zbctl` and the compute nodes `zbnode1`, `zbnode2`. The namespaces
are joined by a bridge inside the controller's namespace; nothing is added to the root
namespace. Clients (sbatch, sinfo, scontrol) must run in the controller's namespace:
`cluster.client(argv)` wraps a command so.

Every name carries the test process id, so parallel sessions do not collide; `stop()`
ends the daemons it started (by pid) and deletes the namespaces.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

NODES = ("zbnode1", "zbnode2")
CONTROLLER = "zbctl"


def missing_tools() -> list[str]:
    tools = (
        "munged",
        "mungekey",
        "nsenter",
        "slurmctld",
        "slurmd",
        "sbatch",
        "sinfo",
        "ip",
        "unshare",
    )
    return [tool for tool in tools if shutil.which(tool) is None]


def _subnet(pid: int) -> int:
    """A /28 of 192.0.2.0/24 per test process: the fourth octet's base (16..224)."""
    return 16 * (1 + pid % 14)


class SlurmCluster:
    def __init__(self, folder: Path, cpus: int = 2, gres: int = 2):
        self.folder = Path(folder)
        self.pid = os.getpid()
        tag = f"zb{self.pid}"
        self.netns = {CONTROLLER: f"{tag}c", NODES[0]: f"{tag}n1", NODES[1]: f"{tag}n2"}
        base = _subnet(self.pid)
        self.address = {
            CONTROLLER: f"192.0.2.{base + 1}",
            NODES[0]: f"192.0.2.{base + 2}",
            NODES[1]: f"192.0.2.{base + 3}",
        }
        self.bridge = f"{tag}br"[:15]
        self.cpus = cpus
        self.gres = gres
        self.conf = self.folder / "slurm.conf"
        self.socket = self.folder / "munge" / "munge.socket"
        self.processes: list[subprocess.Popen] = []
        self.made_netns: list[str] = []

    # -- namespaces ------------------------------------------------------------------------
    def _ip(self, *args, netns: str | None = None) -> None:
        argv = ["ip"] + (["-n", netns] if netns else []) + list(args)
        subprocess.run(argv, check=True, capture_output=True, text=True)

    def _network(self) -> None:
        for name in self.netns.values():
            self._ip("netns", "add", name)
            self.made_netns.append(name)
            self._ip("link", "set", "lo", "up", netns=name)
        ctl = self.netns[CONTROLLER]
        self._ip("link", "add", self.bridge, "type", "bridge", netns=ctl)
        self._ip("link", "set", self.bridge, "up", netns=ctl)
        self._ip("addr", "add", f"{self.address[CONTROLLER]}/28", "dev", self.bridge, netns=ctl)
        for index, node in enumerate(NODES, 1):
            outer, inner = f"zb{self.pid}v{index}"[:15], f"zb{self.pid}w{index}"[:15]
            # Both ends are made inside the controller's namespace; one moves to the node.
            self._ip("link", "add", outer, "type", "veth", "peer", "name", inner, netns=ctl)
            self._ip("link", "set", inner, "netns", self.netns[node], netns=ctl)
            self._ip("link", "set", outer, "master", self.bridge, netns=ctl)
            self._ip("link", "set", outer, "up", netns=ctl)
            self._ip(
                "addr", "add", f"{self.address[node]}/28", "dev", inner, netns=self.netns[node]
            )
            self._ip("link", "set", inner, "up", netns=self.netns[node])

    def in_host(self, host: str, argv: list[str]) -> list[str]:
        """argv run in `host`'s network namespace, in a UTS namespace named after it.

        nsenter, not `ip netns exec`: the latter mounts a fresh /sys, without the cgroup
        hierarchies slurmd's cgroup plugin needs at start.
        """
        return [
            "nsenter", f"--net=/var/run/netns/{self.netns[host]}",
            "unshare", "--uts", "sh", "-c", 'hostname "$0" && exec "$@"', host, *argv,
        ]  # fmt: skip

    def client(self, argv: list[str]) -> list[str]:
        """argv as a Slurm client on the controller's host (sbatch, sinfo, invoke ...)."""
        return ["nsenter", f"--net=/var/run/netns/{self.netns[CONTROLLER]}", *list(argv)]

    def env(self) -> dict:
        env = dict(os.environ)
        env["SLURM_CONF"] = str(self.conf)
        return env

    # -- configuration ---------------------------------------------------------------------
    def _write_conf(self) -> None:
        state = self.folder / "state"
        spool = self.folder / "spool"
        logs = self.folder / "logs"
        for folder in (state, spool, logs, self.socket.parent):
            folder.mkdir(parents=True, exist_ok=True)
        for node in NODES:
            (spool / node).mkdir(exist_ok=True)
        nodes = "\n".join(
            f"NodeName={n} NodeAddr={self.address[n]} CPUs={self.cpus} RealMemory=1000 "
            f"Gres=npu:{self.gres} State=UNKNOWN"
            for n in NODES
        )
        self.conf.write_text(
            f"""ClusterName=zb{self.pid}
SlurmctldHost={CONTROLLER}({self.address[CONTROLLER]})
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={self.socket}
CredType=cred/munge
StateSaveLocation={state}
SlurmdSpoolDir={spool}/%n
SlurmctldPidFile={self.folder}/slurmctld.pid
SlurmdPidFile={self.folder}/slurmd-%n.pid
SlurmctldLogFile={logs}/slurmctld.log
SlurmdLogFile={logs}/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
SlurmdParameters=config_overrides
ReturnToService=2
GresTypes=npu
InactiveLimit=0
KillWait=5
MinJobAge=300
SlurmctldTimeout=30
SlurmdTimeout=30
{nodes}
PartitionName=zb Nodes={",".join(NODES)} Default=YES MaxTime=INFINITE State=UP
"""
        )
        (self.folder / "gres.conf").write_text(
            f"NodeName={','.join(NODES)} Name=npu Count={self.gres}\n"
        )

    # -- daemons ---------------------------------------------------------------------------
    def _start(self, argv: list[str], log: str) -> subprocess.Popen:
        handle = open(self.folder / "logs" / log, "w")
        process = subprocess.Popen(
            argv, stdout=handle, stderr=subprocess.STDOUT, env=self.env(), start_new_session=True
        )
        self.processes.append(process)
        return process

    def start(self, timeout: float = 60) -> None:
        self._write_conf()
        key = self.folder / "munge" / "munge.key"
        subprocess.run(["mungekey", "-c", "-f", "-k", str(key)], check=True, capture_output=True)
        os.chmod(key, 0o600)
        os.chmod(self.socket.parent, 0o700)
        self._start(
            [
                "munged", "-F", "--force", "--socket", str(self.socket),
                "--key-file", str(key), "--pid-file", str(self.folder / "munge" / "munged.pid"),
                "--log-file", str(self.folder / "logs" / "munged.log"),
                "--seed-file", str(self.folder / "munge" / "munged.seed"),
            ],
            "munged.out",
        )  # fmt: skip
        self._wait(lambda: self.socket.exists(), timeout, "munged's socket")
        self._network()
        self._start(
            self.in_host(CONTROLLER, ["slurmctld", "-D", "-i", "-f", str(self.conf)]),
            "slurmctld.out",
        )
        for node in NODES:
            self._start(
                self.in_host(node, ["slurmd", "-D", "-N", node, "-f", str(self.conf)]),
                f"slurmd-{node}.out",
            )
        self._wait(self._nodes_idle, timeout, "both nodes idle in sinfo")

    def sinfo(self) -> str:
        done = subprocess.run(
            self.client(["sinfo", "-h", "-N", "-o", "%N %t"]),
            capture_output=True,
            text=True,
            env=self.env(),
        )
        return done.stdout

    def _nodes_idle(self) -> bool:
        states = dict(line.split() for line in self.sinfo().splitlines() if line.strip())
        return all(states.get(node) == "idle" for node in NODES)

    def _wait(self, ready, timeout: float, what: str) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            for process in self.processes:
                if process.poll() is not None:
                    raise RuntimeError(
                        f"{process.args[:8]} exited {process.returncode}: {self.logs()}"
                    )
            if ready():
                return
            time.sleep(0.5)
        raise RuntimeError(f"timed out waiting for {what}: {self.logs()}")

    def logs(self) -> str:
        parts = []
        for path in sorted((self.folder / "logs").glob("*")):
            parts.append(f"--- {path.name}\n" + path.read_text(errors="replace")[-2000:])
        return "\n".join(parts)

    def wait_job(self, job_id: str, timeout: float) -> str:
        """Wait until a job (array) has left the queue; returns its final state(s)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            queue = subprocess.run(
                self.client(["squeue", "-h", "-j", job_id, "-o", "%T"]),
                capture_output=True,
                text=True,
                env=self.env(),
            )
            if queue.returncode == 0 and not queue.stdout.strip():
                return "done"
            time.sleep(1)
        raise RuntimeError(f"job {job_id} still queued after {timeout} s: {self.logs()}")

    def stop(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                try:
                    os.killpg(process.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for process in reversed(self.processes):
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=5)
        # Job steps slurmd started live in the node namespaces: end them before deleting.
        for name in self.made_netns:
            pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True)
            for pid in pids.stdout.split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
        for name in self.made_netns:
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
        self.made_netns = []
