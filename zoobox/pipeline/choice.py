"""The automatic choice of runner, backend and devices, with the reason said in one line.

docker when an engine answers and NPU devices exist (the containers are for the NPU
stacks); otherwise host. The recipe's NPU backend when NPU devices exist, else its CPU
backend; a recipe that lists several CPU backends (`cpu: [onnxruntime, torchscript]`)
gets the fastest measured on this machine (zoobox.pipeline.speed) when its stages run on the
host, else the first listed. Each can be forced.
"""

from __future__ import annotations

from dataclasses import dataclass

from zoobox.core.errors import UserError
from zoobox.hosts.detect import ContainerEngine, NpuHost
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


def cpu_candidates(backends: dict) -> list[str]:
    """The recipe's CPU backends, in order of preference (one name or a list)."""
    cpu = backends["cpu"]
    return list(cpu) if isinstance(cpu, (list, tuple)) else [cpu]


def _cpu_backend(backends: dict, runner: str, pick_cpu, cpu_usable=None) -> tuple[str, str]:
    candidates = cpu_candidates(backends)
    if len(candidates) == 1:
        return candidates[0], "no NPU devices (/dev/davinci*)"
    if runner != "host" or pick_cpu is None:
        # In images and venvs only what their envs install can run.
        usable = [c for c in candidates if cpu_usable is None or cpu_usable(runner, c)]
        if usable and usable[0] != candidates[0]:
            return usable[0], (
                f"no NPU devices; the first CPU backend the {runner} runner's envs install"
            )
        return candidates[0], f"no NPU devices; the first CPU backend ({runner} runner)"
    name, why = pick_cpu(candidates)
    return name, f"no NPU devices; {why}"


def choose(
    backends: dict,
    runner: str,
    backend: str,
    devices,
    engine: ContainerEngine,
    npu: NpuHost,
    dry: bool = False,
    pick_cpu=None,
    cpu_usable=None,
) -> Choice:
    """`pick_cpu(candidates) -> (name, why)` chooses among several CPU backends on the host;
    `cpu_usable(runner, name) -> bool` says which the docker and venv runners' envs have.
    """
    if runner not in RUNNERS:
        raise UserError(f"unknown runner {runner!r} (choose from {', '.join(RUNNERS)})")
    if backend != "auto" and backend not in BACKENDS:
        raise UserError(f"unknown backend {backend!r} (choose from auto, {', '.join(BACKENDS)})")
    reasons = []
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
    if runner == "docker" and engine.dev_fallback:
        # The echoed `docker run` lines are for rerunning by hand: say what they need.
        reasons.append(f"echoed docker commands need DOCKER_HOST={engine.docker_host}")
    if backend == "auto":
        if npu.present:
            backend = backends["npu"]
            reasons.insert(0, f"NPU devices {npu.devices}")
        else:
            backend, why = _cpu_backend(backends, runner, pick_cpu, cpu_usable)
            reasons.insert(0, why)
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
                    f"{cpu_candidates(backends)[0]} to run on the CPU"
                )
            missing = [d for d in device_ids if d not in npu.devices]
            if missing:
                raise UserError(
                    f"NPU device(s) {missing} not present (this host has {npu.devices})"
                )
    return Choice(runner, backend, device_ids, "; ".join(reasons) or "as asked")
