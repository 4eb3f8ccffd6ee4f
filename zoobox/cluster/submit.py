"""Handing a cluster run to its scheduler: checks first, then sbatch or kubectl apply.

Everything a user can get wrong is checked before anything is written or submitted:
the scheduler's client missing, more nodes than the partition has, an image never built.
"""

from __future__ import annotations

import shutil
import subprocess

from zoobox.cluster.plan import ClusterPlan, write_plan
from zoobox.core.errors import UserError


def _say(text: str) -> None:
    print(text, flush=True)


def require_tool(name: str, what: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise UserError(f"{name} is not on PATH: {what}")
    return path


def _run(argv: list[str], what: str) -> str:
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().splitlines()
        raise UserError(
            f"{what} failed: {' '.join(argv)}: {detail[-1] if detail else done.returncode}"
        )
    return done.stdout


# -- Slurm ---------------------------------------------------------------------------------
def partition_nodes(partition: str | None) -> tuple[str, int]:
    """(partition, how many nodes it has), from `sinfo`; the default partition when None."""
    out = _run(["sinfo", "-h", "-N", "-o", "%N %P"], "asking Slurm for its nodes (sinfo)")
    nodes: dict[str, set] = {}
    default = None
    for line in out.splitlines():
        if not line.strip():
            continue
        node, part = line.split()[:2]
        if part.endswith("*"):
            part = part[:-1]
            default = part
        nodes.setdefault(part, set()).add(node)
    name = partition or default
    if name is None:
        raise UserError("Slurm has no default partition: set zoobox.cluster.slurm.partition")
    if name not in nodes:
        raise UserError(f"Slurm has no partition {name!r} (it has {', '.join(sorted(nodes))})")
    return name, len(nodes[name])


def check_slurm(plan: ClusterPlan, settings) -> None:
    require_tool("sbatch", "run this on a Slurm login node (Debian: apt-get install slurm-client)")
    require_tool("sinfo", "Slurm's client tools are incomplete here")
    partition, count = partition_nodes(settings.partition)
    if plan.nodes > count:
        raise UserError(
            f"--nodes {plan.nodes} is more than partition {partition} has ({count} nodes, "
            "from sinfo)"
        )


def submit_slurm(plan: ClusterPlan, settings, dry: bool = False) -> list[str]:
    """Write the batch scripts into the run's folder and submit them in order, each after
    the one before (afterok); `dry` prints them instead. Returns the job ids."""
    from zoobox.cluster.slurm import scripts

    batch = scripts(plan, settings)
    if dry:
        for script in batch:
            _say(f"# --- {script.path}")
            _say(script.text)
        return []
    check_slurm(plan, settings)
    write_plan(plan)
    (plan.run_dir / "logs").mkdir(exist_ok=True)
    ids: list[str] = []
    for script in batch:
        script.path.write_text(script.text)
        argv = ["sbatch", "--parsable"]
        if ids:
            argv.append(f"--dependency=afterok:{ids[-1]}")
        argv.append(str(script.path))
        job = _run(argv, f"submitting {script.name}").strip().split(";")[0]
        ids.append(job)
        _say(f"submitted {script.name}: job {job} ({script.path})")
    _say(
        f"follow it: squeue -j {','.join(ids)}; logs in {plan.run_dir / 'logs'}; "
        f"cancel: scancel {' '.join(ids)}"
    )
    return ids
