"""`invoke npu.smoke`: what only a real Ascend host can settle, checked where stages run.

Host checks (driver, devices, npu-smi, who can open the device nodes, the engine), then
the stage-side check modules (zoostage.smoke.aie, .atc, .train) inside the aie, atc and
train images through the docker runner -- with the NPU mounted when the host has one --
or through the host runner where no engine or image is there. The chip comes from
`npu-smi info` (zoobox.hosts.chips): the checks compile for it, and an env whose recipes
cannot target it (the inference envs on a 910, training on a 310P) lists its checks as
not applicable; a chip no recipe targets is refused in one line. One report,
ARTIFACTS/npu-smoke/smoke.md (+ smoke.json), says ok / failed / needs host / skipped /
not applicable per check, names the versions found (driver, firmware, CANN, torch_aie,
torch_npu, ais_bench) and ends with the checks that need a real host. On a machine
without an NPU every device check says "not an Ascend host", and the command still
succeeds: only a check that failed makes it fail. `--dry` prints the plan only.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from zoobox.core.envspec import get_env
from zoobox.core.errors import UserError
from zoobox.core.text import table
from zoobox.hosts import chips as chip_table
from zoobox.hosts import detect
from zoobox.hosts.npucompat import image_compatibility
from zoobox.pipeline.choice import parse_devices
from zoobox.pipeline.configure import flag_path, setting_path
from zoobox.runners.base import Runner, StageCall
from zoobox.runners.factory import make_runner
from zoobox.runners.host import HostRunner
from zoostage.smoke.checks import (
    FAILED,
    NEEDS_HOST,
    NOT_APPLICABLE,
    RESULTS,
    Checks,
    NeedsHost,
    Skip,
)

CHECK_MODULES = (
    ("aie", "zoostage.smoke.aie"),
    ("atc", "zoostage.smoke.atc"),
    ("train", "zoostage.smoke.train"),
)
DEFAULT_SOC = "Ascend310P3"  # the inference seeds' chip: what runs where npu-smi says none
RUN_TIMEOUT_NOTE = "each env's checks run in one process; compile and ATC take about a minute"


# -- host checks -----------------------------------------------------------------------------
def _driver(npu: detect.NpuHost, envs: list[str], chip_known: bool = True) -> str:
    """The driver against the CANN of each env that applies here. With the chip unknown
    (no npu-smi answer) every env is checked, and only a driver too old for all of them
    fails: a 310P host's driver need not be new enough for the 910's train image."""
    if npu.driver_version is None:
        raise NeedsHost(f"not an Ascend host: no driver version in {npu.driver_dir}/version.info")
    rows = image_compatibility(npu.driver_version, [get_env(env) for env in envs])
    too_old = [row[0] for row in rows if row[-1] == "driver too old"]
    where = f"driver {npu.driver_version} at {npu.driver_dir}"
    if too_old and (chip_known or len(too_old) == len(rows)):
        raise RuntimeError(
            f"driver {npu.driver_version} is older than what the CANN of {', '.join(too_old)} "
            "needs (invoke doctor)"
        )
    if too_old:
        return f"{where}; too old for the CANN of {', '.join(too_old)} (chip unknown)"
    return where


def _devices(npu: detect.NpuHost) -> str:
    if not npu.present:
        raise NeedsHost(f"not an Ascend host: no {npu.dev_root}/davinci*")
    return f"davinci {', '.join(map(str, npu.devices))}"


def read_npu_smi(npu: detect.NpuHost) -> tuple[chip_table.NpuSmiInfo | None, str | None]:
    """(what `npu-smi info` says, or None; why not, or None)."""
    return chip_table.read_npu_smi(npu.npu_smi)


def _npu_smi(info: chip_table.NpuSmiInfo | None, problem: str | None) -> str:
    if info is None:
        if problem and problem.startswith("not an Ascend host"):
            raise NeedsHost(problem)
        raise RuntimeError(problem)
    if not info.chips:
        raise RuntimeError("npu-smi info lists no NPU (no row with an id and a chip name)")
    names = ", ".join(f"{npu} {name}" for npu, name in sorted(info.chips.items()))
    return f"NPUs {names}; npu-smi {info.version or '(no version line)'}"


def _access(npu: detect.NpuHost, devices: list[int], runner: Runner) -> str:
    if not npu.present:
        raise NeedsHost("not an Ascend host: no device nodes to open")
    uid, gids = runner.npu_identity()
    problem = detect.device_access_problem(npu.dev_root, devices, uid, gids)
    if problem:
        raise PermissionError(problem)
    return f"uid {uid} with groups {sorted(gids)} can open davinci{devices}"


def _engine(engine: detect.ContainerEngine) -> str:
    if not engine.reachable:
        raise Skip(f"no Docker engine ({engine.detail}): the checks ran on the host runner")
    return engine.detail


# -- the check modules, in their envs --------------------------------------------------------
def pick_runner(
    name: str,
    settings: dict,
    npu: detect.NpuHost,
    engine: detect.ContainerEngine,
    out: Path,
    applicable: dict | None = None,
):
    """(runner, why): docker when an engine answers and the images of the envs that
    apply to this host's chip exist."""
    envs = [env for env, _ in CHECK_MODULES if applicable is None or applicable.get(env)]
    if name in ("auto", "docker") and engine.reachable:
        runner, _ = make_runner(
            "docker", settings, artifacts=out, data=None, npu=npu, engine=engine
        )
        missing = [env for env in envs if runner.image_id(get_env(env).image) is None]
        if name == "docker" or not missing:
            return runner, f"docker runner ({engine.detail})"
        return HostRunner(), f"host runner: image(s) of {', '.join(missing)} not built"
    if name == "docker":
        raise UserError(f"--runner docker, but no Docker engine answers ({engine.detail})")
    if name not in ("auto", "host"):
        raise UserError(f"npu.smoke runs with --runner auto, docker or host, not {name!r}")
    return HostRunner(), "host runner" + ("" if engine.reachable else ": no Docker engine")


def firmware_version(driver_dir: Path) -> str | None:
    """The NPU firmware's version from firmware/version.info beside the driver folder."""
    return detect.driver_version(Path(driver_dir).parent / "firmware")


def not_applicable(env: str, module: str, devices: list[int], chip: str) -> list[dict]:
    """Each check of an env whose recipes cannot target the host's chip, said so."""
    import importlib

    families = "/".join(chip_table.ENV_CHIPS.get(env, ()))
    detail = f"this host's chip is {chip}: the {env} env's recipes target {families}"
    names = importlib.import_module(module).planned_checks(devices)
    return [
        {"check": name, "where": f"{env} env", "status": NOT_APPLICABLE, "detail": detail}
        for name in names
    ]


def run_module(
    runner: Runner, env: str, module: str, out: Path, npu, devices, soc
) -> tuple[list[dict], dict]:
    """Run one check module in its env: (its results, the versions it found), or one
    failed result saying why not."""
    spec = get_env(env)
    inside = "/dev" if runner.name == "docker" else str(npu.dev_root)
    call = StageCall(
        recipe="npu-smoke",
        stage=env,
        module=module,
        args=[
            *("--devices", ",".join(map(str, runner.devices_for(devices)))),
            *("--dev-root", inside, "--soc-version", soc),
        ],
        out=out / env,
        env=spec,
        needs_npu=npu.present,
        devices=list(devices),
        uses_data=False,
        logs=out / "logs" / env,
    )
    where = spec.image if runner.name == "docker" else f"host runner, env {env}"
    try:
        runner.check(spec)
    except UserError as error:
        if not npu.present:
            # No NPU here: nothing in that image could be checked anyway (its checks all
            # need the host), so a missing image says so instead of failing the report.
            detail = f"{error}; and no NPU here: its checks need an Ascend host"
            return [{"check": f"run the {env} checks", "where": where, "status": NEEDS_HOST,
                     "detail": detail}], {}  # fmt: skip
        return [_failed(f"run the {env} checks", where, str(error))], {}
    try:
        completed = runner.run(call)
    except UserError as error:
        return [_failed(f"run the {env} checks", where, str(error))], {}
    results = out / env / RESULTS
    if not results.is_file():
        tail = completed.tail.strip().splitlines()[-5:]
        detail = f"exit {completed.returncode}: {' | '.join(tail)}"
        return [_failed(f"run the {env} checks", where, detail)], {}
    written = json.loads(results.read_text())
    return written["checks"], written.get("versions") or {}


def _failed(name: str, where: str, detail: str) -> dict:
    return {"check": name, "where": where, "status": FAILED, "detail": detail}


# -- the job -----------------------------------------------------------------------------------
@dataclass
class Plan:
    """What a smoke run does on this host: decided before any check runs."""

    npu: detect.NpuHost
    engine: detect.ContainerEngine
    devices: list[int]
    smi: chip_table.NpuSmiInfo | None
    smi_problem: str | None
    chip: str | None  # the host's chip, from npu-smi; None: not known (no NPU here)
    soc: str  # what the checks compile for
    applicable: dict[str, bool]  # env -> whether its recipes target the chip


def plan_smoke(settings: dict, devices=None, soc_version=None, probe_engine=None) -> Plan:
    docker = settings.get("docker") or {}
    npu = detect.npu_host(
        dev_root=Path(docker.get("dev_root") or "/dev"),
        driver_dir=Path(docker.get("driver_dir") or "/usr/local/Ascend/driver"),
    )
    engine = (probe_engine or detect.container_engine)()
    detect.use_engine(engine)
    chosen = parse_devices(devices) if devices not in (None, "") else (npu.devices[:2] or [0])
    smi, problem = read_npu_smi(npu)
    chip = smi.chip if smi else None
    if smi and smi.chips and chip is None and not soc_version:
        found = sorted(set(smi.chips.values()))
        raise UserError(
            f"npu.smoke: this host mixes chips ({', '.join(found)}); pass --soc-version "
            "for the one to check, and --devices with its NPU ids"
        )
    if soc_version:
        chip = chip or chip_table.chip_name(soc_version)
    applicable = {
        env: chip is None or chip_table.env_targets(env, chip) for env, _ in CHECK_MODULES
    }
    if chip is not None and not any(applicable.values()):
        raise UserError(
            f"npu.smoke: this host's chip {chip} is not one zoobox's recipes can target "
            f"({chip_table.targets(chip)}); nothing to check"
        )
    soc = soc_version or (chip_table.soc_version(chip) if chip else DEFAULT_SOC)
    return Plan(npu, engine, chosen, smi, problem, chip, soc, applicable)


HOST_CHECKS = (
    "Ascend driver, new enough for the images' CANN",
    "NPU devices",
    "npu-smi info",
    "device nodes open for the stages' user",
    "container engine",
)


def describe_plan(plan: Plan, runner_why: str) -> str:
    """`invoke npu.smoke --dry`: the checks a run would do here, and where."""
    import importlib

    lines = [
        f"npu.smoke plan: {runner_why}; devices {plan.devices}; chip "
        f"{plan.chip or 'unknown (no npu-smi answer)'}; compiling for {plan.soc}",
        "host:",
    ]
    lines += [f"  - {name}" for name in HOST_CHECKS]
    for env, module in CHECK_MODULES:
        state = "runs" if plan.applicable[env] else "not applicable to this chip"
        lines.append(f"{env} env ({module}, {get_env(env).image}): {state}")
        names = importlib.import_module(module).planned_checks(plan.devices)
        lines += [f"  - {name}" for name in names]
    return "\n".join(lines)


def run_smoke(
    settings: dict,
    *,
    artifacts=None,
    runner: str | None = None,
    devices=None,
    soc_version: str | None = None,
    probe_engine=detect.container_engine,
    dry: bool = False,
) -> dict:
    """Run every check; write the report; return {"checks", "report", "failed",
    "needs_host", "versions"} (with dry: {"plan": text} and nothing run or written)."""
    plan = plan_smoke(settings, devices, soc_version, probe_engine)
    npu, engine, chosen = plan.npu, plan.engine, plan.devices
    final = flag_path(artifacts) or setting_path(settings["artifacts"]) / "npu-smoke"
    if dry:
        _, why = pick_runner(runner or "auto", settings, npu, engine, final, plan.applicable)
        return {"plan": describe_plan(plan, why)}
    # Written beside, then swapped in: an interrupted run leaves the last report whole.
    out = final.parent / f".{final.name}.tmp-{os.getpid()}"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    try:
        stage_runner, why = pick_runner(
            runner or "auto", settings, npu, engine, out, plan.applicable
        )
        print(
            f"npu.smoke: {why}; devices {chosen}; chip {plan.chip or 'unknown'}, compiling "
            f"for {plan.soc}; {RUN_TIMEOUT_NOTE}",
            flush=True,
        )
        host = Checks("host")
        envs = [env for env, _ in CHECK_MODULES if plan.applicable[env]]
        host.run(HOST_CHECKS[0], _driver, npu, envs, plan.smi is not None and bool(plan.smi.chips))
        host.run(HOST_CHECKS[1], _devices, npu)
        host.run(HOST_CHECKS[2], _npu_smi, plan.smi, plan.smi_problem)
        host.run(HOST_CHECKS[3], _access, npu, chosen, stage_runner)
        host.run(HOST_CHECKS[4], _engine, engine)
        checks = list(host.results)
        versions = host_versions(npu, plan.smi)
        for env, module in CHECK_MODULES:
            if not plan.applicable[env]:
                checks += not_applicable(env, module, chosen, plan.chip)
                continue
            found, seen = run_module(stage_runner, env, module, out, npu, chosen, plan.soc)
            checks += found
            for component, version in seen.items():
                versions.setdefault(component, []).append((version, f"{env} env"))
        summary = _write(out, checks, why, chosen, versions)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    shutil.rmtree(final, ignore_errors=True)
    os.replace(out, final)
    summary["report"] = final / "smoke.md"
    return summary


# The components whose versions a report names, in this order (one may be found in
# several places: the host, each image).
VERSION_ORDER = ("driver", "firmware", "npu-smi", "CANN", "torch_aie", "torch_npu", "ais_bench")


def host_versions(npu: detect.NpuHost, smi) -> dict:
    return {
        "driver": [(npu.driver_version, f"host {npu.driver_dir}/version.info")],
        "firmware": [
            (firmware_version(npu.driver_dir), f"host {Path(npu.driver_dir).parent}/firmware")
        ],
        "npu-smi": [(smi.version if smi else None, "host npu-smi info")],
    }


def version_rows(versions: dict) -> list[list[str]]:
    """[component, version or "not found", where] in VERSION_ORDER, then the others."""
    order = {name: index for index, name in enumerate(VERSION_ORDER)}
    rows = []
    for component in sorted(versions, key=lambda name: (order.get(name, len(order)), name)):
        for version, where in versions[component]:
            rows.append([component, version or "not found", where])
    return rows


def _write(out: Path, checks: list[dict], why: str, devices: list[int], versions: dict) -> dict:
    failed = [c for c in checks if c["status"] == FAILED]
    needs_host = [c for c in checks if c["status"] == NEEDS_HOST]
    summary = {"runner": why, "devices": devices, "checks": checks, "versions": versions}
    (out / "smoke.json").write_text(json.dumps(summary, indent=2) + "\n")
    rows = [[c["check"], c["where"], c["status"], c.get("error") or c["detail"]] for c in checks]
    lines = ["# NPU smoke check", "", f"Ran on the {why}, devices {devices}.", ""]
    lines += ["| check | where | status | detail |", "| --- | --- | --- | --- |"]
    lines += ["| " + " | ".join(str(v).replace("|", "/") for v in row) + " |" for row in rows]
    lines += ["", "## Versions found", "", "| component | version | where |", "| --- | --- | --- |"]
    lines += [
        "| " + " | ".join(str(v).replace("|", "/") for v in row) + " |"
        for row in version_rows(versions)
    ]
    lines += ["", f"## Needs a real Ascend host ({len(needs_host)})", ""]
    lines += [f"- {c['check']} ({c['where']}): {c['detail']}" for c in needs_host] or ["- none"]
    (out / "smoke.md").write_text("\n".join(lines) + "\n")
    return {"checks": checks, "failed": failed, "needs_host": needs_host, "versions": versions}


def render(summary: dict) -> str:
    """The closing lines: a table, the versions found, then the checks that need a host."""
    rows = [[c["check"], c["where"], c["status"]] for c in summary["checks"]]
    text = table(rows, ["check", "where", "status"])
    text += "\n\n" + table(
        version_rows(summary.get("versions") or {}), ["component", "version", "where"]
    )
    text += f"\n\nreport: {summary['report']}"
    text += f"\nchecks that need a real Ascend host ({len(summary['needs_host'])}):"
    for check in summary["needs_host"]:
        text += f"\n  - {check['check']} ({check['where']})"
    return text
