"""Which Ascend chip a host has, from `npu-smi info`, and what zoobox can run on it.

`npu-smi info` prints a header with its version, then two rows per NPU, the first of
which starts with the NPU id and the chip name ("| 0       310P3     | OK  | ..."), the
second with the chip id and device or the bus id. Names seen across driver releases:
310P1 / 310P3 (inference cards), 910A / 910B / 910ProA / 910ProB (training, Ascend 910),
910B1..910B4 (Atlas A2), 310 and 310B1 (other inference chips). ATC and torch_aie take the
chip as a soc_version: "Ascend" + the name (Ascend310P3, Ascend910B3).

What zoobox's environments target:
- aie (Torch_AIE 6.3, the RetinaNet / RetinaFace seeds) and atc (ATC + ais_bench, the
  RefineDet seed): the 310P family, the seeds' Ascend310P3 and its sibling 310P1;
- train (torch_npu + HCCL, the RetinaNet training seed): the 910 family.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, field

# First cell of an NPU's first row: its id, then the chip name.
_ROW = re.compile(r"^\|\s*(\d+)\s+((?:310|910)[A-Za-z0-9]*)\s*\|\s*([^|]*)\|")
_BUS_ID = re.compile(r"^[0-9A-Fa-f]{4,8}:[0-9A-Fa-f]{2}:")
_VERSION = re.compile(r"npu-smi\s+(\S+)", re.IGNORECASE)

# env -> the chip families its stages can target (a family is a name prefix)
ENV_CHIPS = {"aie": ("310P",), "atc": ("310P",), "train": ("910",)}
INFERENCE_ENVS = ("aie", "atc")
TRAINING_ENVS = ("train",)


@dataclass
class NpuSmiInfo:
    chips: dict[int, str] = field(default_factory=dict)  # NPU id -> chip name
    version: str | None = None  # npu-smi's own version (the driver's)

    @property
    def chip(self) -> str | None:
        """The host's chip name when every NPU has the same one, else None."""
        names = set(self.chips.values())
        return names.pop() if len(names) == 1 else None


def parse_npu_smi_info(text: str) -> NpuSmiInfo:
    """NPU ids and chip names (and npu-smi's version) from `npu-smi info`'s output."""
    info = NpuSmiInfo()
    for line in text.splitlines():
        line = line.strip()
        if info.version is None:
            found = _VERSION.search(line)
            if found:
                info.version = found.group(1)
        match = _ROW.match(line)
        # The second row of an NPU (chip id, then device or a repeated name) holds the
        # bus id in its second cell; the first holds the health (OK, Warning, ...).
        if match and not _BUS_ID.match(match.group(3).strip()):
            info.chips.setdefault(int(match.group(1)), match.group(2))
    return info


def soc_version(chip: str) -> str:
    """The soc_version ATC and torch_aie take for a chip name: 310P3 -> Ascend310P3."""
    return chip if chip.lower().startswith("ascend") else "Ascend" + chip


def chip_name(soc: str) -> str:
    """The inverse of soc_version: Ascend310P3 -> 310P3."""
    return soc[len("Ascend") :] if soc.lower().startswith("ascend") else soc


def env_targets(env: str, chip: str) -> bool:
    """Whether env's stages can target `chip` (see ENV_CHIPS); unknown envs: no limit."""
    families = ENV_CHIPS.get(env)
    return families is None or any(chip_name(chip).upper().startswith(f) for f in families)


def targets(chip: str) -> str:
    """What zoobox targets, in words, for a refusal."""
    inference = "/".join(ENV_CHIPS["aie"])
    training = "/".join(ENV_CHIPS["train"])
    return f"{inference} for the inference recipes, {training} for training"


def read_npu_smi(npu_smi) -> tuple[NpuSmiInfo | None, str | None]:
    """(what `npu-smi info` says, or None; why not, or None). `npu_smi`: its path or None."""
    if npu_smi is None:
        return None, "not an Ascend host: no npu-smi"
    try:
        result = subprocess.run([str(npu_smi), "info"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as error:
        return None, f"npu-smi info did not answer: {error}"
    if result.returncode != 0:
        return None, f"npu-smi info exited {result.returncode}: {result.stdout[-400:]}"
    return parse_npu_smi_info(result.stdout), None
