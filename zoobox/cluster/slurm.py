"""Slurm batch scripts for a cluster run (written into the run's folder, submitted by
zoobox.cluster.submit).

Training: one script, one job on N nodes; `srun` starts one zoobox training node per host
(one task per node), each of which starts its devices' processes.
Inference: three scripts chained with --dependency=afterok: prepare (one job), the shards
(a job array, one task per host, each running that host's devices' shards), finish
(merge, evaluate, report).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from zoobox.cluster.plan import ClusterPlan


@dataclass
class SlurmSettings:
    gres: str = "npu"  # the generic resource NPUs are counted as ("": none requested)
    partition: str | None = None
    python: str = "python3"  # the interpreter on the compute nodes
    time: str | None = None  # --time for every job (None: the partition's default)
    extra: tuple[str, ...] = ()  # more #SBATCH lines' options, e.g. ("--account=x",)


@dataclass
class BatchScript:
    name: str  # prepare | shards | finish | train
    path: Path
    text: str


def _node_command(plan: ClusterPlan, settings: SlurmSettings, phase: str) -> str:
    argv = [
        settings.python, "-m", "zoobox.cluster.node",
        "--plan", str(plan.plan_file), "--run-id", plan.run_id, phase,
    ]  # fmt: skip
    return shlex.join(argv)


def _header(plan: ClusterPlan, settings: SlurmSettings, name: str, options: list[str]) -> str:
    logs = plan.run_dir / "logs"
    array = any(o.startswith("--array") for o in options)
    lines = [
        "#!/bin/bash",
        f"# zoobox cluster run {plan.run_id}: {plan.recipe}.{plan.target or 'all'}, {name}",
        f"#SBATCH --job-name=zoobox-{plan.recipe}-{name}",
        f"#SBATCH --output={logs}/{name}-{'%A_%a' if array else '%j'}.out",
    ]
    if settings.partition:
        lines.append(f"#SBATCH --partition={settings.partition}")
    if settings.time:
        lines.append(f"#SBATCH --time={settings.time}")
    lines += [f"#SBATCH {option}" for option in list(options) + list(settings.extra)]
    code = shlex.quote(str(plan.code_dir))
    lines += [
        "set -euo pipefail",
        "# The run's code snapshot, on the shared folder: every job runs the same code.",
        f"export PYTHONPATH={code}${{PYTHONPATH:+:$PYTHONPATH}}",
        f"cd {code}",
    ]
    return "\n".join(lines) + "\n"


def _gres(settings: SlurmSettings, count: int) -> list[str]:
    """A host's devices as generic resources. Asked for even on a CPU run: a unit that
    takes a host's devices then gets a host of its own, as it would with NPUs."""
    return [f"--gres={settings.gres}:{count}"] if settings.gres and count else []


def scripts(plan: ClusterPlan, settings: SlurmSettings) -> list[BatchScript]:
    """The run's batch scripts, in submission order (each after the one before)."""

    def script(name: str, options: list[str], body: str) -> BatchScript:
        text = _header(plan, settings, name, options) + body
        return BatchScript(name, plan.run_dir / f"{name}.sbatch", text)

    devices = plan.devices_per_node
    if plan.kind == "train":
        options = [f"--nodes={plan.nodes}", "--ntasks-per-node=1"]
        options += _gres(settings, devices)
        body = (
            "# One zoobox training node per host: its rank is SLURM_NODEID, the master the\n"
            "# allocation's first host, its own address its NodeAddr (zoobox.cluster.hostfacts).\n"
            f"srun --nodes={plan.nodes} --ntasks-per-node=1 --kill-on-bad-exit=1 "
            f"{_node_command(plan, settings, 'train')}\n"
        )
        return [script("train", options, body)]
    unit = plan.devices_per_unit
    return [
        script(
            "prepare",
            ["--nodes=1", "--ntasks=1", *_gres(settings, 1 if plan.npu else 0)],
            f"{_node_command(plan, settings, 'prepare')}\n",
        ),
        script(
            "shards",
            [f"--array=0-{plan.units - 1}", "--nodes=1", "--ntasks=1", *_gres(settings, unit)],
            "# Array task I runs shards I*D .. I*D+D-1 of the run, one per device of its host.\n"
            f"{_node_command(plan, settings, 'shard')}\n",
        ),
        script(
            "finish", ["--nodes=1", "--ntasks=1"], f"{_node_command(plan, settings, 'finish')}\n"
        ),
    ]
