"""What runs on each host of a cluster run (a Slurm job step, a Kubernetes pod):

    python -m zoobox.cluster.node --plan PLAN.json --run-id ID prepare
    python -m zoobox.cluster.node --plan PLAN.json --run-id ID shard [--index I]
    python -m zoobox.cluster.node --plan PLAN.json --run-id ID finish
    python -m zoobox.cluster.node --plan PLAN.json --run-id ID train

prepare: the stages the sharded stage needs (weights, data, export, compile), once.
shard: unit I (SLURM_ARRAY_TASK_ID or JOB_COMPLETION_INDEX when not given) runs shards
  I*D .. I*D+D-1 of hosts x devices, one per local device, into the run's shards folder.
finish: the shards merged into the sharded stage's output (recorded as if one host had
  run it), then the stages after it (evaluate, report).
train: one training node; its rank, the master and its own address from the scheduler
  (zoobox.cluster.hostfacts).

The host side only (no invoke): the code comes from the run's snapshot on the shared
folder, put on PYTHONPATH by the batch script or the pod's command.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from zoobox.cluster.hostfacts import host_facts
from zoobox.cluster.plan import ClusterPlan, read_plan
from zoobox.core.artifacts import RecipeLock
from zoobox.core.errors import UserError, main_guard

PHASES = ("prepare", "shard", "finish", "train")
DONE = ".done"  # shards/shard-I.done: shard I is complete


def _say(text: str) -> None:
    print(text, flush=True)


def build(plan: ClusterPlan, artifacts=None, devices: list[int] | None = None, params=None):
    from zoobox.pipeline.configure import build_pipeline, settings_from

    merged = dict(plan.params)
    merged.update(params or {})
    return build_pipeline(
        settings_from({"zoobox": {"runner": plan.runner}}),
        plan.recipe,
        data=plan.data,
        artifacts=str(artifacts or plan.artifacts),
        runner=plan.runner,
        backend=plan.backend,
        devices=",".join(str(d) for d in (devices or [0])),
        params=merged,
    )


def prepare(plan: ClusterPlan, stage: str | None = None) -> None:
    """The stages before the sharded one (only `stage` of them when given: a pod runs
    each in its own env's image)."""
    from zoobox.pipeline.configure import check_dataset

    engine = build(plan)
    needs = [n for n in engine.recipe.upstream(plan.shard_stage) if n != plan.shard_stage]
    if stage is not None and stage not in needs:
        raise UserError(f"{stage} is not a stage before {plan.shard_stage}: {', '.join(needs)}")
    check_dataset(engine, stage or plan.shard_stage)
    engine.run(stages=[stage] if stage else needs)


def unit_index(given, environ=None) -> int:
    environ = os.environ if environ is None else environ
    if given is not None:
        return given
    for name in ("SLURM_ARRAY_TASK_ID", "JOB_COMPLETION_INDEX"):
        if environ.get(name, "") != "":
            try:
                return int(environ[name])
            except ValueError:
                raise UserError(f"{name}={environ[name]!r} is not a whole number") from None
    raise UserError("shard needs --index I, SLURM_ARRAY_TASK_ID or JOB_COMPLETION_INDEX")


def shard(plan: ClusterPlan, index: int) -> None:
    """Run unit `index`: its devices' shards, side by side, each into its own folder."""
    if not 0 <= index < plan.units:
        raise UserError(f"shard unit {index} is outside the plan's {plan.units} units")
    devices = list(range(plan.devices_per_unit))
    engine = build(plan, devices=devices)
    stage = plan.shard_stage
    missing = [n for n in engine.recipe.stage(stage).needs if engine.store.record(n) is None]
    if missing:
        raise UserError(
            f"the {stage} shards need {', '.join(missing)} in {engine.store.folder}, which "
            "the prepare job makes: it has not finished there (or this host sees another "
            "folder)"
        )
    calls = []
    for device in devices:
        number = index * plan.devices_per_unit + device
        final = plan.shard_dir(number)
        temp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
        shutil.rmtree(temp, ignore_errors=True)
        temp.mkdir(parents=True)
        call = engine.call_for(stage, temp, devices=[device])
        call.args += ["--shard", f"{number}/{plan.shards}"]
        calls.append((call, final))
    engine.runner.check(calls[0][0].env)
    _say(
        f"[{stage}] shards {', '.join(c.args[-1] for c, _ in calls)} of run {plan.run_id} "
        f"on {socket.gethostname()}"
    )
    with ThreadPoolExecutor(len(calls)) as pool:
        try:
            list(pool.map(lambda pair: engine.run_checked(pair[0]), calls))
        except BaseException:
            for call, _ in calls:
                shutil.rmtree(call.out, ignore_errors=True)
            raise
    for call, final in calls:
        shutil.rmtree(final, ignore_errors=True)
        os.replace(call.out, final)
        # Beside the folder, not in it: the merge takes every file of a shard's folder.
        final.with_name(final.name + DONE).write_text(" ".join(call.args) + "\n")
    _say(f"[{stage}] shards done: {', '.join(str(f) for _, f in calls)}")


def finish(plan: ClusterPlan) -> None:
    from zoobox.core.envspec import get_env
    from zoobox.jobs.run_and_summarize import run_and_summarize
    from zoobox.runners.base import StageCall
    from zoobox.runners.host import HostRunner

    stage = plan.shard_stage
    folders = [plan.shard_dir(i) for i in range(plan.shards)]
    missing = [f.name for f in folders if not f.with_name(f.name + DONE).is_file()]
    if missing:
        raise UserError(
            f"{len(missing)} of {plan.shards} {stage} shards did not finish "
            f"({', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''} missing in "
            f"{plan.run_dir / 'shards'}); rerun their array tasks, then this job"
        )
    engine = build(plan)
    started = time.time()
    lock = RecipeLock(engine.store.folder)
    engine.store.folder.mkdir(parents=True, exist_ok=True)
    lock.acquire(f"{plan.recipe} cluster finish {plan.run_id}")
    try:
        merged = plan.run_dir / "merged"
        shutil.rmtree(merged, ignore_errors=True)
        merged.mkdir()
        call = StageCall(
            plan.recipe,
            stage,
            "zoostage.shards",
            [str(f) for f in folders],
            merged,
            get_env("host"),
        )
        argv = engine.run_with(HostRunner(), call)
        engine.adopt(stage, merged, [argv], started)
        shutil.rmtree(merged, ignore_errors=True)
    finally:
        lock.release()
    _say(f"[{stage}] {plan.shards} shards merged into {engine.store.stage_dir(stage)}")
    run_and_summarize(engine, plan.target)


def train(plan: ClusterPlan) -> None:
    facts = host_facts(plan.nodes, plan.devices_per_node, plan.master_port)
    params = {
        "nnodes": facts.nnodes,
        "node_rank": facts.node_rank,
        "master_addr": facts.master_addr,
        "master_port": facts.master_port,
    }
    from zoobox.core.recipe import load_recipe

    if facts.local_addr and "local_addr" in load_recipe(plan.recipe).params:
        params["local_addr"] = facts.local_addr
    _say(
        f"training node {facts.node_rank} of {facts.nnodes} ({facts.source}): master "
        f"{facts.master_addr}:{facts.master_port}, this host {facts.local_addr or '?'}"
    )
    artifacts = plan.node_artifacts(facts.node_rank)
    engine = build(
        plan, artifacts=artifacts, devices=list(range(plan.devices_per_node)), params=params
    )
    engine.run("train")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m zoobox.cluster.node", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--plan", required=True, help="the run's plan.json on the shared folder")
    parser.add_argument("--run-id", required=True, help="the run id the job was submitted for")
    parser.add_argument("--index", type=int, default=None, help="shard: the unit to run")
    parser.add_argument("--stage", default=None, help="prepare: only this stage")
    parser.add_argument("phase", choices=PHASES)
    args = parser.parse_args(argv)

    def go():
        plan = read_plan(args.plan, args.run_id)
        if args.phase == "train" and plan.kind != "train":
            raise UserError(f"run {plan.run_id} is an inference run: no train phase")
        if args.phase != "train" and plan.kind != "infer":
            raise UserError(f"run {plan.run_id} is a training run: only its train phase runs")
        if args.phase == "prepare":
            prepare(plan, args.stage)
        elif args.phase == "shard":
            shard(plan, unit_index(args.index))
        elif args.phase == "finish":
            finish(plan)
        else:
            train(plan)

    main_guard(go)


if __name__ == "__main__":
    sys.exit(main())
