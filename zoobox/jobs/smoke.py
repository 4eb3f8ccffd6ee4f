"""`invoke npu.smoke`: what only a real Ascend host can settle, checked where stages run.

Host checks (driver, devices, npu-smi, who can open the device nodes, the engine), then
the stage-side check modules (zoostage.smoke.aie, zoostage.smoke.atc) inside the aie and
atc images through the docker runner -- with the NPU mounted when the host has one -- or
through the host runner where no engine or image is there. One report,
ARTIFACTS/npu-smoke/smoke.md (+ smoke.json), says ok / failed / needs host / skipped per
check and ends with the checks that need a real host. On a machine without an NPU every
device check says "not an Ascend host", and the command still succeeds: only a check
that failed makes it fail.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from zoobox.core.envspec import get_env
from zoobox.core.errors import UserError
from zoobox.core.text import table
from zoobox.hosts import detect
from zoobox.hosts.npucompat import image_compatibility
from zoobox.pipeline.choice import parse_devices
from zoobox.pipeline.configure import flag_path, setting_path
from zoobox.runners.base import Runner, StageCall
from zoobox.runners.factory import make_runner
from zoobox.runners.host import HostRunner
from zoostage.smoke.checks import FAILED, NEEDS_HOST, RESULTS, Checks, NeedsHost, Skip

CHECK_MODULES = (("aie", "zoostage.smoke.aie"), ("atc", "zoostage.smoke.atc"))
RUN_TIMEOUT_NOTE = "each env's checks run in one process; compile and ATC take about a minute"


# -- host checks -----------------------------------------------------------------------------
def _driver(npu: detect.NpuHost) -> str:
    if npu.driver_version is None:
        raise NeedsHost(f"not an Ascend host: no driver version in {npu.driver_dir}/version.info")
    rows = image_compatibility(npu.driver_version, [get_env(env) for env, _ in CHECK_MODULES])
    too_old = [row[0] for row in rows if row[-1] == "driver too old"]
    if too_old:
        raise RuntimeError(
            f"driver {npu.driver_version} is older than what the CANN of {', '.join(too_old)} "
            "needs (invoke doctor)"
        )
    return f"driver {npu.driver_version} at {npu.driver_dir}"


def _devices(npu: detect.NpuHost) -> str:
    if not npu.present:
        raise NeedsHost(f"not an Ascend host: no {npu.dev_root}/davinci*")
    return f"davinci {', '.join(map(str, npu.devices))}"


def _npu_smi(npu: detect.NpuHost) -> str:
    if npu.npu_smi is None:
        raise NeedsHost("not an Ascend host: no npu-smi")
    result = subprocess.run([str(npu.npu_smi), "info"], capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise RuntimeError(f"npu-smi info exited {result.returncode}: {result.stdout[-400:]}")
    lines = [line for line in result.stdout.splitlines() if "npu-smi" in line or "310P" in line]
    return " | ".join(line.strip(" |") for line in lines[:3]) or "answers"


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
    name: str, settings: dict, npu: detect.NpuHost, engine: detect.ContainerEngine, out: Path
):
    """(runner, why): docker when an engine answers and the aie / atc images exist."""
    if name in ("auto", "docker") and engine.reachable:
        runner, _ = make_runner(
            "docker", settings, artifacts=out, data=None, npu=npu, engine=engine
        )
        missing = [env for env, _ in CHECK_MODULES if runner.image_id(get_env(env).image) is None]
        if name == "docker" or not missing:
            return runner, f"docker runner ({engine.detail})"
        return HostRunner(), f"host runner: image(s) of {', '.join(missing)} not built"
    if name == "docker":
        raise UserError(f"--runner docker, but no Docker engine answers ({engine.detail})")
    if name not in ("auto", "host"):
        raise UserError(f"npu.smoke runs with --runner auto, docker or host, not {name!r}")
    return HostRunner(), "host runner" + ("" if engine.reachable else ": no Docker engine")


def run_module(runner: Runner, env: str, module: str, out: Path, npu, devices, soc) -> list[dict]:
    """Run one check module in its env; its results, or one failed result saying why not."""
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
        completed = runner.run(call)
    except UserError as error:
        return [_failed(f"run the {env} checks", where, str(error))]
    results = out / env / RESULTS
    if not results.is_file():
        tail = completed.tail.strip().splitlines()[-5:]
        return [
            _failed(
                f"run the {env} checks", where, f"exit {completed.returncode}: {' | '.join(tail)}"
            )
        ]
    return json.loads(results.read_text())["checks"]


def _failed(name: str, where: str, detail: str) -> dict:
    return {"check": name, "where": where, "status": FAILED, "detail": detail}


# -- the job -----------------------------------------------------------------------------------
def run_smoke(
    settings: dict,
    *,
    artifacts=None,
    runner: str | None = None,
    devices=None,
    soc_version: str = "Ascend310P3",
    probe_engine=detect.container_engine,
) -> dict:
    """Run every check; write the report; return {"checks", "report", "failed", "needs_host"}."""
    docker = settings.get("docker") or {}
    npu = detect.npu_host(
        dev_root=Path(docker.get("dev_root") or "/dev"),
        driver_dir=Path(docker.get("driver_dir") or "/usr/local/Ascend/driver"),
    )
    engine = probe_engine()
    detect.use_engine(engine)
    final = flag_path(artifacts) or setting_path(settings["artifacts"]) / "npu-smoke"
    # Written beside, then swapped in: an interrupted run leaves the last report whole.
    out = final.parent / f".{final.name}.tmp-{os.getpid()}"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    try:
        chosen = parse_devices(devices) if devices not in (None, "") else (npu.devices[:2] or [0])
        stage_runner, why = pick_runner(runner or "auto", settings, npu, engine, out)
        print(f"npu.smoke: {why}; devices {chosen}; {RUN_TIMEOUT_NOTE}", flush=True)
        host = Checks("host")
        host.run("Ascend driver, new enough for the images' CANN", _driver, npu)
        host.run("NPU devices", _devices, npu)
        host.run("npu-smi info", _npu_smi, npu)
        host.run("device nodes open for the stages' user", _access, npu, chosen, stage_runner)
        host.run("container engine", _engine, engine)
        checks = list(host.results)
        for env, module in CHECK_MODULES:
            checks += run_module(stage_runner, env, module, out, npu, chosen, soc_version)
        summary = _write(out, checks, why, chosen)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    shutil.rmtree(final, ignore_errors=True)
    os.replace(out, final)
    summary["report"] = final / "smoke.md"
    return summary


def _write(out: Path, checks: list[dict], why: str, devices: list[int]) -> dict:
    failed = [c for c in checks if c["status"] == FAILED]
    needs_host = [c for c in checks if c["status"] == NEEDS_HOST]
    summary = {"runner": why, "devices": devices, "checks": checks}
    (out / "smoke.json").write_text(json.dumps(summary, indent=2) + "\n")
    rows = [[c["check"], c["where"], c["status"], c.get("error") or c["detail"]] for c in checks]
    lines = ["# NPU smoke check", "", f"Ran on the {why}, devices {devices}.", ""]
    lines += ["| check | where | status | detail |", "| --- | --- | --- | --- |"]
    lines += ["| " + " | ".join(str(v).replace("|", "/") for v in row) + " |" for row in rows]
    lines += ["", f"## Needs a real Ascend host ({len(needs_host)})", ""]
    lines += [f"- {c['check']} ({c['where']}): {c['detail']}" for c in needs_host] or ["- none"]
    (out / "smoke.md").write_text("\n".join(lines) + "\n")
    return {"checks": checks, "failed": failed, "needs_host": needs_host}


def render(summary: dict) -> str:
    """The closing lines: a table, then the checks that need a real host."""
    rows = [[c["check"], c["where"], c["status"]] for c in summary["checks"]]
    text = table(rows, ["check", "where", "status"])
    text += f"\n\nreport: {summary['report']}"
    text += f"\nchecks that need a real Ascend host ({len(summary['needs_host'])}):"
    for check in summary["needs_host"]:
        text += f"\n  - {check['check']} ({check['where']})"
    return text
