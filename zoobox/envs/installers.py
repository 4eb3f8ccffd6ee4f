"""The NPU installers an image's NPU layers need (CANN, Torch_AIE, ais_bench): expected, found.

They are not redistributable: the user puts them in docker/npu-installers/<env>/, and
`images.build` checks them before building, saying exactly which file it expects where.
"""

from __future__ import annotations

import hashlib
import platform
from dataclasses import dataclass, field
from pathlib import Path

from zoobox.core.envspec import EnvSpec
from zoobox.core.errors import UserError
from zoobox.core.paths import repo_relative
from zoobox.envs.requirements import CONTEXT

INSTALLERS = CONTEXT / "npu-installers"


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
        lines = [f"NPU installers for env {self.spec.name}, in {repo_relative(self.folder)}/:"]
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
    where = repo_relative(check.folder)
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
