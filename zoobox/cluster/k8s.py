"""Kubernetes manifests for a cluster run on MindCluster (Ascend Operator, Volcano).

Training: one `AscendJob` (mindxdl.gitee.com/v1): a Master and N-1 Workers, one pod per
host, gang-scheduled by Volcano (minAvailable = N), each with the host's Ascend 910s
(requests = limits), the driver mounted read-only from the host, the artifacts folder on a
PersistentVolumeClaim. Ascend Operator injects MASTER_ADDR, MASTER_PORT, WORLD_SIZE and
RANK; the pod's own address comes from status.podIP (POD_IP).

Inference: three batch/v1 Jobs, applied one after the other: prepare (one pod whose
containers run the stages before the sharded one in order, each in its env's image), the
shards (an Indexed Job: one completion per shard, its index JOB_COMPLETION_INDEX, one
Ascend 310P each), finish (merge, evaluate, report).

Every container keeps its image's entrypoint (which sets up CANN and the driver's
libraries) and runs `python -m zoobox.cluster.node ...` from the run's code snapshot on
the claim.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from zoobox.cluster.plan import ClusterPlan
from zoobox.core.envspec import get_env
from zoobox.core.errors import UserError
from zoobox.core.recipe import load_recipe

API_ASCEND = "mindxdl.gitee.com/v1"
DRIVER = "/usr/local/Ascend/driver"


@dataclass
class K8sSettings:
    claim: str | None = None  # the PersistentVolumeClaim holding the artifacts folder
    data_claim: str | None = None  # the one holding the datasets (default: claim)
    data_subpath: str = ""  # the dataset root inside data_claim
    namespace: str = "default"
    registry: str | None = None  # where `invoke images.build --push` put the images
    mount: str = "/artifacts"  # where pods see the artifacts claim
    data_mount: str = "/data"  # where pods see the dataset
    queue: str = "default"  # Volcano queue of the training job
    train_resource: str = "huawei.com/Ascend910"
    infer_resource: str = "huawei.com/Ascend310P"
    ring_controller: str = "ascend-910b"  # the AscendJob's ring-controller.atlas label
    python: str = "python"
    wait_timeout: str = "24h"  # kubectl wait per inference Job with --apply


@dataclass
class Manifest:
    name: str  # file stem: train | prepare | shards | finish
    kind: str
    body: dict

    @property
    def object_name(self) -> str:
        return self.body["metadata"]["name"]


def image_for(env_name: str, settings: K8sSettings) -> str:
    """The env's image; refused when its Python cannot run zoobox's node entry (3.9+)."""
    spec = get_env(env_name)
    version = tuple(int(part) for part in str(spec.python or "3.9").split(".")[:2])
    if version < (3, 9):
        raise UserError(
            f"the {env_name} env runs Python {spec.python}, and a pod runs zoobox's node "
            "entry (Python 3.9+) in its stage's image: run this recipe with "
            "`invoke cluster.slurm`, whose nodes use their own python3"
        )
    image = spec.image
    return f"{settings.registry.rstrip('/')}/{image}" if settings.registry else image


def _dns(text: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in text.lower()).strip("-")[:52]


def _node_args(plan: ClusterPlan, settings: K8sSettings, *phase: str) -> list[str]:
    return [
        settings.python, "-m", "zoobox.cluster.node",
        "--plan", str(plan.plan_file), "--run-id", plan.run_id, *phase,
    ]  # fmt: skip


def _volumes(settings: K8sSettings) -> list[dict]:
    return [
        {"name": "artifacts", "persistentVolumeClaim": {"claimName": settings.claim}},
        {
            "name": "data",
            "persistentVolumeClaim": {
                "claimName": settings.data_claim or settings.claim,
                "readOnly": True,
            },
        },
        {"name": "ascend-driver", "hostPath": {"path": DRIVER}},
        {"name": "dshm", "emptyDir": {"medium": "Memory"}},
    ]


def _mounts(settings: K8sSettings, npu: bool) -> list[dict]:
    mounts = [
        {"name": "artifacts", "mountPath": settings.mount},
        {"name": "data", "mountPath": settings.data_mount, "readOnly": True},
        {"name": "dshm", "mountPath": "/dev/shm"},
    ]
    if settings.data_subpath:
        mounts[1]["subPath"] = settings.data_subpath
    if npu:
        mounts.append({"name": "ascend-driver", "mountPath": DRIVER, "readOnly": True})
    return mounts


def _container(plan, settings, name, image, args, resource=None, count=0, extra_env=()) -> dict:
    env = [
        {"name": "PYTHONPATH", "value": str(plan.code_dir)},
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        *extra_env,
    ]
    container = {
        "name": name,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "workingDir": str(plan.code_dir),
        "args": args,
        "env": env,
        "volumeMounts": _mounts(settings, bool(resource and count)),
    }
    if resource and count:
        container["resources"] = {"requests": {resource: count}, "limits": {resource: count}}
        # The Ascend Docker Runtime mounts the devices the device plugin gave the pod.
        env.append(
            {
                "name": "ASCEND_VISIBLE_DEVICES",
                "valueFrom": {"fieldRef": {"fieldPath": f"metadata.annotations['{resource}']"}},
            }
        )
    return container


def _labels(plan: ClusterPlan, phase: str) -> dict:
    return {
        "app": "zoobox",
        "zoobox/recipe": plan.recipe,
        "zoobox/run": plan.run_id,
        "zoobox/phase": phase,
    }


def train_manifests(plan: ClusterPlan, settings: K8sSettings) -> list[Manifest]:
    name = _dns(f"zoobox-{plan.recipe}-train-{plan.run_id}")
    image = image_for(load_recipe(plan.recipe).stage("train").env, settings)
    resource = settings.train_resource if plan.npu else None

    def replica(count: int) -> dict:
        container = _container(
            plan, settings, "ascend", image, _node_args(plan, settings, "train"),
            resource, plan.devices_per_node,
        )  # fmt: skip
        # Ascend Operator sets MASTER_PORT from the master's port named ascendjob-port.
        container["ports"] = [{"containerPort": plan.master_port, "name": "ascendjob-port"}]
        labels = {"ring-controller.atlas": settings.ring_controller, **_labels(plan, "train")}
        pod = {
            "containers": [container],
            "volumes": _volumes(settings),
            # One training node per host.
            "affinity": {
                "podAntiAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": [
                        {
                            "labelSelector": {
                                "matchExpressions": [
                                    {"key": "job-name", "operator": "In", "values": [name]}
                                ]
                            },
                            "topologyKey": "kubernetes.io/hostname",
                        }
                    ]
                }
            },
        }
        return {
            "replicas": count,
            "restartPolicy": "Never",
            "template": {"metadata": {"labels": labels}, "spec": pod},
        }

    replicas = {"Master": replica(1)}
    if plan.nodes > 1:
        replicas["Worker"] = replica(plan.nodes - 1)
    body = {
        "apiVersion": API_ASCEND,
        "kind": "AscendJob",
        "metadata": {
            "name": name,
            "namespace": settings.namespace,
            "labels": {
                "framework": "pytorch",
                "ring-controller.atlas": settings.ring_controller,
                **_labels(plan, "train"),
            },
        },
        "spec": {
            "schedulerName": "volcano",
            "runPolicy": {
                "schedulingPolicy": {"minAvailable": plan.nodes, "queue": settings.queue},
                "backoffLimit": 0,
            },
            "successPolicy": "AllWorkers",
            "replicaSpecs": replicas,
        },
    }
    return [Manifest("train", "AscendJob", body)]


def _job(plan, settings, phase, pod_spec, extra_spec=None) -> Manifest:
    spec = {
        "backoffLimit": 0,
        "template": {"metadata": {"labels": _labels(plan, phase)}, "spec": pod_spec},
    }
    spec.update(extra_spec or {})
    body = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": _dns(f"zoobox-{plan.recipe}-{phase}-{plan.run_id}"),
            "namespace": settings.namespace,
            "labels": _labels(plan, phase),
        },
        "spec": spec,
    }
    return Manifest(phase, "Job", body)


def infer_manifests(plan: ClusterPlan, settings: K8sSettings) -> list[Manifest]:
    recipe = load_recipe(plan.recipe)
    stage = recipe.stage(plan.shard_stage)
    shard_image = image_for(stage.env, settings)
    resource = settings.infer_resource if plan.npu else None

    def image_of(name: str) -> str:
        env = recipe.stage(name).env
        # Stages of the host env (plain Python + numpy) run in the sharded stage's image.
        return image_for(env, settings) if get_env(env).dockerfile else shard_image

    before = [n for n in recipe.upstream(plan.shard_stage) if n != plan.shard_stage]
    steps = [
        _container(
            plan, settings, _dns(name), image_of(name),
            _node_args(plan, settings, "--stage", name, "prepare"),
            resource if recipe.stage(name).npu else None, 1,
        )
        for name in before
    ]  # fmt: skip
    # Init containers run one after the other, in order: the last stage is the main one.
    prepare_pod = {
        "restartPolicy": "Never",
        "volumes": _volumes(settings),
        "containers": steps[-1:],
    }
    if steps[:-1]:
        prepare_pod["initContainers"] = steps[:-1]
    shards_pod = {
        "restartPolicy": "Never",
        "volumes": _volumes(settings),
        "containers": [
            _container(
                plan, settings, "shard", shard_image, _node_args(plan, settings, "shard"),
                resource, plan.devices_per_unit,
            )
        ],
    }  # fmt: skip
    finish_pod = {
        "restartPolicy": "Never",
        "volumes": _volumes(settings),
        "containers": [
            _container(plan, settings, "finish", shard_image, _node_args(plan, settings, "finish"))
        ],
    }
    return [
        _job(plan, settings, "prepare", prepare_pod),
        _job(
            plan,
            settings,
            "shards",
            shards_pod,
            {
                "completionMode": "Indexed",
                "completions": plan.units,
                "parallelism": plan.units,
            },
        ),
        _job(plan, settings, "finish", finish_pod),
    ]


def manifests(plan: ClusterPlan, settings: K8sSettings) -> list[Manifest]:
    return (train_manifests if plan.kind == "train" else infer_manifests)(plan, settings)


def images_of(items: list[Manifest]) -> list[str]:
    """Every image the manifests name, each once, in order."""
    found: list[str] = []

    def walk(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "image" and isinstance(value, str) and value not in found:
                    found.append(value)
                else:
                    walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for item in items:
        walk(item.body)
    return found


def write_manifests(items: list[Manifest], folder: Path) -> list[Path]:
    import yaml

    paths = []
    for item in items:
        path = Path(folder) / f"{item.name}.yaml"
        path.write_text(yaml.safe_dump(item.body, sort_keys=False))
        paths.append(path)
    return paths
