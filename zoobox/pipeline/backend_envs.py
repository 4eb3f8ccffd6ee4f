"""Does each env that runs the backend have it? Asked before any stage starts.

With the host runner every stage runs in zoobox's own interpreter, which the backend
choice already probed. With the docker and venv runners a stage runs in its env's image
or venv, which installs exactly its lock: a backend whose package the env does not pin
(onnxruntime in the export or aie image) would fail there, after the stages before it
ran and recorded themselves. The NPU backends come from installers, not pins: the image
checks (`invoke images.check`) cover those.
"""

from __future__ import annotations

from zoobox.core.envspec import EnvSpec, load_envs
from zoobox.core.errors import UserError
from zoostage.backends import DISTRIBUTIONS, NPU_BACKENDS

BACKEND_PLACEHOLDER = "{p.backend}"
ISOLATED_RUNNERS = ("docker", "venv")


def stages_running_backend(recipe, names) -> list:
    """The stages among `names` whose command takes the backend (they load it)."""
    found = []
    for name in names:
        spec = recipe.stage(name)
        if any(BACKEND_PLACEHOLDER in str(value) for value in spec.args.values()):
            found.append(spec)
    return found


def provides(env: EnvSpec, distribution: str) -> bool:
    """Whether the env pins `distribution` (names compared as pip does: case, - and _)."""
    wanted = distribution.lower().replace("-", "_")
    for requirement in env.packages:
        name = requirement.split("==")[0].split(">")[0].split("<")[0].strip()
        if name.lower().replace("-", "_") == wanted:
            return True
    return False


def backend_problem(recipe, names, runner: str, backend: str, envs=None) -> str | None:
    """Why `backend` cannot run in the envs of stages `names` under `runner`, or None."""
    if runner not in ISOLATED_RUNNERS or backend in NPU_BACKENDS:
        return None
    envs = envs if envs is not None else load_envs()
    distribution = DISTRIBUTIONS[backend]
    lacking: dict[str, list[str]] = {}
    for spec in stages_running_backend(recipe, names):
        env = envs.get(spec.env)
        if env is None or env.python is None:  # the host env: zoobox's own interpreter
            continue
        if not provides(env, distribution):
            lacking.setdefault(env.name, []).append(spec.name)
    if not lacking:
        return None
    kind = "image" if runner == "docker" else "venv"
    where = " nor ".join(
        f"env {env}'s {kind} (stage{'s' if len(stages) > 1 else ''} {', '.join(stages)})"
        for env, stages in lacking.items()
    )
    others = [
        name
        for name in DISTRIBUTIONS
        if name not in NPU_BACKENDS
        and name != backend
        and all(provides(envs[env], DISTRIBUTIONS[name]) for env in lacking)
    ]
    instead = f"--backend {others[0]}, or " if others else ""
    verb = "is installed in neither" if len(lacking) > 1 else "is not installed in"
    return (
        f"--backend {backend} with --runner {runner}: {distribution} {verb} {where} "
        f"(envs/<env>.yaml pins what each has); use {instead}--runner host"
    )


def check_backend_in_envs(recipe, names, runner: str, backend: str, envs=None) -> None:
    """Raise UserError naming the envs and stages that lack the backend's package."""
    problem = backend_problem(recipe, names, runner, backend, envs)
    if problem:
        raise UserError(problem)
