"""Cluster runs, the quick checks: plans, batch scripts, host facts, the node entry's
refusals, and every bad input to `invoke cluster.slurm` / `invoke cluster.k8s` being one
`error:` line with nothing written or submitted (fake sbatch / sinfo on PATH)."""

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO
from zoobox.core.errors import UserError


def _plan(target="retinaface.all", nodes=2, devices=4, artifacts="/shared/zb", **params):
    from zoobox.cluster.plan import make_plan

    backend = params.pop("backend", "auto")
    return make_plan(
        target,
        nodes=nodes,
        devices_per_node=devices,
        artifacts=artifacts,
        backend=backend,
        params=params,
    )


# -- plans ----------------------------------------------------------------------------------
def test_plan_kinds_shards_and_backend():
    infer = _plan()
    assert (infer.kind, infer.shard_stage, infer.shards, infer.units) == ("infer", "infer", 8, 2)
    assert infer.backend == "aie" and infer.npu  # auto: the recipe's NPU backend
    infer.unit_devices = 1
    assert infer.units == 8
    train = _plan("retinanet.train", train_device="cpu")
    assert (train.kind, train.shard_stage, train.npu) == ("train", None, False)
    assert train.backend != "aie"
    assert train.node_artifacts(0) == train.artifacts or str(train.node_artifacts(0)) == str(
        train.artifacts
    )
    assert train.node_artifacts(1) == train.run_dir / "node-1"


@pytest.mark.parametrize(
    "target, kwargs, words",
    [
        ("nosuch.all", {}, "unknown recipe 'nosuch'"),
        ("retinaface.nosuch", {}, "unknown stage 'nosuch'"),
        ("retinaface.export", {}, "no sharded stage"),
        ("retinaface.all", {"artifacts": None}, "shared artifacts folder"),
        ("retinaface.all", {"nodes": 0}, "--nodes must be"),
        ("retinaface.all", {"devices": 0}, "--devices-per-node must be"),
        ("retinaface.all", {"batch_size": 0}, "batch_size"),
    ],
)
def test_bad_plans_are_one_line(target, kwargs, words):
    with pytest.raises(UserError, match=words):
        _plan(target, **kwargs)


# -- Slurm batch scripts --------------------------------------------------------------------
def test_training_script_is_one_job_one_srun_task_per_node():
    from zoobox.cluster.slurm import SlurmSettings, scripts

    plan = _plan("retinanet.train", nodes=4, devices=8)
    (script,) = scripts(plan, SlurmSettings(gres="davinci", partition="ascend", time="2:00:00"))
    lines = script.text.splitlines()
    for line in (
        "#SBATCH --nodes=4",
        "#SBATCH --ntasks-per-node=1",
        "#SBATCH --gres=davinci:8",
        "#SBATCH --partition=ascend",
        "#SBATCH --time=2:00:00",
    ):
        assert line in lines
    (srun,) = [line for line in lines if line.startswith("srun ")]
    assert "--nodes=4 --ntasks-per-node=1" in srun
    assert srun.endswith(f"--plan {plan.plan_file} --run-id {plan.run_id} train")
    assert f"export PYTHONPATH={plan.code_dir}" + "${PYTHONPATH:+:$PYTHONPATH}" in lines
    assert script.path == plan.run_dir / "train.sbatch"


def test_inference_scripts_prepare_array_finish():
    from zoobox.cluster.slurm import SlurmSettings, scripts

    plan = _plan(nodes=3, devices=2)
    prepare, shards, finish = scripts(plan, SlurmSettings())
    assert "#SBATCH --array=0-2" in shards.text.splitlines()
    assert "#SBATCH --gres=npu:2" in shards.text.splitlines()
    assert "#SBATCH --gres=npu:1" in prepare.text.splitlines()  # aie compile needs an NPU
    assert "--gres" not in finish.text
    assert shards.text.rstrip().endswith(" shard") and finish.text.rstrip().endswith(" finish")
    assert f"{plan.run_dir}/logs/shards-%A_%a.out" in shards.text
    no_gres = scripts(plan, SlurmSettings(gres=""))
    assert not any("--gres" in s.text for s in no_gres)


# -- host facts -----------------------------------------------------------------------------
def _fake_scontrol(*args):
    if args[:2] == ("show", "hostnames"):
        assert args[2] == "gpu[07-08]"
        return "gpu07\ngpu08\n"
    name = args[-1]
    return f"NodeName={name} Arch=x86_64 NodeAddr=10.1.0.{name[-1]} NodeHostName={name}\n"


def test_slurm_facts_rank_master_and_local_address():
    from zoobox.cluster.hostfacts import from_slurm

    env = {
        "SLURM_NODEID": "1",
        "SLURM_JOB_NUM_NODES": "2",
        "SLURM_JOB_NODELIST": "gpu[07-08]",
        "SLURMD_NODENAME": "gpu08",
    }
    facts = from_slurm(env, 2, 29500, scontrol=_fake_scontrol)
    assert (facts.nnodes, facts.node_rank, facts.master_addr, facts.local_addr) == (
        2,
        1,
        "10.1.0.7",
        "10.1.0.8",
    )
    with pytest.raises(UserError, match="allocated 2 nodes, the plan asked for 3"):
        from_slurm(env, 3, 29500, scontrol=_fake_scontrol)


def test_operator_facts_world_size_counts_npus_not_nodes():
    from zoobox.cluster.hostfacts import host_facts

    env = {"MASTER_ADDR": "10.2.0.1", "MASTER_PORT": "2222", "WORLD_SIZE": "16", "RANK": "1"}
    facts = host_facts(2, 8, 29500, dict(env, POD_IP="10.2.0.9"))
    assert (facts.nnodes, facts.node_rank, facts.master_port, facts.local_addr) == (
        2,
        1,
        2222,
        "10.2.0.9",
    )
    with pytest.raises(UserError, match="WORLD_SIZE=16"):
        host_facts(4, 8, 29500, env)
    with pytest.raises(UserError, match="RANK=2 is outside"):
        host_facts(2, 8, 29500, dict(env, RANK="2"))
    with pytest.raises(UserError, match="no scheduler variables"):
        host_facts(2, 8, 29500, {})


# -- the node entry's refusals --------------------------------------------------------------
def _node(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "zoobox.cluster.node", *map(str, args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=dict(os.environ, **(env or {})),
        timeout=120,
    )


def _one_error_line(done, *words):
    assert done.returncode == 2, done.stdout + done.stderr
    errors = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("error: "), done.stderr
    for word in words:
        assert word in errors[0], errors[0]


@pytest.mark.slow
def test_a_host_that_does_not_see_the_plan_stops_with_one_line(tmp_path):
    from zoobox.cluster.plan import write_plan

    missing = tmp_path / "elsewhere" / "plan.json"
    _one_error_line(_node("--plan", missing, "--run-id", "x", "shard", "--index", "0"),
                    "does not see the run's plan", str(missing))  # fmt: skip
    plan = _plan(artifacts=str(tmp_path), backend="torchscript")
    write_plan(plan)
    _one_error_line(_node("--plan", plan.plan_file, "--run-id", "other", "prepare"),
                    f"belongs to run {plan.run_id}, not other")  # fmt: skip
    _one_error_line(_node("--plan", plan.plan_file, "--run-id", plan.run_id, "train"),
                    "inference run")  # fmt: skip
    # A shard started before the prepare job made what it needs.
    _one_error_line(
        _node("--plan", plan.plan_file, "--run-id", plan.run_id, "shard",
              env={"SLURM_ARRAY_TASK_ID": "1"}),
        "need compile, data", "prepare job",
    )  # fmt: skip
    _one_error_line(_node("--plan", plan.plan_file, "--run-id", plan.run_id, "shard",
                          "--index", "5"), "outside the plan's 2 units")  # fmt: skip
    _one_error_line(_node("--plan", plan.plan_file, "--run-id", plan.run_id, "finish"),
                    "8 of 8 infer shards did not finish")  # fmt: skip


# -- the tasks: bad input is one line, nothing written or submitted -------------------------
def _fake_tools(folder, nodes=2, sbatch=True, sinfo=True):
    """sinfo listing `nodes` nodes in partition zb (the default); sbatch recording its
    arguments in calls.txt and answering job ids 101, 102, ..."""
    folder.mkdir(exist_ok=True)
    if sinfo:
        lines = "\\n".join(f"node{i} zb*" for i in range(1, nodes + 1))
        (folder / "sinfo").write_text(f'#!/bin/sh\nprintf "{lines}\\n"\n')
    if sbatch:
        (folder / "sbatch").write_text(
            "#!/bin/sh\nPATH=/usr/bin:/bin\n"  # wc; the test's PATH holds only the fakes
            f'echo "$@" >> {folder}/calls.txt\n'
            f"n=$(wc -l < {folder}/calls.txt)\n"
            'echo "$((100 + n));zb"\n'
        )
    for tool in folder.iterdir():
        tool.chmod(0o755)
    return folder


def _invoke(tmp_path, *args, path=None):
    env = dict(os.environ)
    if path is not None:
        env["PATH"] = str(path)
    return subprocess.run(
        [sys.executable, "-m", "invoke", *map(str, args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def _nothing_written(artifacts):
    assert not (artifacts / "retinaface" / "cluster").exists()
    assert not (artifacts / "retinanet" / "cluster").exists()


def test_slurm_submits_in_order_with_afterok_and_says_how_to_follow(tmp_path):
    tools = _fake_tools(tmp_path / "bin")
    shared = tmp_path / "shared"
    done = _invoke(tmp_path, "cluster.slurm", "retinaface.all", "--nodes", 2,
                   "--devices-per-node", 4, "--artifacts", shared, path=tools)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    calls = (tools / "calls.txt").read_text().splitlines()
    assert len(calls) == 3
    assert "--dependency" not in calls[0]
    assert "--dependency=afterok:101" in calls[1] and calls[1].endswith("shards.sbatch")
    assert "--dependency=afterok:102" in calls[2] and calls[2].endswith("finish.sbatch")
    assert "squeue -j 101,102,103" in done.stdout
    (run_dir,) = (shared / "retinaface" / "cluster").iterdir()
    assert {p.name for p in run_dir.iterdir()} >= {
        "plan.json", "code", "logs", "prepare.sbatch", "shards.sbatch", "finish.sbatch"
    }  # fmt: skip


def test_slurm_dry_prints_the_scripts_and_writes_nothing(tmp_path):
    shared = tmp_path / "shared"
    done = _invoke(tmp_path, "cluster.slurm", "retinanet.train", "--nodes", 2,
                   "--devices-per-node", 8, "--artifacts", shared, "--dry")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "#SBATCH --nodes=2" in done.stdout and "srun --nodes=2" in done.stdout
    assert not shared.exists()


@pytest.mark.parametrize(
    "args, tools, words",
    [
        (["retinanet.train", "--nodes", 3], {"nodes": 2}, "more than partition zb has (2 nodes"),
        (["retinanet.train", "--nodes", 2], {"sbatch": False}, "sbatch is not on PATH"),
        (["nosuch.all"], {}, "unknown recipe"),
        (["retinaface.nosuch"], {}, "unknown stage"),
        (["retinaface.all", "--no-artifacts"], {}, "shared artifacts folder"),
    ],
)
def test_slurm_bad_input_is_one_line_and_nothing_submitted(tmp_path, args, tools, words):
    bin_dir = _fake_tools(tmp_path / "bin", **tools)
    shared = tmp_path / "shared"
    extra = [] if "--no-artifacts" in args else ["--artifacts", shared]
    args = [a for a in args if a != "--no-artifacts"]
    done = _invoke(tmp_path, "cluster.slurm", *args, *extra, path=bin_dir)
    _one_error_line(done, words)
    assert not (bin_dir / "calls.txt").exists()
    _nothing_written(shared)


def test_k8s_an_image_never_built_is_one_line_and_nothing_written(tmp_path):
    # No docker CLI on PATH: `docker image inspect` finds nothing, as for an unbuilt image.
    empty = tmp_path / "empty"
    empty.mkdir()
    shared = tmp_path / "shared"
    done = _invoke(tmp_path, "cluster.k8s", "retinanet.train", "--nodes", 2,
                   "--artifacts", shared, "--claim", "zb", path=empty)  # fmt: skip
    _one_error_line(done, "was never built here", "invoke images.build --env train")
    _nothing_written(shared)


def test_k8s_no_claim_or_no_kubectl_is_one_line_and_nothing_written(tmp_path, monkeypatch):
    from zoobox.cluster.k8s import K8sSettings
    from zoobox.cluster.submit import submit_k8s

    shared = tmp_path / "shared"
    plan = _plan("retinanet.train", artifacts=str(shared)).seen_from("/artifacts", "/data")
    with pytest.raises(UserError, match="PersistentVolumeClaim"):
        submit_k8s(plan, K8sSettings(), shared, image_exists=lambda name: True)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(UserError, match="kubectl is not on PATH"):
        submit_k8s(plan, K8sSettings(claim="zb"), shared, apply=True, image_exists=lambda n: True)
    _nothing_written(shared)


def test_k8s_apply_applies_each_job_after_the_one_before_completed(tmp_path, monkeypatch):
    from zoobox.cluster.k8s import K8sSettings
    from zoobox.cluster.submit import submit_k8s

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "kubectl").write_text(f'#!/bin/sh\necho "$@" >> {bin_dir}/calls.txt\necho ok\n')
    (bin_dir / "kubectl").chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    shared = tmp_path / "shared"
    plan = _plan(artifacts=str(shared)).seen_from("/artifacts", "/data")
    plan.unit_devices = 1
    items = submit_k8s(
        plan, K8sSettings(claim="zb"), shared, apply=True, image_exists=lambda n: True
    )
    calls = (bin_dir / "calls.txt").read_text().splitlines()
    names = [i.object_name for i in items]
    assert [c.split()[0] for c in calls] == ["apply", "wait", "apply", "wait", "apply"]
    assert calls[1].endswith(f"job/{names[0]}") and "--for=condition=complete" in calls[1]
    assert calls[3].endswith(f"job/{names[1]}")
    assert calls[4].endswith("finish.yaml")


def test_an_unknown_cluster_setting_is_one_line():
    from zoobox.cluster.slurm import SlurmSettings
    from zoobox.tasks.cluster import _dataclass_from

    with pytest.raises(UserError, match=r"unknown setting zoobox\.cluster\.slurm\.gress"):
        _dataclass_from(SlurmSettings, {"gress": "npu"}, "zoobox.cluster.slurm")
    assert _dataclass_from(SlurmSettings, {"gres": "davinci", "time": None}, "x").gres == "davinci"


def test_k8s_refuses_a_recipe_whose_stage_image_cannot_run_the_node_entry():
    """RefineDet's .om inference runs in the atc env (Python 3.7); zoobox needs 3.9+."""
    from zoobox.cluster.k8s import K8sSettings, manifests

    plan = _plan("refinedet.all")
    with pytest.raises(UserError, match=r"atc env runs Python 3\.7"):
        manifests(plan, K8sSettings(claim="zb"))


def test_a_failed_sbatch_cancels_the_jobs_already_submitted(tmp_path):
    tools = _fake_tools(tmp_path / "bin")
    # The second sbatch fails; scancel records what it was asked to cancel.
    (tools / "sbatch").write_text(
        "#!/bin/sh\nPATH=/usr/bin:/bin\n"
        f'echo "$@" >> {tools}/calls.txt\n'
        f"n=$(wc -l < {tools}/calls.txt)\n"
        'if [ "$n" = 2 ]; then echo "sbatch: error: Batch job submission failed" >&2; exit 1; fi\n'
        'echo "$((100 + n))"\n'
    )
    (tools / "scancel").write_text(f'#!/bin/sh\necho "$@" > {tools}/cancelled.txt\n')
    (tools / "scancel").chmod(0o755)
    done = _invoke(tmp_path, "cluster.slurm", "retinaface.all", "--nodes", 2,
                   "--artifacts", tmp_path / "shared", path=tools)  # fmt: skip
    _one_error_line(done, "submitting shards failed", "cancelled the jobs already submitted (101)")
    assert (tools / "cancelled.txt").read_text().split() == ["101"]
