"""The NPU installers an image's NPU layers need (CANN, Torch_AIE, ais_bench): expected, found.

They are not redistributable: the user puts them in docker/npu-installers/<env>/, and
`images.build` checks them before building, saying which file it expects where, what it
found and which file it uses for each. Names are matched case-insensitively (Ascend spells
the same version 6.3.rc2 and 6.3.RC2); where a file does not follow the expected name, or
several match, docker/npu-installers/<env>/files.yaml names the exact file per key:

    toolkit: Ascend-cann-toolkit_7.0.RC1.alpha003_linux-aarch64.run
    torch_aie: Ascend-cann-torch-aie-6.3.RC2-linux_aarch64.tar.gz

The chosen names reach the Dockerfile as build arguments (each Expected's `build_arg`).
"""

from __future__ import annotations

import fnmatch
import hashlib
import platform
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from zoobox.core.envspec import EnvSpec
from zoobox.core.errors import UserError
from zoobox.core.paths import repo_relative
from zoobox.envs.requirements import CONTEXT
from zoobox.envs.wheelnames import wheel_in_archive

INSTALLERS = CONTEXT / "npu-installers"
FILES_YAML = "files.yaml"
NOT_INSTALLERS = {"readme.md", ".gitignore", FILES_YAML}


@dataclass
class Expected:
    """One installer file an NPU image needs, as a glob in docker/npu-installers/<env>/."""

    key: str  # its name in files.yaml
    pattern: str  # matched case-insensitively
    what: str
    build_arg: str  # the Dockerfile ARG that gets the chosen file's name
    required: bool = True
    # For an archive holding a wheel: the wheel's distribution name, and the ARG prefix
    # of the member to install and the name pip accepts for it (zoobox.envs.wheelnames).
    wheel: str | None = None
    wheel_arg: str | None = None


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
        Expected(
            "toolkit",
            f"Ascend-cann-toolkit_{cann}_linux-{arch}.run",
            f"CANN {cann} toolkit",
            "CANN_TOOLKIT_RUN",
        ),
    ]
    if spec.name == "aie":
        # The AIE runtime has its own version (7.0.T51.B010 beside the plugin's 6.3.rc2).
        runtime = stack.get("aie_runtime", "<aie_runtime>")
        plugin = stack.get("torch_aie", "<torch_aie>")
        found += [
            Expected(
                "aie_runtime",
                f"Ascend-cann-aie_{runtime}_linux-{arch}.run",
                f"Ascend-cann-aie {runtime}, the AIE runtime",
                "AIE_RUNTIME_RUN",
            ),
            Expected(
                "torch_aie",
                f"Ascend-cann-torch-aie-{plugin}-linux_{arch}.tar.gz",
                f"Torch_AIE {plugin}, holds the torch_aie wheel",
                "TORCH_AIE_TAR",
                wheel="torch_aie",
                wheel_arg="TORCH_AIE_WHL",
            ),
        ]
    elif spec.name == "atc":
        tag = "cp" + (spec.python or "3.7").replace(".", "")
        abi = tag + ("m" if spec.python == "3.7" else "")
        found += [
            Expected(
                "aclruntime",
                f"aclruntime-*-{tag}-{abi}-linux_{arch}.whl",
                "the aclruntime wheel",
                "ACLRUNTIME_WHL",
            ),
            Expected(
                "ais_bench", "ais_bench-*-py3-none-any.whl", "the ais_bench wheel", "AIS_BENCH_WHL"
            ),
        ]
    elif spec.name == "train":
        # The worker compiles with jit_compile=False: binary kernels must be installed.
        found.append(
            Expected(
                "kernels",
                f"Ascend-cann-kernels-910*_{cann}_linux*.run",
                f"CANN {cann} binary operator kernels for the 910 (jit_compile=False)",
                "CANN_KERNELS_RUN",
            )
        )
    return found


@dataclass
class InstallerCheck:
    spec: EnvSpec
    folder: Path
    expected: list[Expected] = field(default_factory=list)
    found: dict[str, Path | None] = field(default_factory=dict)  # key -> the file used
    matches: dict[str, list[Path]] = field(default_factory=dict)  # key -> files matching
    named: dict[str, str] = field(default_factory=dict)  # key -> name from files.yaml
    _wheels: dict[str, tuple[str, str]] = field(default_factory=dict, repr=False)

    @property
    def missing(self) -> list[Expected]:
        return [e for e in self.expected if e.required and self.found.get(e.key) is None]

    @property
    def ambiguous(self) -> list[Expected]:
        return [
            e
            for e in self.expected
            if e.key not in self.named and len(self.matches.get(e.key, [])) > 1
        ]

    @property
    def any_found(self) -> bool:
        return any(self.matches.get(e.key) or e.key in self.named for e in self.expected)

    @property
    def complete(self) -> bool:
        return bool(self.expected) and not self.missing and not self.ambiguous

    def files(self) -> list[Path]:
        return sorted(p for p in self.found.values() if p is not None)

    def build_args(self) -> dict[str, str]:
        """The chosen file names, for the Dockerfile's ARGs; for an archive holding a
        wheel also the member (<wheel_arg>_MEMBER) and the name pip accepts for it
        (<wheel_arg>), which the build renames it to on extraction."""
        args = {}
        for item in self.expected:
            path = self.found.get(item.key)
            if path is None:
                continue
            args[item.build_arg] = path.name
            if item.wheel:
                member, pip_name = self.wheels(item)
                args[item.wheel_arg + "_MEMBER"] = member
                args[item.wheel_arg] = pip_name
        return args

    def wheels(self, item: Expected) -> tuple[str, str]:
        """(member, name pip accepts) of the wheel inside item's archive (read once)."""
        if item.key not in self._wheels:
            self._wheels[item.key] = wheel_in_archive(
                self.found[item.key], item.wheel, self.spec.python
            )
        return self._wheels[item.key]

    def fingerprint(self) -> str:
        """Names, sizes and times of the installers: keys the NPU layers' cache."""
        if not self.complete:
            return "none"
        digest = hashlib.sha256()
        for path in self.files():
            stat = path.stat()
            digest.update(f"{path.name}:{stat.st_size}:{int(stat.st_mtime)}\n".encode())
        return digest.hexdigest()[:16]

    def unused(self) -> list[Path]:
        """Files in the folder that no expected installer uses (another arch, a typo)."""
        if not self.folder.is_dir():
            return []
        used = set(self.files())
        return sorted(
            p
            for p in self.folder.iterdir()
            if p.is_file() and p.name.lower() not in NOT_INSTALLERS and p not in used
        )

    def describe(self) -> str:
        """What was expected, found and used, one line per installer."""
        lines = [f"NPU installers for env {self.spec.name}, in {repo_relative(self.folder)}/:"]
        width = max((len(e.key) for e in self.expected), default=0)
        for item in self.expected:
            lines.append(f"  {item.key:<{width}}  {self._state(item)}")
        for path in self.unused():
            lines.append(f"  {'':<{width}}  not used {path.name}")
        return "\n".join(lines)

    def _state(self, item: Expected) -> str:
        used = self.found.get(item.key)
        matches = self.matches.get(item.key, [])
        if used is not None:
            how = (
                f"named in {FILES_YAML}"
                if item.key in self.named
                else f"matches {item.pattern}, ignoring case"
            )
            return f"using   {used.name}  ({item.what}; {how})"
        if len(matches) > 1:
            names = ", ".join(p.name for p in matches)
            return f"CHOOSE  one of {names}  (name it as `{item.key}:` in {FILES_YAML})"
        mark = "MISSING" if item.required and self.any_found else "absent "
        return f"{mark} {item.pattern}  ({item.what})"


def read_files_yaml(folder: Path, expected: list[Expected]) -> dict[str, str]:
    """files.yaml's {key: file name}, checked: known keys, plain names of existing files."""
    path = folder / FILES_YAML
    if not path.is_file():
        return {}
    where = repo_relative(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise UserError(f"{where} is not valid YAML: {error}") from None
    keys = [e.key for e in expected]
    if not isinstance(data, dict):
        raise UserError(f"{where} must map keys ({', '.join(keys)}) to file names")
    named = {}
    for key, name in data.items():
        if key not in keys:
            raise UserError(f"{where}: unknown key {key!r} (this env's keys: {', '.join(keys)})")
        name = str(name)
        if "/" in name or name in (".", ".."):
            raise UserError(
                f"{where}: {key}: {name!r} must be a file name in {repo_relative(folder)}/ (the "
                "build mounts only that folder); copy or hard-link the file there"
            )
        if not (folder / name).is_file():
            raise UserError(f"{where}: {key}: {name} is not in {repo_relative(folder)}/")
        named[key] = name
    return named


def check_installers(
    spec: EnvSpec, folder: Path | None = None, arch: str | None = None
) -> InstallerCheck:
    folder = Path(folder) if folder else INSTALLERS / spec.name
    check = InstallerCheck(spec, folder, expected=expected_installers(spec, arch))
    check.named = read_files_yaml(folder, check.expected) if folder.is_dir() else {}
    names = sorted(p.name for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []
    for item in check.expected:
        if item.key in check.named:
            check.found[item.key] = folder / check.named[item.key]
            check.matches[item.key] = [check.found[item.key]]
            continue
        matching = [folder / n for n in names if fnmatch.fnmatch(n.lower(), item.pattern.lower())]
        check.matches[item.key] = matching
        check.found[item.key] = matching[0] if len(matching) == 1 else None
    return check


def npu_mode(check: InstallerCheck, npu: str = "auto") -> str:
    """ "present" or "absent" for the NPU build argument; raises when it cannot be built.

    auto: present when every required installer is there, absent when none is; some but
    not all is an error (the user meant to build for the NPU). yes: every one needed.
    Several files for one installer is an error until files.yaml names one.
    """
    if not check.spec.npu:
        return "absent"
    if npu in ("no", "absent", "false", "0"):
        return "absent"
    if npu not in ("auto", "yes", "present", "true", "1"):
        raise UserError(f"--npu takes auto, yes or no, not {npu!r}")
    where = repo_relative(check.folder)
    if check.ambiguous:
        choices = "\n".join(
            f"  {e.key}: one of {', '.join(p.name for p in check.matches[e.key])}"
            for e in check.ambiguous
        )
        raise UserError(
            f"env {check.spec.name}: {where}/ holds several files for one installer:\n"
            f"{choices}\nname the one to use in {where}/{FILES_YAML} (key: file name)"
        )
    if check.complete:
        return "present"
    wanted = "\n".join(f"  {e.key}: {e.pattern}  ({e.what})" for e in check.missing)
    hint = f" (or name differently named files in {where}/{FILES_YAML})"
    if npu != "auto":
        raise UserError(
            f"env {check.spec.name}: --npu yes, but {where}/ lacks:\n{wanted}\n"
            f"put these files there (from Ascend's download site){hint}, or build a CPU "
            "image with --npu no"
        )
    if check.any_found:
        raise UserError(
            f"env {check.spec.name}: {where}/ holds some NPU installers but lacks:\n{wanted}\n"
            f"add them{hint}, or build a CPU image with --npu no"
        )
    return "absent"
