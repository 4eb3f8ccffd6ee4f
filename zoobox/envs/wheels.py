"""Pins PyPI has no wheel of for this machine: the local wheels an env needs first.

PyPI's torch 1.5.0 has a single CPython 3.7 Linux wheel, for x86_64 (pypi.org/simple/torch
lists torch-1.5.0-cp37-cp37m-manylinux1_x86_64.whl and no aarch64 one), while most 310P
hosts are aarch64. There the atc image and venv need a wheel built elsewhere, put in
docker/local/wheels/: the image builds (PIP_FIND_LINKS) and the venvs look there.
`images.build` and `envs.build` check this first and say exactly that, instead of
failing inside pip.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path

from zoobox.core.envspec import EnvSpec
from zoobox.core.errors import UserError
from zoobox.core.paths import repo_relative
from zoobox.envs.installers import machine_arch
from zoobox.envs.requirements import CONTEXT

LOCAL_WHEELS = CONTEXT / "local" / "wheels"

# (package, version) -> the architectures PyPI has a Linux wheel of it for (the pins of
# envs/ that lack one somewhere; the others have x86_64 and aarch64 wheels on PyPI).
PYPI_LINUX_ARCHS = {("torch", "1.5.0"): ("x86_64",)}


def python_tag(spec: EnvSpec) -> str:
    return "cp" + (spec.python or "").replace(".", "")


def wheel_pattern(name: str, version: str, spec: EnvSpec, arch: str) -> str:
    """The wheel file names that serve `name==version` for the env's Python on `arch`."""
    tag = python_tag(spec)
    return f"{name.replace('-', '_')}-{version}*-{tag}-{tag}*-*{arch}.whl"


def missing_local_wheels(
    spec: EnvSpec, arch: str | None = None, folder: Path | None = None
) -> list[tuple[str, str, str]]:
    """[(requirement, wanted file pattern, archs PyPI has)] the env lacks on `arch`."""
    arch = arch or machine_arch()
    folder = Path(folder) if folder else LOCAL_WHEELS
    names = [p.name.lower() for p in folder.iterdir()] if folder.is_dir() else []
    missing = []
    for requirement in spec.packages:
        name, _, version = requirement.partition("==")
        archs = PYPI_LINUX_ARCHS.get((name.strip().lower(), version.strip()))
        if archs is None or arch in archs:
            continue
        pattern = wheel_pattern(name.strip(), version.strip(), spec, arch)
        if not any(fnmatch.fnmatch(n, pattern.lower()) for n in names):
            missing.append((requirement, pattern, ", ".join(archs)))
    return missing


def require_local_wheels(
    spec: EnvSpec, arch: str | None = None, folder: Path | None = None
) -> None:
    """A UserError naming the wheel to provide when PyPI cannot serve a pin here."""
    arch = arch or machine_arch()
    folder = Path(folder) if folder else LOCAL_WHEELS
    missing = missing_local_wheels(spec, arch, folder)
    if not missing:
        return
    requirement, _, archs = missing[0]
    name, _, version = requirement.partition("==")
    tag = python_tag(spec)
    abi = tag + ("m" if spec.python == "3.7" else "")  # CPython 3.7 wheels carry the m ABI
    example = f"{name.replace('-', '_')}-{version}-{tag}-{abi}-linux_{arch}.whl"
    raise UserError(
        f"env {spec.name} pins {requirement}, and PyPI has no {arch} wheel of it (only "
        f"{archs}) for Python {spec.python}: put one ({example}, e.g. built from source on "
        f"this machine) in {repo_relative(folder)}/, where the image build and the venv "
        f"look for wheels first, lock it with `invoke envs.lock --env {spec.name} --arch "
        f"{arch} --find-links {repo_relative(folder)}`, then rerun (docker/README.md, "
        "'aarch64')"
    )


def pip_environment(env: dict, folder: Path | None = None) -> dict:
    """`env` with the local wheel folder added to pip's find-links, when it exists."""
    folder = Path(folder) if folder else LOCAL_WHEELS
    if not folder.is_dir():
        return env
    env = dict(env)
    # pip reads PIP_FIND_LINKS as a space-separated list: keep what the machine set.
    env["PIP_FIND_LINKS"] = " ".join(p for p in (env.get("PIP_FIND_LINKS"), str(folder)) if p)
    return env
