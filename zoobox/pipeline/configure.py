"""From settings and flags to a ready Pipeline: the logic behind every recipe task.

Settings come from invoke's config (`zoobox:` in invoke.yaml, INVOKE_ZOOBOX_* variables);
flags given on the command line win. Relative paths in settings are relative to the
repository; relative paths in flags are relative to the current directory.
"""

from __future__ import annotations

from pathlib import Path

from zoobox.core.errors import UserError
from zoobox.core.paths import REPO, default_cache
from zoobox.core.recipe import load_recipe, resolve_params
from zoobox.hosts.detect import (
    ContainerEngine,
    NpuHost,
    container_engine,
    device_access_problem,
    npu_host,
    use_engine,
)
from zoobox.pipeline.backend_envs import backend_problem, check_backend_in_envs
from zoobox.pipeline.choice import choose
from zoobox.pipeline.pipeline import Options, Pipeline, reads_dataset
from zoobox.pipeline.speed import fastest_cpu_backend
from zoobox.runners.factory import make_runner

DEFAULTS = {
    "artifacts": "artifacts",
    "cache": None,
    "runner": "auto",
    "backend": "auto",
    "devices": "0",
    "echo": True,
    "data": {},
    "docker": {},
    "venv": {},
}


def settings_from(config) -> dict:
    """A plain dict of zoobox settings from an invoke Config (or a dict, in tests)."""
    raw = config.get("zoobox", {}) if hasattr(config, "get") else {}
    merged = dict(DEFAULTS)
    for key, value in dict(raw).items():
        merged[key] = dict(value) if hasattr(value, "keys") else value
    return merged


def setting_path(value) -> Path | None:
    if value in (None, ""):
        return None
    path = Path(str(value)).expanduser()
    return path if path.is_absolute() else (REPO / path)


def flag_path(value) -> Path | None:
    if value in (None, ""):
        return None
    return Path(str(value)).expanduser().resolve()


def data_root(settings: dict, recipe, flag) -> Path:
    if flag:
        return flag_path(flag)
    dataset = recipe.dataset.get("name")
    configured = (settings.get("data") or {}).get(dataset)
    return setting_path(configured or recipe.dataset.get("root") or f"data/{dataset}")


def build_pipeline(
    settings: dict,
    recipe_name: str,
    *,
    data=None,
    artifacts=None,
    runner=None,
    backend=None,
    devices=None,
    params=None,
    force=(),
    dry=False,
    probe_engine=container_engine,
) -> Pipeline:
    recipe = load_recipe(recipe_name)
    overrides = dict(settings.get(recipe.name) or {})
    overrides.update({k: v for k, v in (params or {}).items() if v is not None})
    resolve_params(recipe, overrides)  # a bad value stops here, before anything is probed
    docker_settings = settings.get("docker") or {}
    npu = npu_host(
        dev_root=Path(docker_settings.get("dev_root") or "/dev"),
        driver_dir=Path(docker_settings.get("driver_dir") or "/usr/local/Ascend/driver"),
    )
    runner_name = runner or settings["runner"]
    backend_name = backend or settings["backend"]
    # Probing the engine costs a `docker info`; skip it when the answer cannot matter.
    needs_probe = runner_name == "docker" or (runner_name == "auto" and npu.present)
    container = probe_engine() if needs_probe else ContainerEngine(False, "not probed")
    use_engine(container)  # e.g. the dev engine's socket, found without DOCKER_HOST
    choice = choose(
        recipe.backends,
        runner_name,
        backend_name,
        devices if devices is not None else settings["devices"],
        container,
        npu,
        dry=dry,
        pick_cpu=lambda candidates: fastest_cpu_backend(recipe.name, candidates, dry=dry),
        cpu_usable=lambda runner, name: (
            not backend_problem(recipe, recipe.stage_names, runner, name)
        ),
    )
    artifacts_dir = flag_path(artifacts) or setting_path(settings["artifacts"])
    cache = setting_path(settings.get("cache")) or default_cache() / "weights"
    root = data_root(settings, recipe, data)
    runner_obj, artifacts_dir = make_runner(
        choice.runner,
        settings,
        artifacts=artifacts_dir,
        data=root,
        npu=npu,
        engine=container,
        dry=dry,
    )
    if choice.npu and not dry:
        check_npu_access(npu, choice.devices, runner_obj)
    options = Options(
        artifacts=artifacts_dir,
        cache=cache,
        data=root,
        params=overrides,
        force=tuple(force),
        dry=dry,
        echo=bool(settings.get("echo", True)),
    )
    return Pipeline(recipe, choice, runner_obj, options)


def check_npu_access(npu: NpuHost, devices: list[int], runner) -> None:
    """Before any stage starts: can the stages' processes open the device nodes?"""
    uid, gids = runner.npu_identity()
    problem = device_access_problem(npu.dev_root, devices, uid, gids)
    if problem:
        raise UserError(
            f"{problem}, so the {runner.name} runner's stage processes could not use the "
            "NPU: give the nodes the driver's HwHiAiUser group (its installer does; "
            "`chgrp HwHiAiUser /dev/davinci*`), or run as a user who can open them "
            "(zoobox.docker.user for containers)"
        )


def check_backend(pipeline: Pipeline, target: str | None) -> None:
    """The envs of the stages that will load the backend install it (docker, venv)."""
    recipe = pipeline.recipe
    names = recipe.upstream(target) if target else recipe.default_stages
    check_backend_in_envs(recipe, names, pipeline.choice.runner, pipeline.choice.backend)


def check_dataset(pipeline: Pipeline, target: str | None) -> None:
    """A missing dataset is one line saying where it was looked for and how to get it."""
    recipe = pipeline.recipe
    names = recipe.upstream(target) if target else recipe.default_stages
    uses_data = any(reads_dataset(recipe.stage(n)) for n in names)
    root = pipeline.options.data
    if uses_data and root is not None and not Path(root).exists():
        how = recipe.dataset.get("get", "")
        raise UserError(
            f"dataset {recipe.dataset.get('name')} not found at {root}; pass "
            f"--data PATH or set zoobox.data.{recipe.dataset.get('name')}. "
            f"{how}".strip()
        )


def parse_params(pairs) -> dict:
    """--param key=value pairs to a dict, values parsed as YAML scalars (1, true, fp16)."""
    import yaml

    result = {}
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UserError(f"--param takes key=value, not {pair!r}")
        result[key.strip().replace("-", "_")] = yaml.safe_load(value)
    return result
