"""The pip requirement files of the images, rendered from the env specs (never edited by hand).

docker/requirements/<env>.txt       from envs/<env>.yaml `packages`
docker/requirements/<env>-npu.txt   and its `npu_packages`
"""

from __future__ import annotations

from pathlib import Path

from zoobox.core.envspec import EnvSpec, load_envs
from zoobox.core.paths import REPO

CONTEXT = REPO / "docker"
REQUIREMENTS = CONTEXT / "requirements"


HEADER = (
    "# Generated from envs/{name}.yaml ({key}) by `invoke images.requirements`.\n"
    "# Edit the spec, not this file; tests/test_images.py checks that they agree.\n"
)


def buildable(spec: EnvSpec) -> bool:
    return bool(spec.dockerfile)


def buildable_envs() -> list[EnvSpec]:
    return [spec for spec in load_envs().values() if buildable(spec)]


def npu_packages(spec: EnvSpec) -> tuple[str, ...]:
    return tuple((spec.raw or {}).get("npu_packages") or ())


def requirements_files(spec: EnvSpec) -> dict[Path, str]:
    """The requirements files an env's Dockerfile copies, with the text they must hold."""
    files = {REQUIREMENTS / f"{spec.name}.txt": _render(spec, "packages", spec.packages)}
    if spec.npu:
        files[REQUIREMENTS / f"{spec.name}-npu.txt"] = _render(
            spec, "npu_packages", npu_packages(spec)
        )
    return files


def _render(spec: EnvSpec, key: str, packages) -> str:
    lines = [HEADER.format(name=spec.name, key=key)]
    if spec.pip_args:
        lines.append(" ".join(spec.pip_args) + "\n")
    lines += [f"{requirement}\n" for requirement in packages]
    return "".join(lines)


def requirements_drift(specs=None) -> list[Path]:
    """Requirements files that do not hold what their spec says (missing ones included)."""
    stale = []
    for spec in specs if specs is not None else buildable_envs():
        for path, text in requirements_files(spec).items():
            if not path.is_file() or path.read_text() != text:
                stale.append(path)
    return stale


def write_requirements(specs=None) -> list[Path]:
    """Render the requirements files from the specs; returns the ones that changed."""
    changed = []
    for spec in specs if specs is not None else buildable_envs():
        for path, text in requirements_files(spec).items():
            if not path.is_file() or path.read_text() != text:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
                changed.append(path)
    return changed
