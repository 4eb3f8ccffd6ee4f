"""Building the env images (docker CLI): plan, build args, build, push.

One image per env with a Dockerfile (docker/<env>.Dockerfile), tagged with the env's
content hash (`EnvSpec.image`, zoobox/<env>:<hash12>), built from docker/ as the context:

    docker/<env>.Dockerfile          one per env; BASE_IMAGE is a build argument
    docker/entrypoint.sh             Ascend set_env.sh + driver libraries, then the command
    docker/requirements/             each env's locks (zoobox.envs.locks): pip installs the
                                     one for the NPU mode and `uname -m`, hashes checked
    docker/npu-installers/<env>/     CANN / Torch_AIE / ais_bench files the user supplies
                                     (zoobox.envs.installers)
    docker/local/                    per-machine extras (pip's CA bundle, local wheels),
                                     bind-mounted into pip steps, never copied

Works with any Docker-compatible engine the docker CLI reaches (DOCKER_HOST): Docker with
BuildKit, or podman's API as `invoke dev.engine` starts it. Every command is echoed.
Listing and checking built images: zoobox.envs.image_check.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from zoobox.core.children import run_child
from zoobox.core.envspec import EnvSpec, get_env
from zoobox.core.errors import UserError
from zoobox.core.paths import REPO, repo_relative
from zoobox.core.text import quote
from zoobox.envs import build_cgroup
from zoobox.envs.installers import InstallerCheck, check_installers, npu_mode
from zoobox.envs.locks import Lock, lock_for, machine_arch
from zoobox.envs.requirements import CONTEXT, buildable, buildable_envs
from zoobox.envs.wheels import require_local_wheels

LOCAL = CONTEXT / "local"


CA_FILE = "ca-certificates.crt"


LOCAL_PYTHON = "localhost/zoobox/python:{python}-bookworm"  # made by `invoke dev.engine`


DOCKER = "docker"

# pip's patience inside a build: the host's setting when it has one, else these (PyPI read
# timeouts at pip's default 15 s broke full builds here).
PIP_PATIENCE = {"PIP_DEFAULT_TIMEOUT": "120", "PIP_RETRIES": "5"}


def pip_patience(environ=None) -> dict[str, str]:
    environ = os.environ if environ is None else environ
    return {key: environ.get(key) or default for key, default in PIP_PATIENCE.items()}


def dockerfile_args(path: Path) -> dict[str, str | None]:
    """ARG names a Dockerfile declares, with their defaults (None: no default)."""
    found: dict[str, str | None] = {}
    for line in _instructions(Path(path).read_text()):
        match = re.match(r"ARG\s+([A-Za-z_][A-Za-z0-9_]*)(?:=(.*))?$", line)
        if match:
            name, default = match.group(1), match.group(2)
            if default is not None or name not in found:
                found[name] = default.strip().strip('"') if default is not None else None
    return found


def _instructions(text: str) -> list[str]:
    """A Dockerfile's instructions, continuation lines joined, comments dropped."""
    out, current = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if current and line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        out.append((current + line).strip())
        current = ""
    if current:
        out.append(current.strip())
    return out


def base_image_for(spec: EnvSpec, base: str = "auto") -> str:
    """The BASE_IMAGE to build `spec` from.

    spec: the spec's base_image (the registry's python:X.Y-slim). local: the image
    `invoke dev.engine` made from this machine's CPython. auto: local when DOCKER_HOST is
    the engine `invoke dev.engine` started, else spec. Anything else: that image.
    """
    if base == "auto":
        from zoobox.hosts.detect import dev_engine_host

        base = "local" if os.environ.get("DOCKER_HOST") == dev_engine_host() else "spec"
    if base == "spec":
        if not spec.base_image:
            raise UserError(f"envs/{spec.name}.yaml names no base_image")
        return spec.base_image
    if base == "local":
        return LOCAL_PYTHON.format(python=spec.python)
    return base


def git_revision() -> str:
    from zoobox.core.paths import git_revision as revision

    return revision()


@dataclass
class BuildPlan:
    spec: EnvSpec
    npu: str  # present | absent
    base_image: str
    argv: list[str]
    installers: InstallerCheck
    lock: Lock  # what pip installs: the env's lock for this NPU mode and architecture
    push: list[list[str]] = field(default_factory=list)


def build_args(
    spec: EnvSpec, npu: str, base_image: str, installers: InstallerCheck, lock: Lock
) -> dict:
    """The build arguments for `spec`, limited to the ARGs its Dockerfile declares."""
    stack = spec.npu_stack
    values = {
        **pip_patience(),
        "ZOOBOX_LOCK": lock.id,
        "BASE_IMAGE": base_image,
        "ZOOBOX_PYTHON": spec.python,
        "NPU": npu,
        "NPU_INSTALLERS": installers.fingerprint(),
        "TORCH_VERSION": spec.pin("torch"),
        "CANN_VERSION": stack.get("cann"),
        "TORCH_AIE_VERSION": stack.get("torch_aie"),
        "AIE_RUNTIME_VERSION": stack.get("aie_runtime"),
        "ZOOBOX_SPEC_HASH": spec.hash[:12],
        "ZOOBOX_REVISION": git_revision(),
        "ZOOBOX_CREATED": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if npu == "present":
        values.update(installers.build_args())  # the installer files chosen, by name
    declared = dockerfile_args(REPO / spec.dockerfile)
    return {k: str(v) for k, v in values.items() if k in declared and v is not None}


def build_command(
    spec: EnvSpec,
    no_cache: bool = False,
    build_args: dict | None = None,
    docker: str = DOCKER,
) -> list[str]:
    args = [docker, "build", "-f", str(REPO / spec.dockerfile), "-t", spec.image]
    if no_cache:
        args.append("--no-cache")
    for key, value in (build_args or {}).items():
        args += ["--build-arg", f"{key}={value}"]
    args.append(str(CONTEXT))
    return args


def push_commands(spec: EnvSpec, registry: str, docker: str = DOCKER) -> list[list[str]]:
    target = f"{registry.rstrip('/')}/{spec.image}"
    return [[docker, "tag", spec.image, target], [docker, "push", target]]


def plan_build(
    spec: EnvSpec,
    *,
    no_cache: bool = False,
    npu: str = "auto",
    base: str = "auto",
    push: str | None = None,
    extra_args: dict | None = None,
    installers_dir: Path | None = None,
    arch: str | None = None,
    docker: str = DOCKER,
    wheels_dir: Path | None = None,
) -> BuildPlan:
    if not buildable(spec):
        raise UserError(f"env {spec.name} has no image (it is the machine's own Python)")
    if not (REPO / spec.dockerfile).is_file():
        raise UserError(f"env {spec.name}: {spec.dockerfile} does not exist")
    require_local_wheels(spec, arch, wheels_dir)  # before pip could fail in the build
    check = check_installers(spec, installers_dir, arch)
    mode = npu_mode(check, npu)
    # A stale lock (spec edited, not relocked) or none for this architecture stops here.
    lock = lock_for(spec, arch or machine_arch(), npu=mode == "present")
    base_image = base_image_for(spec, base)
    args = build_args(spec, mode, base_image, check, lock)
    args.update(extra_args or {})
    argv = build_command(spec, no_cache, args, docker)
    pushes = push_commands(spec, push, docker) if push else []
    return BuildPlan(spec, mode, base_image, argv, check, lock, pushes)


def image_info(image: str, docker: str = DOCKER) -> dict | None:
    """`docker image inspect` of one image, or None when it is not there."""
    try:
        result = subprocess.run(
            [docker, "image", "inspect", image], capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if result.returncode != 0:
        return None
    try:
        data = json.loads(result.stdout)
    except json.JSONDecodeError:
        return None
    return data[0] if isinstance(data, list) and data else None


def require_engine() -> None:
    """A clear error when no Docker-compatible engine answers the docker CLI."""
    from zoobox.hosts.detect import container_engine, use_engine

    engine = container_engine(timeout=20)
    if not engine.reachable:
        raise UserError(
            f"no Docker engine answers ({engine.detail}): start one (on a machine without "
            "Docker: `invoke dev.engine`) and export the DOCKER_HOST it prints"
        )
    use_engine(engine)
    print(f"docker engine: {engine.detail}", flush=True)


def labels_of(info: dict | None) -> dict:
    return dict(((info or {}).get("Config") or {}).get("Labels") or {})


def up_to_date(plan: BuildPlan, docker: str = DOCKER) -> bool:
    labels = labels_of(image_info(plan.spec.image, docker))
    return (
        labels.get("org.zoobox.spec") == plan.spec.hash[:12]
        and labels.get("org.zoobox.lock") == plan.lock.id
        and labels.get("org.zoobox.npu") == plan.npu
        and labels.get("org.opencontainers.image.base.name") == plan.base_image
    )


def stage_ca_bundle(ca_bundle: str | None) -> Path | None:
    """Put the CA bundle pip must trust into docker/local/ (bind-mounted, never copied)."""
    path = ca_bundle if ca_bundle is not None else os.environ.get("PIP_CERT")
    target = LOCAL / CA_FILE
    if not path:
        return target if target.is_file() else None
    source = Path(path).expanduser()
    if not source.is_file():
        raise UserError(f"CA bundle {source} does not exist (from --ca-bundle or PIP_CERT)")
    LOCAL.mkdir(parents=True, exist_ok=True)
    if not target.is_file() or target.read_bytes() != source.read_bytes():
        shutil.copyfile(source, target)
    return target


def build_images(
    env: str | None = None,
    no_cache: bool = False,
    dry: bool = False,
    *,
    npu: str = "auto",
    base: str = "auto",
    push: str | None = None,
    force: bool = False,
    ca_bundle: str | None = None,
    extra_args: dict | None = None,
    docker: str = DOCKER,
) -> list[BuildPlan]:
    specs = [get_env(env)] if env else buildable_envs()
    if env and not buildable(specs[0]):
        raise UserError(f"env {env} has no image (it is the machine's own Python)")
    if not dry:
        require_engine()  # first: `--base auto` follows the engine it finds
    plans = [
        plan_build(
            spec,
            no_cache=no_cache,
            npu=npu,
            base=base,
            push=push,
            extra_args=extra_args,
            docker=docker,
        )
        for spec in specs
    ]
    if not dry:
        stage_ca_bundle(ca_bundle)
        for plan in plans:
            local = LOCAL_PYTHON.format(python=plan.spec.python)
            if plan.base_image == local and image_info(local, docker) is None:
                raise UserError(
                    f"base image {local} is not in the engine: run `invoke dev.engine` (it "
                    f"makes it from pyenv's CPython {plan.spec.python}; `pyenv install "
                    f"{plan.spec.python}` first if this machine has none)"
                )
    for plan in plans:
        spec = plan.spec
        if spec.npu:
            print(plan.installers.describe(), flush=True)
            if plan.npu == "absent":
                print(
                    f"  -> building {spec.image} without the NPU stack (NPU=absent, label "
                    "org.zoobox.npu=absent): a CPU image",
                    flush=True,
                )
        if not dry and not (force or no_cache) and up_to_date(plan, docker):
            print(f"{spec.image} is up to date (lock {plan.lock.id}, NPU {plan.npu})")
        else:
            print(f"installing {repo_relative(plan.lock.path)} ({plan.lock.id})", flush=True)
            print(f"$ {quote(plan.argv)}", flush=True)
            if not dry:
                started = time.time()
                code = run_build(plan.argv, docker)
                if code != 0:
                    raise UserError(f"building {spec.image} failed (exit {code})")
                print(f"built {spec.image} in {time.time() - started:.0f} s", flush=True)
        for argv in plan.push:
            print(f"$ {quote(argv)}", flush=True)
            if not dry:
                code = run_child(argv)
                if code != 0:
                    raise UserError(f"{argv[1]} {argv[-1]} failed (exit {code})")
    return plans


def run_build(argv: list[str], docker: str = DOCKER) -> int:
    """`docker build`, stopped with its task: the client, and on a local podman the build.

    Stopping the client is enough for Docker (it cancels the build); podman goes on
    building, so there the build runs in a cgroup of its own, killed on stop
    (zoobox.envs.build_cgroup).
    """
    if not build_cgroup.local_podman_cgroupfs(docker):
        return run_child(argv)
    cgroup = build_cgroup.new_cgroup_name()

    def stop_engine_side():
        killed = build_cgroup.kill_cgroup(cgroup)
        print(f"stopped the build on the engine ({killed} process(es) of {cgroup})", flush=True)

    return run_child(build_cgroup.with_cgroup_parent(argv, cgroup), on_stop=stop_engine_side)
