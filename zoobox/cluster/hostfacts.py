"""Who this host is in a multi-host training job, from what the scheduler set.

Slurm (inside `srun`): SLURM_NODEID is the node rank, SLURM_JOB_NUM_NODES the node
count, the allocation's first host (`scontrol show hostnames $SLURM_JOB_NODELIST`) the
master, and each host's address its NodeAddr in Slurm's node table.

MindCluster's Ascend Operator (an AscendJob's pods): MASTER_ADDR, MASTER_PORT and RANK
(the pod's node rank); WORLD_SIZE is the job's total NPU count, not the node count
(environment_variable_description.md), so the node count comes from the plan and
WORLD_SIZE is only checked against it. The pod's own address is POD_IP, which the
generated manifest sets from the pod's status.podIP.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass

from zoobox.core.errors import UserError


@dataclass
class HostFacts:
    nnodes: int
    node_rank: int
    master_addr: str
    master_port: int
    local_addr: str | None
    source: str


def _int(environ, name: str) -> int:
    value = environ.get(name, "")
    try:
        return int(value)
    except ValueError:
        raise UserError(f"{name}={value!r} from the scheduler is not a whole number") from None


def _scontrol(*args: str) -> str:
    try:
        done = subprocess.run(["scontrol", *args], capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise UserError("scontrol is not on PATH inside the Slurm job") from None
    if done.returncode != 0:
        raise UserError(f"scontrol {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


def slurm_node_addr(name: str, scontrol=_scontrol) -> str:
    """A node's NodeAddr in Slurm's node table (its name when the table has none)."""
    match = re.search(r"\bNodeAddr=(\S+)", scontrol("show", "node", "-o", name))
    return match.group(1) if match else name


def from_slurm(environ, nodes: int, port: int, scontrol=_scontrol) -> HostFacts:
    nnodes = _int(
        environ, "SLURM_JOB_NUM_NODES" if "SLURM_JOB_NUM_NODES" in environ else "SLURM_NNODES"
    )
    if nnodes != nodes:
        raise UserError(f"Slurm allocated {nnodes} nodes, the plan asked for {nodes}")
    hosts = scontrol("show", "hostnames", environ.get("SLURM_JOB_NODELIST", "")).split()
    if not hosts:
        raise UserError("SLURM_JOB_NODELIST names no host")
    me = environ.get("SLURMD_NODENAME") or hosts[_int(environ, "SLURM_NODEID")]
    return HostFacts(
        nnodes=nnodes,
        node_rank=_int(environ, "SLURM_NODEID"),
        master_addr=slurm_node_addr(hosts[0], scontrol),
        master_port=port,
        local_addr=slurm_node_addr(me, scontrol),
        source="slurm",
    )


def from_operator(environ, nodes: int, devices_per_node: int, port: int) -> HostFacts:
    if "WORLD_SIZE" in environ and _int(environ, "WORLD_SIZE") != nodes * devices_per_node:
        raise UserError(
            f"WORLD_SIZE={environ['WORLD_SIZE']} (the job's NPUs, set by Ascend Operator) "
            f"is not the plan's {nodes} nodes x {devices_per_node} devices"
        )
    rank = _int(environ, "RANK")
    if not 0 <= rank < nodes:
        raise UserError(f"RANK={rank} is outside the plan's {nodes} nodes")
    return HostFacts(
        nnodes=nodes,
        node_rank=rank,
        master_addr=environ["MASTER_ADDR"],
        master_port=_int(environ, "MASTER_PORT") if environ.get("MASTER_PORT") else port,
        local_addr=environ.get("POD_IP") or None,
        source="ascend-operator",
    )


def host_facts(nodes: int, devices_per_node: int, port: int, environ=None) -> HostFacts:
    environ = os.environ if environ is None else environ
    if "SLURM_NODEID" in environ:
        return from_slurm(environ, nodes, port)
    if "MASTER_ADDR" in environ and "RANK" in environ:
        return from_operator(environ, nodes, devices_per_node, port)
    raise UserError(
        "no scheduler variables here: a cluster training node runs inside `srun` (Slurm: "
        "SLURM_NODEID ...) or an AscendJob pod (MASTER_ADDR, RANK ...)"
    )
