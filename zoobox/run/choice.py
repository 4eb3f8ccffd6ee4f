"""The automatic choice of runner, backend and devices, with the reason said in one line.

docker when an engine answers and NPU devices exist (the containers are for the NPU
stacks); otherwise host. The recipe's NPU backend when NPU devices exist, else its CPU
backend. Each can be forced.
"""

from __future__ import annotations

from dataclasses import dataclass

from zoobox.core.errors import UserError
from zoobox.hosts.probe import ContainerEngine, NpuHost
from zoostage.backends import NAMES as BACKENDS
from zoostage.backends import NPU_BACKENDS

RUNNERS = ("auto", "host", "docker", "venv")


@dataclass
class Choice:
    runner: str
    backend: str
    devices: list[int]
    reason: str

    @property
    def npu(self) -> bool:
        return self.backend in NPU_BACKENDS

    @property
    def line(self) -> str:
        where = f"npu {','.join(map(str, self.devices))}" if self.npu else "cpu"
        return f"runner {self.runner}, backend {self.backend} on {where}: {self.reason}"


def parse_devices(text) -> list[int]:
    if text is None or text == "":
        return [0]
    if isinstance(text, int):
        return [text]
    try:
        return [int(part) for part in str(text).split(",") if part.strip() != ""]
    except ValueError:
        raise UserError(f"--devices takes NPU ids like 0 or 0,1,2,3, not {text!r}") from None


def choose(
    backends: dict,
    runner: str,
    backend: str,
    devices,
    engine: ContainerEngine,
    npu: NpuHost,
    dry: bool = False,
) -> Choice:
    if runner not in RUNNERS:
        raise UserError(f"unknown runner {runner!r} (choose from {', '.join(RUNNERS)})")
    reasons = []
    if backend == "auto":
        backend = backends["npu"] if npu.present else backends["cpu"]
        reasons.append(
            f"NPU devices {npu.devices}" if npu.present else "no NPU devices (/dev/davinci*)"
        )
    elif backend not in BACKENDS:
        raise UserError(f"unknown backend {backend!r} (choose from auto, {', '.join(BACKENDS)})")
    if runner == "auto":
        if engine.reachable and npu.present:
            runner = "docker"
            reasons.append(f"Docker engine {engine.detail}")
        else:
            runner = "host"
            reasons.append(
                "no Docker engine" if not engine.reachable else "Docker engine but no NPU"
            )
    elif runner == "docker" and engine.reachable:
        reasons.append(f"Docker engine {engine.detail}")  # which engine runs the stages
    device_ids = parse_devices(devices)
    if not dry:
        if runner == "docker" and not engine.reachable:
            raise UserError(
                f"--runner docker, but no Docker engine answers ({engine.detail}); "
                "start one (see `invoke dev.engine`) or use --runner host"
            )
        if backend in NPU_BACKENDS:
            if not npu.present:
                raise UserError(
                    f"backend {backend} needs an Ascend NPU, and this machine has "
                    "no /dev/davinci* devices; use --backend "
                    f"{backends['cpu']} to run on the CPU"
                )
            missing = [d for d in device_ids if d not in npu.devices]
            if missing:
                raise UserError(
                    f"NPU device(s) {missing} not present (this host has {npu.devices})"
                )
    return Choice(runner, backend, device_ids, "; ".join(reasons) or "as asked")
