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
        try:
            job = _run(argv, f"submitting {script.name}").strip().split(";")[0]
        except UserError as error:
            if ids:
                # The jobs before it would run for nothing (or wait forever): cancel them.
                subprocess.run(["scancel", *ids], capture_output=True)
                raise UserError(
                    f"{error}; cancelled the jobs already submitted ({', '.join(ids)})"
                ) from None
            raise
        ids.append(job)
        _say(f"submitted {script.name}: job {job} ({script.path})")
    _say(
        f"follow it: squeue -j {','.join(ids)}; logs in {plan.run_dir / 'logs'}; "
        f"cancel: scancel {' '.join(ids)}"
    )
    return ids


# -- Kubernetes ----------------------------------------------------------------------------
def check_images(images: list[str], settings, image_exists=None) -> None:
    """Every image the manifests name was built here (`invoke images.build`)."""
    from zoobox.envs.image_build import image_info

    exists = image_exists or (lambda name: image_info(name) is not None)
    registry = (settings.registry or "").rstrip("/")
    for image in images:
        local = (
            image[len(registry) + 1 :] if registry and image.startswith(registry + "/") else image
        )
        if not exists(local):
            env = local.split("/")[-1].split(":")[0]
            push = f" --push {registry}" if registry else ""
            raise UserError(
                f"image {local} was never built here (docker image inspect finds nothing): "
                f"build it with `invoke images.build --env {env}{push}` (a changed env spec "
                "is a new image tag), then rerun"
            )


def submit_k8s(
    plan: ClusterPlan, settings, local_artifacts, apply: bool = False, image_exists=None
) -> list:
    """Write the manifests (and the plan, and the code snapshot) into the run's folder on
    this host's view of the shared claim; with `apply`, kubectl apply them (inference: each
    Job after the one before completed). Returns the manifests written."""
    from zoobox.cluster.k8s import images_of, manifests, write_manifests

    if not settings.claim:
        raise UserError(
            "a Kubernetes run needs the PersistentVolumeClaim that holds the shared artifacts "
            "folder (ReadWriteMany): set zoobox.cluster.k8s.claim or pass --claim"
        )
    items = manifests(plan, settings)
    check_images(images_of(items), settings, image_exists)
    if apply:
        require_tool("kubectl", "install it and point it at the cluster (KUBECONFIG)")
    run_dir = write_plan(plan, local_artifacts)
    paths = write_manifests(items, run_dir)
    for path in paths:
        _say(f"wrote {path}")
    if not apply:
        order = ", then ".join(p.name for p in paths)
        _say(f"not applied; --apply applies {order} (each Job once the one before completed)")
        return items
    namespace = ["--namespace", settings.namespace]
    for item, path in zip(items, paths):
        _say(
            _run(["kubectl", "apply", *namespace, "-f", str(path)], f"applying {path.name}").strip()
        )
        kind = "acjob" if item.kind == "AscendJob" else "job"
        if item.kind == "Job" and item is not items[-1]:
            _say(f"waiting for job/{item.object_name} to complete (kubectl wait)")
            _run(
                [
                    "kubectl", "wait", *namespace, "--for=condition=complete",
                    f"--timeout={settings.wait_timeout}", f"job/{item.object_name}",
                ],
                f"waiting for {item.name}",
            )  # fmt: skip
    _say(
        f"follow it: kubectl get {kind} {items[-1].object_name} -n {settings.namespace}; "
        f"kubectl logs -n {settings.namespace} -l zoobox/run={plan.run_id} --all-containers"
    )
    return items
