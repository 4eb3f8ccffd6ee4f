"""`invoke doctor`: what this machine offers and what each recipe would use here."""

from __future__ import annotations

from importlib import metadata

from zoobox.core.envspec import load_envs
from zoobox.core.errors import UserError
from zoobox.core.recipe import load_recipe, recipe_names
from zoobox.core.text import table
from zoobox.hosts.detect import container_engine, npu_host, use_engine
from zoobox.hosts.npucompat import image_compatibility
from zoobox.pipeline.choice import choose
from zoobox.pipeline.speed import fastest_cpu_backend


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def report(settings: dict, probe_engine=container_engine) -> str:
    from pathlib import Path

    from zoostage.envinfo import cann_version

    docker_settings = settings.get("docker") or {}
    npu = npu_host(
        dev_root=Path(docker_settings.get("dev_root") or "/dev"),
        driver_dir=Path(docker_settings.get("driver_dir") or "/usr/local/Ascend/driver"),
    )
    engine = probe_engine()
    use_engine(engine)  # the image checks below ask the engine found
    rows = [
        ["Docker engine", "yes" if engine.reachable else "no", engine.detail],
        [
            "Ascend Docker Runtime",
            "yes" if engine.ascend_runtime else "no",
            ", ".join(engine.runtimes) or "-",
        ],
        ["NPU devices", ", ".join(map(str, npu.devices)) or "none", str(npu.dev_root / "davinci*")],
        ["Ascend driver", npu.driver_version or "not found", str(npu.driver_dir)],
        ["npu-smi", str(npu.npu_smi) if npu.npu_smi else "not found", ""],
        ["torch (host)", _version("torch") or "not installed", ""],
        ["torch_aie (host)", _version("torch_aie") or "not installed", ""],
        ["onnxruntime (host)", _version("onnxruntime") or "not installed", ""],
        ["CANN (host)", cann_version() or "not found", "/usr/local/Ascend/ascend-toolkit"],
    ]
    text = table(rows, ["check", "found", "detail"])
    if engine.advice():
        text += f"\nnote: {engine.advice()}"
    plan_rows = []
    for name in recipe_names():
        try:
            recipe = load_recipe(name)
        except UserError as error:
            plan_rows.append([name, "-", "-", f"broken recipe: {error}"])
            continue
        choice = choose(
            recipe.backends,
            settings.get("runner", "auto"),
            settings.get("backend", "auto"),
            settings.get("devices", "0"),
            engine,
            npu,
            dry=True,
            pick_cpu=lambda candidates, name=name: fastest_cpu_backend(name, candidates, dry=True),
        )
        plan_rows.append([name, choice.runner, choice.backend, choice.reason])
    text += "\n\n" + table(plan_rows, ["recipe", "runner", "backend", "why"])
    text += "\n\n" + table(runner_rows(settings, engine), ["env", "host", "docker", "venv"])
    compat = image_compatibility(npu.driver_version, list(load_envs().values()))
    text += "\n\n" + table(compat, ["NPU env", "CANN", "driver needed", "host driver", "verdict"])
    return text


def runner_rows(settings: dict, engine) -> list[list[str]]:
    """Which runner can serve which env here (host: CPU stages of any env)."""
    from pathlib import Path

    from zoobox.core.envspec import load_envs
    from zoobox.envs.venvs import cache_from_settings, find_interpreter
    from zoobox.runners.docker import DockerRunner, DockerSettings

    venvs = cache_from_settings(settings)
    docker = DockerRunner(DockerSettings(artifacts=Path(".")))
    rows = []
    for spec in load_envs().values():
        if spec.python is None:
            rows.append([spec.name, "yes", "runs on the host", "runs on the host"])
            continue
        if not engine.reachable:
            image = "no engine"
        elif not spec.dockerfile:
            image = "no Dockerfile"
        else:
            image = "yes" if docker.image_id(spec.image) else f"image {spec.image} not built"
        state = venvs.state(spec)
        if state.ok:
            venv = "yes"
        elif state.broken:
            venv = f"venv broken: invoke envs.build --env {spec.name}"
        elif find_interpreter(spec.python, venvs.pythons)[0] is not None:
            venv = f"CPython {spec.python} found; invoke envs.build --env {spec.name}"
        else:
            venv = f"no CPython {spec.python}"
        rows.append([spec.name, "CPU stages", image, venv])
    return rows
