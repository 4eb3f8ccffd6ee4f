"""Environment specs (`envs/<name>.yaml`): which Python, which pins, which image.

An env is what a stage needs to run: materialized as a Docker image (docker runner), a
virtual environment (venv runner) or nothing at all (host runner, the current
interpreter). Its content hash names the image tag and the venv, so a changed pin means
a new image, never a stale one.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import yaml

from zoobox.core.errors import UserError
from zoobox.core.paths import REPO

ENVS_DIR = REPO / "envs"
# The env's requirements and locks (zoobox.envs.locks); its image copies them.
REQUIREMENTS_DIR = REPO / "docker" / "requirements"


@dataclass(frozen=True)
class EnvSpec:
    name: str
    python: str | None  # "3.9"; None: whatever runs zoobox (the host env)
    npu: bool
    description: str = ""
    packages: tuple[str, ...] = ()
    pip_args: tuple[str, ...] = ()
    base_image: str | None = None
    dockerfile: str | None = None
    npu_stack: dict = field(default_factory=dict)
    raw: dict = field(default_factory=dict, compare=False, repr=False)

    def lock_files(self) -> list[Path]:
        """docker/requirements/<env>.* and <env>-npu.*: what its Dockerfile copies, locks too."""
        found = [
            path
            for pattern in (f"{self.name}.*", f"{self.name}-npu.*")
            for path in REQUIREMENTS_DIR.glob(pattern)
            if path.is_file()
        ]
        return sorted(found)

    @property
    def hash(self) -> str:
        """Content hash of the spec, its Dockerfile + entrypoint and its locks: names images.

        A changed lock is a new tag, hence a rebuild; an unchanged one finds the image built.
        """
        digest = hashlib.sha256(json.dumps(self.raw, sort_keys=True).encode())
        for path in self.lock_files():
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
        if self.dockerfile and (REPO / self.dockerfile).is_file():
            digest.update((REPO / self.dockerfile).read_bytes())
            # Every image carries docker/entrypoint.sh: an edit there is a new image too.
            entrypoint = REPO / "docker" / "entrypoint.sh"
            if entrypoint.is_file():
                digest.update(entrypoint.read_bytes())
        return digest.hexdigest()

    @property
    def image(self) -> str:
        """The image this env runs in under the docker runner."""
        return f"zoobox/{self.name}:{self.hash[:12]}"

    def pin(self, package: str) -> str | None:
        """The pinned version of `package` ("torch" -> "1.10.1"), or None."""
        for requirement in self.packages:
            name, _, version = requirement.partition("==")
            if name.strip().lower() == package.lower():
                return version.strip() or None
        return None


def _from_dict(data: dict) -> EnvSpec:
    return EnvSpec(
        name=data["name"],
        python=str(data["python"]) if data.get("python") is not None else None,
        npu=bool(data.get("npu", False)),
        description=data.get("description", ""),
        packages=tuple(data.get("packages") or ()),
        pip_args=tuple(data.get("pip_args") or ()),
        base_image=data.get("base_image"),
        dockerfile=data.get("dockerfile"),
        npu_stack=dict(data.get("npu_stack") or {}),
        raw=data,
    )


@lru_cache(maxsize=None)
def load_envs(directory: Path = ENVS_DIR) -> dict[str, EnvSpec]:
    specs = {}
    for path in sorted(Path(directory).glob("*.yaml")):
        data = yaml.safe_load(path.read_text())
        if data.get("name") != path.stem:
            raise UserError(f"{path}: name {data.get('name')!r} must match the file name")
        specs[path.stem] = _from_dict(data)
    return specs


def get_env(name: str) -> EnvSpec:
    envs = load_envs()
    if name not in envs:
        raise UserError(f"unknown env {name!r} (envs/ has {', '.join(sorted(envs))})")
    return envs[name]
