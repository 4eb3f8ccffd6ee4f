"""A cluster run's plan: what runs where, written into the shared folder before submission.

Training (`<recipe>.train`) runs one zoobox training node per host. Inference (any other
target whose stages include a sharded one) runs in three phases: `prepare` (the stages the
sharded stage needs, once), `shard` (one unit per host, or per pod, each running its
devices' shards of hosts x devices) and `finish` (merge the shards into the stage's
output, then the stages after it: evaluate, report).

The plan, a run id and a snapshot of the code go into ARTIFACTS/<recipe>/cluster/<run id>/
on the shared folder. Every job reads the plan from there: a host that does not see that
folder (or sees another run's) stops with one line instead of writing elsewhere.
"""

from __future__ import annotations

import json
import shutil
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

from zoobox.core.errors import UserError
from zoobox.core.paths import REPO
from zoobox.core.recipe import load_recipe, recipe_names, resolve_params
from zoostage.backends import NPU_BACKENDS

PLAN_FILE = "plan.json"
# What a node needs to run the engine: the host side, the stage side, recipes, env specs.
CODE = ("zoobox", "zoostage", "models", "data_scripts", "envs", "invoke.yaml", "pyproject.toml")


@dataclass
class ClusterPlan:
    recipe: str
    target: str | None  # the stage asked for (None: all)
    kind: str  # "train" | "infer"
    nodes: int
    devices_per_node: int
    artifacts: str  # the shared folder as the nodes see it
    run_id: str = field(
        default_factory=lambda: time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
    )
    data: str | None = None  # the dataset root as the nodes see it
    runner: str = "host"
    backend: str = "auto"
    params: dict = field(default_factory=dict)
    shard_stage: str | None = None  # inference: the stage that is sharded
    master_port: int = 29500
    # Inference: devices per shard unit (a Slurm array task takes a host's devices, an
    # Indexed Job's pod one device); 0: devices_per_node.
    unit_devices: int = 0
    npu: bool = True  # whether the sharded (or training) stage uses NPUs

    @property
    def shards(self) -> int:
        return self.nodes * self.devices_per_node

    @property
    def devices_per_unit(self) -> int:
        return self.unit_devices or self.devices_per_node

    @property
    def units(self) -> int:
        return self.shards // self.devices_per_unit

    @property
    def run_dir(self) -> Path:
        return Path(self.artifacts) / self.recipe / "cluster" / self.run_id

    @property
    def plan_file(self) -> Path:
        return self.run_dir / PLAN_FILE

    @property
    def code_dir(self) -> Path:
        return self.run_dir / "code"

    def shard_dir(self, index: int) -> Path:
        return self.run_dir / "shards" / f"shard-{index}"

    def node_artifacts(self, rank: int) -> Path:
        """Where a training node keeps its engine's folder: rank 0 the shared one, others
        their own (the stage lock and work folder are per artifacts folder)."""
        return Path(self.artifacts) if rank == 0 else self.run_dir / f"node-{rank}"

    def to_json(self) -> dict:
        return asdict(self)

    def seen_from(self, artifacts: str, data: str | None) -> ClusterPlan:
        """The same plan with the shared folder (and dataset) where another host sees it."""
        copy = ClusterPlan(**self.to_json())
        copy.artifacts = artifacts
        copy.data = data
        return copy


def parse_target(text: str) -> tuple[str, str | None]:
    """'retinaface.all' -> ('retinaface', None); 'retinanet.train' -> ('retinanet', 'train')."""
    recipe, _, stage = (text or "").partition(".")
    if recipe not in recipe_names():
        raise UserError(
            f"unknown recipe {recipe!r} in {text!r}: one of {', '.join(recipe_names())} "
            "followed by .all or .<stage>, e.g. retinaface.all"
        )
    names = load_recipe(recipe).stage_names
    if stage in ("", "all"):
        return recipe, None
    if stage not in names:
        raise UserError(f"unknown stage {stage!r} of {recipe}: one of all, {', '.join(names)}")
    return recipe, stage


def make_plan(
    target: str,
    *,
    nodes: int,
    devices_per_node: int,
    artifacts,
    data=None,
    runner: str = "host",
    backend: str = "auto",
    params: dict | None = None,
    master_port: int = 29500,
) -> ClusterPlan:
    """Check a cluster request and make its plan (nothing written yet)."""
    recipe_name, stage = parse_target(target)
    recipe = load_recipe(recipe_name)
    if artifacts in (None, ""):
        raise UserError(
            "a cluster run needs a shared artifacts folder that every host sees at the same "
            "path (NFS, a ReadWriteMany volume): pass --artifacts PATH"
        )
    for name, value in (("--nodes", nodes), ("--devices-per-node", devices_per_node)):
        if not isinstance(value, int) or value < 1:
            raise UserError(f"{name} must be a whole number >= 1, not {value!r}")
    params = dict(params or {})
    resolved = resolve_params(recipe, params)  # a bad --param stops here, nothing written
    auto = backend in (None, "", "auto")
    if auto:
        # Every job of the run must run the same backend: cluster hosts are NPU hosts.
        backend = recipe.backends.get("npu") or "auto"
    if stage == "train":
        kind, shard_stage = "train", None
        npu = str(resolved.get("train_device", "npu")) != "cpu"
        if auto and not npu:
            # Training on CPU processes (train_device=cpu): no NPU backend to ask for.
            cpu = recipe.backends.get("cpu") or ["torchscript"]
            backend = cpu[0] if isinstance(cpu, list) else cpu
    else:
        names = recipe.upstream(stage) if stage else recipe.default_stages
        sharded = [n for n in names if recipe.stage(n).shard]
        if not sharded:
            raise UserError(
                f"{target} has no sharded stage to spread over hosts (sharded: "
                f"{', '.join(s.name for s in recipe.stages if s.shard) or 'none'}); run it "
                "on one host, or name a target that includes inference (e.g. "
                f"{recipe_name}.all)"
            )
        kind, shard_stage = "infer", sharded[0]
        npu = recipe.stage(shard_stage).npu and backend in NPU_BACKENDS
    return ClusterPlan(
        recipe=recipe_name,
        target=stage,
        kind=kind,
        nodes=nodes,
        devices_per_node=devices_per_node,
        artifacts=str(Path(artifacts).expanduser().resolve()),
        data=str(Path(data).expanduser().resolve()) if data else None,
        runner=runner,
        backend=backend,
        params=params,
        shard_stage=shard_stage,
        master_port=master_port,
        npu=npu,
    )


def snapshot_code(destination: Path) -> None:
    """Copy the code a node runs into the run's folder: every job of the run runs the same
    code, whatever the hosts have checked out (or not)."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache")
    temp = destination.with_name(destination.name + ".tmp")
    shutil.rmtree(temp, ignore_errors=True)
    temp.mkdir(parents=True)
    for name in CODE:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, temp / name, ignore=ignore)
        elif source.is_file():
            shutil.copy2(source, temp / name)
    temp.rename(destination)


def write_plan(plan: ClusterPlan, local_artifacts=None) -> Path:
    """Write the plan and the code snapshot into the run's folder (on this host's view of
    the shared folder, `local_artifacts`, when the nodes see it elsewhere); returns the
    run's folder here."""
    here = plan.seen_from(str(local_artifacts), plan.data) if local_artifacts else plan
    run_dir = here.run_dir
    run_dir.mkdir(parents=True, exist_ok=False)
    snapshot_code(run_dir / "code")
    temp = run_dir / (PLAN_FILE + ".tmp")
    temp.write_text(json.dumps(plan.to_json(), indent=2) + "\n")
    temp.rename(run_dir / PLAN_FILE)
    return run_dir


def read_plan(path, run_id: str) -> ClusterPlan:
    """The plan a job was given; one line when this host does not see it as planned."""
    path = Path(path)
    if not path.is_file():
        raise UserError(
            f"this host ({_hostname()}) does not see the run's plan {path}: the artifacts "
            "folder must be shared (NFS, a ReadWriteMany volume) and mounted at the same "
            "path on every host"
        )
    try:
        plan = ClusterPlan(**json.loads(path.read_text()))
    except (ValueError, TypeError) as error:
        raise UserError(f"{path} is not a zoobox cluster plan ({error})") from None
    if plan.run_id != run_id:
        raise UserError(
            f"{path} belongs to run {plan.run_id}, not {run_id}: this host sees another "
            "folder than the one the run was planned in"
        )
    return plan


def _hostname() -> str:
    import socket

    return socket.gethostname()
