"""The env images: requirements, NPU installer check, build, list, check (docker CLI).

One image per env with a Dockerfile (docker/<env>.Dockerfile), tagged with the env's
content hash (`EnvSpec.image`, zoobox/<env>:<hash12>), built from docker/ as the context:

    docker/<env>.Dockerfile          one per env; BASE_IMAGE is a build argument
    docker/entrypoint.sh             Ascend set_env.sh + driver libraries, then the command
    docker/requirements/<env>.txt    rendered from envs/<env>.yaml `packages` (the source
    docker/requirements/<env>-npu.txt   of truth) and `npu_packages`; never edited by hand
    docker/npu-installers/<env>/     CANN / Torch_AIE / ais_bench files the user supplies
    docker/local/                    per-machine extras (pip's CA bundle, local wheels),
                                     bind-mounted into pip steps, never copied

Works with any Docker-compatible engine the docker CLI reaches (DOCKER_HOST): Docker with
BuildKit, or podman's API as `invoke dev.engine` starts it. Every command is echoed.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from zoobox.core.envspec import EnvSpec, get_env, load_envs
from zoobox.core.errors import UserError
from zoobox.core.paths import REPO
from zoobox.core.text import quote, table

CONTEXT = REPO / "docker"
REQUIREMENTS = CONTEXT / "requirements"
INSTALLERS = CONTEXT / "npu-installers"
LOCAL = CONTEXT / "local"
CA_FILE = "ca-certificates.crt"
LOCAL_PYTHON = "localhost/zoobox/python:{python}-bookworm"  # made by `invoke dev.engine`
DOCKER = "docker"

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


# -- requirements: rendered from the env specs ---------------------------------------------
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


# -- the NPU installers ---------------------------------------------------------------------
@dataclass
class Expected:
    """One installer file an NPU image needs, as a glob in docker/npu-installers/<env>/."""

    pattern: str
    what: str
    required: bool = True


def machine_arch() -> str:
    """The CPU architecture as Ascend's file names spell it (aarch64, x86_64)."""
    arch = platform.machine().lower()
    return {"arm64": "aarch64", "amd64": "x86_64"}.get(arch, arch)


def expected_installers(spec: EnvSpec, arch: str | None = None) -> list[Expected]:
    """What docker/<env>.Dockerfile installs in its NPU layers, file by file."""
    if not spec.npu:
        return []
    arch = arch or machine_arch()
    stack = spec.npu_stack
    cann = stack.get("cann", "<cann>")
    found = [
        Expected(f"Ascend-cann-toolkit_{cann}_linux-{arch}.run", f"CANN {cann} toolkit"),
    ]
    if spec.name == "aie":
        aie = stack.get("torch_aie", "<torch_aie>")
        found += [
            Expected(f"Ascend-cann-aie_{aie}_linux-{arch}.run", f"Ascend-cann-aie {aie}"),
            Expected(
                f"Ascend-cann-torch-aie-{aie}-linux_{arch}.tar.gz",
                f"Torch_AIE {aie}, holds the torch_aie wheel",
            ),
        ]
    elif spec.name == "atc":
        tag = "cp" + (spec.python or "3.7").replace(".", "")
        abi = tag + ("m" if spec.python == "3.7" else "")
        found += [
            Expected(f"aclruntime-*-{tag}-{abi}-linux_{arch}.whl", "the aclruntime wheel"),
            Expected("ais_bench-*-py3-none-any.whl", "the ais_bench wheel"),
        ]
    elif spec.name == "train":
        found.append(
            Expected(
                f"Ascend-cann-kernels-*_{cann}_linux*.run",
                f"CANN {cann} operator kernels (optional)",
                required=False,
            )
        )
    return found


@dataclass
class InstallerCheck:
    spec: EnvSpec
    folder: Path
    found: dict[str, Path | None] = field(default_factory=dict)  # pattern -> file
    expected: list[Expected] = field(default_factory=list)

    @property
    def missing(self) -> list[Expected]:
        return [e for e in self.expected if e.required and self.found.get(e.pattern) is None]

    @property
    def any_found(self) -> bool:
        return any(self.found.get(e.pattern) for e in self.expected if e.required)

    @property
    def complete(self) -> bool:
        return bool(self.expected) and not self.missing

    def files(self) -> list[Path]:
        return sorted(p for p in self.found.values() if p is not None)

    def fingerprint(self) -> str:
        """Names, sizes and times of the installers: keys the NPU layers' cache."""
        if not self.complete:
            return "none"
        digest = hashlib.sha256()
        for path in self.files():
            stat = path.stat()
            digest.update(f"{path.name}:{stat.st_size}:{int(stat.st_mtime)}\n".encode())
        return digest.hexdigest()[:16]

    def describe(self) -> str:
        lines = [f"NPU installers for env {self.spec.name}, in {_rel(self.folder)}/:"]
        for item in self.expected:
            path = self.found.get(item.pattern)
            missing = item.required and self.any_found  # some there: the rest are missing
            mark = "found  " if path else ("MISSING" if missing else "absent ")
            name = path.name if path else item.pattern
            lines.append(f"  {mark} {name}  ({item.what})")
        return "\n".join(lines)


def check_installers(
    spec: EnvSpec, folder: Path | None = None, arch: str | None = None
) -> InstallerCheck:
    folder = Path(folder) if folder else INSTALLERS / spec.name
    check = InstallerCheck(spec, folder, expected=expected_installers(spec, arch))
    for item in check.expected:
        matches = sorted(folder.glob(item.pattern)) if folder.is_dir() else []
        check.found[item.pattern] = matches[-1] if matches else None
    return check


def _rel(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def npu_mode(check: InstallerCheck, npu: str = "auto") -> str:
    """ "present" or "absent" for the NPU build argument; raises when it cannot be built.

    auto: present when every required installer is there, absent when none is; some but
    not all is an error (the user meant to build for the NPU). yes: every one needed.
    """
    if not check.spec.npu:
        return "absent"
    if npu in ("no", "absent", "false", "0"):
        return "absent"
    if check.complete:
        return "present"
    wanted = "\n".join(f"  {e.pattern}  ({e.what})" for e in check.missing)
    where = _rel(check.folder)
    if npu in ("yes", "present", "true", "1"):
        raise UserError(
            f"env {check.spec.name}: --npu yes, but {where}/ lacks:\n{wanted}\n"
            "put these files there (from Ascend's download site), or build a CPU image "
            "with --npu no"
        )
    if npu != "auto":
        raise UserError(f"--npu takes auto, yes or no, not {npu!r}")
    if check.any_found:
        raise UserError(
            f"env {check.spec.name}: {where}/ holds some NPU installers but lacks:\n{wanted}\n"
            "add them, or build a CPU image with --npu no"
        )
    return "absent"


# -- building -------------------------------------------------------------------------------
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
        from zoobox.hosts.probe import dev_engine_host

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
    push: list[list[str]] = field(default_factory=list)


def build_args(spec: EnvSpec, npu: str, base_image: str, installers: InstallerCheck) -> dict:
    """The build arguments for `spec`, limited to the ARGs its Dockerfile declares."""
    stack = spec.npu_stack
    values = {
        "BASE_IMAGE": base_image,
        "ZOOBOX_PYTHON": spec.python,
        "NPU": npu,
        "NPU_INSTALLERS": installers.fingerprint(),
        "TORCH_VERSION": spec.pin("torch"),
        "CANN_VERSION": stack.get("cann"),
        "TORCH_AIE_VERSION": stack.get("torch_aie"),
        "ZOOBOX_SPEC_HASH": spec.hash[:12],
        "ZOOBOX_REVISION": git_revision(),
        "ZOOBOX_CREATED": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
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
) -> BuildPlan:
    if not buildable(spec):
        raise UserError(f"env {spec.name} has no image (it is the machine's own Python)")
    if not (REPO / spec.dockerfile).is_file():
        raise UserError(f"env {spec.name}: {spec.dockerfile} does not exist")
    check = check_installers(spec, installers_dir, arch)
    mode = npu_mode(check, npu)
    base_image = base_image_for(spec, base)
    args = build_args(spec, mode, base_image, check)
    args.update(extra_args or {})
    argv = build_command(spec, no_cache, args, docker)
    pushes = push_commands(spec, push, docker) if push else []
    return BuildPlan(spec, mode, base_image, argv, check, pushes)


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
    from zoobox.hosts.probe import container_engine

    engine = container_engine(timeout=20)
    if not engine.reachable:
        raise UserError(
            f"no Docker engine answers ({engine.detail}): start one (on a machine without "
            "Docker: `invoke dev.engine`) and export the DOCKER_HOST it prints"
        )


def labels_of(info: dict | None) -> dict:
    return dict(((info or {}).get("Config") or {}).get("Labels") or {})


def up_to_date(plan: BuildPlan, docker: str = DOCKER) -> bool:
    labels = labels_of(image_info(plan.spec.image, docker))
    return (
        labels.get("org.zoobox.spec") == plan.spec.hash[:12]
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
    stale = requirements_drift(specs)
    if stale and not dry:
        for path in write_requirements(specs):
            print(f"updated {_rel(path)} from its env spec", flush=True)
    elif stale:
        print(f"would update {', '.join(_rel(p) for p in stale)} from the env specs")
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
        require_engine()
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
            print(f"{spec.image} is up to date (spec {spec.hash[:12]}, NPU {plan.npu})")
        else:
            print(f"$ {quote(plan.argv)}", flush=True)
            if not dry:
                started = time.time()
                result = subprocess.run(plan.argv)
                if result.returncode != 0:
                    raise UserError(f"building {spec.image} failed (exit {result.returncode})")
                print(f"built {spec.image} in {time.time() - started:.0f} s", flush=True)
        for argv in plan.push:
            print(f"$ {quote(argv)}", flush=True)
            if not dry:
                result = subprocess.run(argv)
                if result.returncode != 0:
                    raise UserError(f"{argv[1]} {argv[-1]} failed (exit {result.returncode})")
    return plans


# -- listing --------------------------------------------------------------------------------
def _size(value) -> str:
    if not isinstance(value, (int, float)) or value <= 0:
        return "-"
    return f"{value / 1e9:.2f} GB" if value >= 1e9 else f"{value / 1e6:.0f} MB"


LISTED_LABELS = (
    "org.zoobox.python",
    "org.zoobox.torch",
    "org.zoobox.cann",
    "org.zoobox.torch_aie",
    "org.opencontainers.image.revision",
    "org.opencontainers.image.created",
)
NPU_LABELS = ("org.zoobox.cann", "org.zoobox.torch_aie")  # what the NPU layers install


def list_rows(docker: str = DOCKER) -> list[list[str]]:
    require_engine()
    rows = []
    for spec in buildable_envs():
        info = image_info(spec.image, docker)
        if info is None:
            rows.append([spec.name, spec.image, "no", "-", "-", "-", "-", "-"])
            continue
        labels = labels_of(info)
        npu = labels.get("org.zoobox.npu", "?")
        shown = [k for k in LISTED_LABELS if labels.get(k)]
        if npu != "present":  # the NPU layers did not run: their versions are not there
            shown = [k for k in shown if k not in NPU_LABELS]
        digests = info.get("RepoDigests") or []
        rows.append(
            [
                spec.name,
                spec.image,
                "yes",
                (info.get("Id") or "")[:19],
                digests[0].split("@")[-1][:19] if digests else "-",
                _size(info.get("Size")),
                npu,
                " ".join(f"{key.split('.')[-1]}={labels[key]}" for key in shown),
            ]
        )
    return rows


def list_images(docker: str = DOCKER) -> str:
    return table(
        list_rows(docker), ["env", "image", "built", "id", "digest", "size", "npu", "labels"]
    )


# -- checking -------------------------------------------------------------------------------
# Runs inside the image (Python 3.7 and up): the environment zoostage.envinfo sees, the
# installed version of every distribution asked for, and whether torch really imports.
PROBE = r"""
import json, sys
from zoostage import envinfo
info = envinfo.environment()
def version(name):
    try:
        from importlib import metadata
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None
    except ImportError:
        import pkg_resources
        try:
            return pkg_resources.get_distribution(name).version
        except Exception:
            return None
info["packages"] = {name: version(name) for name in sys.argv[1:]}
try:
    import torch
    info["torch_import"] = str(torch.__version__)
except Exception as error:
    info["torch_import"] = "error: %s" % (error,)
print("ZOOBOX-PROBE " + json.dumps(info))
"""


def probe_command(spec: EnvSpec, docker: str = DOCKER) -> list[str]:
    names = [r.partition("==")[0].strip() for r in spec.packages]
    if spec.npu:
        names += [r.partition("==")[0].strip() for r in npu_packages(spec)]
        names += {"aie": ["torch_aie"], "atc": ["aclruntime", "ais_bench"]}.get(spec.name, [])
    return [
        docker,
        "run",
        "--rm",
        "--network",
        "none",
        "-v",
        f"{REPO}:/workspace:ro",
        "-w",
        "/workspace",
        "-e",
        "PYTHONPATH=/workspace",
        "-e",
        "HOME=/tmp",
        spec.image,
        "python",
        "-c",
        PROBE,
        *names,
    ]


def _public(version: str | None) -> str | None:
    return version.split("+", 1)[0] if version else version


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def compare(spec: EnvSpec, labels: dict, info: dict) -> list[tuple[str, str, str, bool]]:
    """(what, expected, found, ok) for every fact the spec fixes about its image."""
    rows = []
    python = info.get("python") or ""
    rows.append(("python", spec.python, python, python.split(".")[:2] == spec.python.split(".")))
    packages = {_norm(k): v for k, v in (info.get("packages") or {}).items()}
    claims_npu = labels.get("org.zoobox.npu") == "present"
    pins = list(spec.packages) + (list(npu_packages(spec)) if claims_npu else [])
    for requirement in pins:
        name, _, pinned = requirement.partition("==")
        found = packages.get(_norm(name))
        rows.append((name.strip(), pinned.strip(), found or "missing", _public(found) == pinned))
    if spec.pin("torch"):
        imported = str(info.get("torch_import"))
        rows.append(
            ("import torch", spec.pin("torch"), imported, _public(imported) == spec.pin("torch"))
        )
    if spec.npu:
        rows.append(
            (
                "NPU stack",
                "present (or a CPU image)",
                labels.get("org.zoobox.npu", "unlabelled"),
                labels.get("org.zoobox.npu") in ("present", "absent"),
            )
        )
    if claims_npu:
        cann = spec.npu_stack.get("cann", "")
        found = info.get("cann") or "missing"
        rows.append(("CANN", cann, found, found.lower().startswith(cann.lower())))
        if spec.name == "aie":
            want = spec.npu_stack.get("torch_aie", "")
            found = packages.get("torch-aie") or info.get("torch_aie") or "missing"
            rows.append(("torch_aie", want, found, found.lower().startswith(want.lower())))
        if spec.name == "atc":
            for name in ("aclruntime", "ais_bench"):
                found = packages.get(_norm(name)) or "missing"
                rows.append((name, "installed", found, found != "missing"))
    return rows


def check_images(env: str | None = None, docker: str = DOCKER) -> str:
    specs = [get_env(env)] if env else buildable_envs()
    require_engine()
    rows, errors, checked = [], [], 0
    for spec in specs:
        info = image_info(spec.image, docker)
        if info is None:
            if env:
                raise UserError(
                    f"image {spec.image} is not built: run `invoke images.build --env {spec.name}`"
                )
            rows.append([spec.name, "image", spec.image, "not built", "skip"])
            continue
        argv = probe_command(spec, docker)
        print(f"$ {quote(argv[: -len(argv) + argv.index('-c')])} -c <probe> ...", flush=True)
        result = subprocess.run(argv, capture_output=True, text=True, timeout=300)
        line = next((x for x in result.stdout.splitlines() if x.startswith("ZOOBOX-PROBE ")), None)
        if result.returncode != 0 or line is None:
            tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
            errors.append(f"{spec.image}: the probe failed: {' / '.join(tail)}")
            rows.append([spec.name, "probe", "runs", "failed", "ERROR"])
            continue
        checked += 1
        probe = json.loads(line[len("ZOOBOX-PROBE ") :])
        for what, expected, found, ok in compare(spec, labels_of(info), probe):
            rows.append([spec.name, what, str(expected), str(found), "ok" if ok else "ERROR"])
            if not ok:
                errors.append(
                    f"{spec.image}: {what} is {found}, envs/{spec.name}.yaml says {expected}"
                )
    text = table(rows, ["env", "check", "expected", "found", "status"])
    if errors:
        raise UserError(text + "\n" + "\n".join(errors))
    if not checked:
        raise UserError(text + "\nno image is built: run `invoke images.build`")
    return text
