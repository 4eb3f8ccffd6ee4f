"""Past one host: `invoke cluster.slurm TARGET ...` and `invoke cluster.k8s TARGET ...`.

Settings: `zoobox.cluster` in invoke.yaml (slurm: gres, partition, python, time; k8s:
claim, registry, namespace, ...), overridden by flags. Logic in zoobox.cluster.
"""

from __future__ import annotations

from invoke import task

COMMON_HELP = {
    "target": "RECIPE.all, RECIPE.STAGE (inference up to it) or RECIPE.train",
    "nodes": "hosts to run on",
    "devices-per-node": "NPUs each host gives the run",
    "artifacts": "the shared artifacts folder (NFS, a ReadWriteMany volume), as this host "
    "sees it: required",
    "data": "dataset root, as the hosts see it",
    "backend": "torchscript | onnxruntime | aie | om (auto: the recipe's NPU backend)",
    "random-init": "with no checkpoint given, start from a seeded random init",
    "limit": "only N images",
    "param": "any recipe parameter, key=value (repeatable)",
}


def _plan(c, target, nodes, devices_per_node, artifacts, data, backend, random_init, limit, param):
    from zoobox.cluster.plan import make_plan, parse_target
    from zoobox.core.recipe import load_recipe
    from zoobox.pipeline.configure import data_root, parse_params, settings_from

    params = parse_params(param)
    if random_init:
        params["allow_random"] = True
    if limit is not None:
        params["limit"] = limit
    recipe, _ = parse_target(target)
    # The dataset root the hosts read: the flag, else the configured one (invoke.yaml).
    data = data_root(settings_from(c.config), load_recipe(recipe), data)
    return make_plan(
        target,
        nodes=int(nodes),
        devices_per_node=int(devices_per_node),
        artifacts=artifacts,
        data=data,
        runner="host",
        backend=backend or "auto",
        params=params,
    )


def _dataclass_from(cls, values: dict, where: str):
    """Settings from invoke.yaml: an unknown key is one line, not a traceback."""
    import dataclasses

    from zoobox.core.errors import UserError

    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise UserError(
            f"unknown setting {where}.{unknown[0]} in invoke.yaml: known are "
            + ", ".join(sorted(known))
        )
    return cls(**{k: v for k, v in values.items() if v is not None})


def _settings(c) -> dict:
    from zoobox.pipeline.configure import settings_from

    return dict(settings_from(c.config).get("cluster") or {})


@task(
    positional=["target"],
    iterable=["param"],
    help=dict(
        COMMON_HELP,
        partition="Slurm partition (default: the configured one, else Slurm's default)",
        dry="print the batch scripts; write and submit nothing",
    ),
)
def slurm(
    c,
    target,
    nodes=1,
    devices_per_node=1,
    artifacts=None,
    data=None,
    backend=None,
    random_init=False,
    limit=None,
    param=None,
    partition=None,
    dry=False,
):
    """Write the run's Slurm batch scripts into the shared folder and submit them (sbatch).

    Training: one job, one zoobox training node per host (srun). Inference: prepare, the
    shards as a job array (one task per host), then merge + evaluate + report, chained
    with --dependency=afterok. NPUs are asked for as the generic resource
    zoobox.cluster.slurm.gres (default npu).
    """
    from zoobox.core.errors import main_guard

    def go():
        from zoobox.cluster.slurm import SlurmSettings
        from zoobox.cluster.submit import submit_slurm

        plan = _plan(
            c, target, nodes, devices_per_node, artifacts, data, backend, random_init, limit, param
        )
        configured = dict(_settings(c).get("slurm") or {})
        if partition:
            configured["partition"] = partition
        settings = _dataclass_from(SlurmSettings, configured, "zoobox.cluster.slurm")
        return submit_slurm(plan, settings, dry=dry)

    return main_guard(go)


@task(
    positional=["target"],
    iterable=["param"],
    help=dict(
        {k: v for k, v in COMMON_HELP.items() if k not in ("data", "dry")},
        claim="PersistentVolumeClaim of the shared artifacts folder (default: configured)",
        registry="registry the images were pushed to (invoke images.build --push)",
        apply="kubectl apply the manifests (inference: each Job after the one before)",
    ),
)
def k8s(
    c,
    target,
    nodes=1,
    devices_per_node=1,
    artifacts=None,
    backend=None,
    random_init=False,
    limit=None,
    param=None,
    claim=None,
    registry=None,
    apply=False,
):
    """Write the run's Kubernetes manifests into the shared folder (MindCluster).

    Training: an AscendJob (Master + Workers, Volcano gang scheduling, Ascend 910s).
    Inference: a prepare Job, an Indexed Job with one completion per shard (Ascend 310P),
    then the finish Job (merge, evaluate, report). --artifacts is this host's mount of
    the claim; pods mount it at zoobox.cluster.k8s.mount (default /artifacts).
    """
    from zoobox.core.errors import main_guard

    def go():
        from zoobox.cluster.k8s import K8sSettings
        from zoobox.cluster.submit import submit_k8s

        configured = dict(_settings(c).get("k8s") or {})
        for key, value in (("claim", claim), ("registry", registry)):
            if value:
                configured[key] = value
        settings = _dataclass_from(K8sSettings, configured, "zoobox.cluster.k8s")
        plan = _plan(
            c, target, nodes, devices_per_node, artifacts, None, backend, random_init, limit, param
        )
        local = plan.artifacts
        # Pods see the claim and the dataset where the manifests mount them.
        plan = plan.seen_from(settings.mount, settings.data_mount)
        plan.unit_devices = 1  # one completion (one pod, one NPU) per shard
        return submit_k8s(plan, settings, local, apply=apply)

    return main_guard(go)
