"""`invoke npu.smoke`: here, it says which checks need a real host; against the fakes
(tests/fakes: torch_aie and ais_bench on the CPU, a fake atc, fake device nodes) each
check does its real work and can fail."""

import json
import os
import stat
import subprocess
import sys

import pytest

from tests.conftest import REPO
from zoobox.hosts.detect import ContainerEngine
from zoobox.jobs.smoke import render, run_smoke
from zoobox.pipeline.configure import settings_from
from zoostage.smoke import common
from zoostage.smoke.checks import Checks

FAKES = REPO / "tests" / "fakes"


def _run_module(module, out, *args, extra_env=None, path=None):
    env = dict(os.environ, PYTHONPATH=f"{FAKES}{os.pathsep}{REPO}", OMP_NUM_THREADS="1")
    if path:
        env["PATH"] = f"{path}{os.pathsep}{env['PATH']}"
    env.update(extra_env or {})
    result = subprocess.run(
        [sys.executable, "-m", module, "--out", str(out), *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    checks = json.loads((out / "smoke.json").read_text())["checks"]
    return {c["check"]: c for c in checks}


@pytest.fixture
def fake_dev(tmp_path):
    dev = tmp_path / "dev"
    dev.mkdir()
    for name in ("davinci0", "davinci1", "davinci_manager"):
        (dev / name).touch()
    return dev


@pytest.mark.slow
def test_aie_checks_against_the_fakes(tmp_path, fake_dev):
    found = _run_module(
        "zoostage.smoke.aie", tmp_path / "out", "--devices", "0,1", "--dev-root", str(fake_dev)
    )
    assert found["import torch_aie"]["detail"] == "torch_aie 6.3.rc2+fake"
    dtype = found["torch_aie.Input default dtype"]["detail"]
    assert dtype == "Input([1, 3, 16, 16]).dtype = torch.float32"
    precision = found["torch_aie.compile default precision policy"]["detail"]
    assert precision == "precision_policy defaults to 'PrecisionPolicy.FP16'"
    assert found["compile a 1-conv module (fp16, as the aie backend does)"]["status"] == "ok"
    first = found["saved module loads and runs in another process, npu:0"]
    other = found["saved module loads and runs on another device id, npu:1"]
    assert first["status"] == other["status"] == "ok"
    assert str(os.getpid()) not in first["detail"]  # another process did it
    assert "npu:1" in other["detail"]
    assert found["device nodes as the container sees them"]["status"] == "ok"
    # no CANN here: those say so, they do not fail
    assert found["CANN version"]["status"] == "needs host"


def test_aie_checks_report_what_the_fake_is_told_and_catch_failures(tmp_path, fake_dev):
    found = _run_module(
        "zoostage.smoke.aie",
        tmp_path / "out",
        "--dev-root",
        str(fake_dev),
        extra_env={"FAKE_TORCH_AIE_INPUT_DTYPE": "float16", "FAKE_TORCH_AIE_COMPILE_FAILS": "1"},
    )
    assert found["torch_aie.Input default dtype"]["detail"].endswith("torch.float16")
    failed = found["compile a 1-conv module (fp16, as the aie backend does)"]
    assert failed["status"] == "failed" and "E19999: compile failed (fake)" in failed["detail"]
    assert "(at " in failed["error"]  # where it was raised, for the report
    assert found["saved module loads and runs in another process, npu:0"]["status"] == (
        "needs host"
    )
    assert found["saved module runs on another device id"]["status"] == "skipped"


FAKE_ATC = """#!{python}
import os, sys
args = dict(a[2:].split("=", 1) for a in sys.argv[1:] if "=" in a)
open(os.path.join(os.getcwd(), "atc-argv.txt"), "w").write("\\n".join(sys.argv[1:]))
open(args["output"] + ".om", "wb").close()
print("ATC run success, welcome to the next use.")
"""


@pytest.fixture
def fake_atc(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "atc"
    script.write_text(FAKE_ATC.format(python=sys.executable))
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return bin_dir


def test_atc_checks_against_the_fakes(tmp_path, fake_dev, fake_atc):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    out = tmp_path / "out"
    found = _run_module("zoostage.smoke.atc", out, "--dev-root", str(fake_dev), path=fake_atc)
    atc = found["ATC: 1-conv ONNX to .om with --precision_mode allow_fp32_to_fp16"]
    assert atc["status"] == "ok"
    argv = (out / "atc-argv.txt").read_text().splitlines()
    assert "--precision_mode=allow_fp32_to_fp16" in argv and "--framework=5" in argv
    assert "--out_nodes=Conv_0:0" in argv
    bench = found["ais_bench InferSession runs the .om; its exec time's unit"]
    assert bench["status"] == "ok", bench
    assert "exec time 0.050 ms read as ms" in bench["detail"]

    wrong = _run_module(
        "zoostage.smoke.atc",
        tmp_path / "again",
        "--dev-root",
        str(fake_dev),
        path=fake_atc,
        extra_env={"FAKE_AIS_BENCH_WRONG": "1"},
    )
    failed = wrong["ais_bench InferSession runs the .om; its exec time's unit"]
    assert failed["status"] == "failed" and "differ from ONNX Runtime's" in failed["detail"]


def test_set_env_is_sourced_from_its_folder_and_its_errors_caught(tmp_path):
    aie = tmp_path / "aie"
    aie.mkdir()
    script = aie / "set_env.sh"
    script.write_text('export AIE_HOME="$(pwd)"\n')
    assert common.set_env(str(script)) == "sets AIE_HOME"
    script.write_text("echo 'cannot find lib' >&2; false\n")
    checks = Checks("test", stream=open(os.devnull, "w"))
    checks.run("set_env", common.set_env, str(script))
    assert checks.results[0]["status"] == "failed"
    assert "exited 1: cannot find lib" in checks.results[0]["detail"]


def test_an_unknown_uid_fails_the_identity_check(monkeypatch):
    import pwd

    def unknown(uid):
        raise KeyError(uid)

    monkeypatch.setattr(pwd, "getpwuid", unknown)
    checks = Checks("test", stream=open(os.devnull, "w"))
    checks.run("identity", common.identity)
    assert checks.results[0]["status"] == "failed"
    assert "no passwd entry" in checks.results[0]["detail"]


@pytest.mark.slow
def test_the_host_job_with_fake_devices_runs_the_modules_on_the_host_runner(
    tmp_path, fake_dev, monkeypatch
):
    driver = tmp_path / "driver"
    driver.mkdir()
    (driver / "version.info").write_text("Version=23.0.rc1\n")
    monkeypatch.setenv("PYTHONPATH", f"{FAKES}{os.pathsep}{REPO}")
    settings = settings_from(
        {"zoobox": {"docker": {"dev_root": str(fake_dev), "driver_dir": str(driver)}}}
    )
    summary = run_smoke(
        settings,
        artifacts=tmp_path / "smoke",
        runner="host",
        devices="0,1",
        probe_engine=lambda: ContainerEngine(False, "no docker"),
    )
    by_name = {(c["where"], c["check"]): c for c in summary["checks"]}
    assert by_name[("host", "NPU devices")]["detail"] == "davinci 0, 1"
    assert by_name[("host", "Ascend driver, new enough for the images' CANN")]["status"] == "ok"
    assert by_name[("host", "container engine")]["status"] == "skipped"
    aie = {c["check"]: c for c in summary["checks"] if c["where"] == "aie env"}
    assert aie["saved module loads and runs on another device id, npu:1"]["status"] == "ok"
    report = (tmp_path / "smoke" / "smoke.md").read_text()
    assert "| import torch_aie | aie env | ok | torch_aie 6.3.rc2+fake |" in report
    assert not list(tmp_path.glob(".smoke.tmp-*"))  # written beside, then swapped in
    text = render(summary)
    assert text.splitlines()[-len(summary["needs_host"]) - 1].startswith("checks that need")


def test_invoke_npu_smoke_runs_here_and_ends_with_what_needs_a_host(tmp_path):
    env = dict(os.environ, INVOKE_ZOOBOX_DOCKER_DEV_ROOT=str(tmp_path / "no-dev"))
    result = subprocess.run(
        [
            *(sys.executable, "-m", "invoke", "npu.smoke", "--runner", "host"),
            *("--artifacts", str(tmp_path / "smoke")),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.strip().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("checks that need"))
    needs = [line.strip()[2:] for line in lines[start + 1 :]]
    assert lines[start] == f"checks that need a real Ascend host ({len(needs)}):"
    for expected in (
        "NPU devices (host)",
        "npu-smi info (host)",
        "import torch_aie (aie env)",
        "torch_aie.Input default dtype (aie env)",
        "torch_aie.compile default precision policy (aie env)",
        "compile a 1-conv module (fp16, as the aie backend does) (aie env)",
        "saved module loads and runs in another process, npu:0 (aie env)",
        "AIE runtime set_env.sh, from its own folder (aie env)",
        "ATC: 1-conv ONNX to .om with --precision_mode allow_fp32_to_fp16 (atc env)",
        "ais_bench InferSession runs the .om; its exec time's unit (atc env)",
    ):
        assert expected in needs, expected
    assert "not an Ascend host" in (tmp_path / "smoke" / "smoke.md").read_text()
    assert f"report: {tmp_path / 'smoke' / 'smoke.md'}" in result.stdout
