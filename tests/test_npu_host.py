"""What a first run on an Ascend host meets around the API calls, checked against fakes:
device errors named, device nodes a container could not open, the logs a failed NPU stage
leaves, and the engine `invoke dev.engine` started found without DOCKER_HOST."""

import json
import os
import stat
import subprocess
import sys

import pytest

from tests.conftest import REPO
from zoobox.core.errors import UserError
from zoobox.core.recipe import load_recipe_file
from zoobox.hosts import detect
from zoobox.hosts.detect import NpuHost, container_engine, device_access_problem
from zoobox.hosts.npucompat import diagnose
from zoobox.pipeline.choice import Choice
from zoobox.pipeline.configure import check_npu_access
from zoobox.pipeline.pipeline import Options, Pipeline
from zoobox.runners.base import Completed
from zoobox.runners.docker import DockerRunner, DockerSettings
from zoobox.runners.host import HostRunner

# -- 5. device errors seen in the field ------------------------------------------------------
FIELD_OUTPUTS = {
    "-8020": (
        "DrvMngGetConsoleLogLevel failed. (g_conLogLevel=3)\n"
        "dcmi model initialized failed, because the device is used. ret is -8020\n",
        ["davinci3", "-8020", "npu-smi info", "--devices"],
    ),
    "507033": (
        "rtSetDevice execute failed, reason=[device retain error]\n"
        "open device 0 failed, runtime result = 507033.[FUNC:ReportCallError]\n",
        ["davinci3", "507033", "invoke doctor", "plog"],
    ),
    "107001": (
        "rtSetDevice:ErrCode=107001, desc=[device id error], InnerCode=0x7010003\n",
        ["davinci3", "107001", "invalid device id", "--devices"],
    ),
    "207006": (
        "aclrtSetDevice failed, runtime result = 207006\n",
        ["davinci3", "207006", "permission", "HwHiAiUser"],
    ),
}


@pytest.mark.parametrize("code", sorted(FIELD_OUTPUTS))
def test_field_error_codes_are_named_with_what_to_do(code):
    output, expected = FIELD_OUTPUTS[code]
    message = diagnose(output, [3])
    assert message is not None and "\n" not in message
    for part in expected:
        assert part in message, (part, message)


def test_codes_match_whole_numbers_only():
    assert diagnose("timestamp 20240507033 and pid 1107001", [0]) is None
    assert diagnose("ret is -80201", [0]) is None
    assert "-8005" in diagnose("dcmi module initialize failed. ret is -8005", [0])
    assert diagnose("Traceback: ZeroDivisionError", [0]) is None


# -- 6. device nodes the container could not open ---------------------------------------------
@pytest.fixture
def nodes(tmp_path):
    dev = tmp_path / "dev"
    dev.mkdir()
    (dev / "davinci0").touch()
    return dev


def test_root_group_nodes_are_refused_for_a_non_root_container(nodes):
    node = nodes / "davinci0"
    os.chown(node, 0, 0)
    node.chmod(0o660)
    problem = device_access_problem(nodes, [0], 1000, {1000})
    assert "root's group (gid 0)" in problem and "mode 660" in problem
    assert device_access_problem(nodes, [0], 0, {0}) is None  # root may
    node.chmod(0o666)
    assert device_access_problem(nodes, [0], 1000, {1000}) is None  # world rw
    node.chmod(0o660)
    os.chown(node, 0, 1234)  # HwHiAiUser's group: the container gets it (--group-add)
    npu = NpuHost(devices=[0], dev_root=nodes, group_gid=1234)
    runner = DockerRunner(DockerSettings(artifacts=nodes, npu=npu, user="1000:1000"))
    assert runner.npu_identity() == (1000, {1000, 1234})
    check_npu_access(npu, [0], runner)  # no error


def test_the_check_runs_before_any_stage_and_names_what_to_do(nodes):
    node = nodes / "davinci0"
    os.chown(node, 0, 0)
    node.chmod(0o660)
    npu = NpuHost(devices=[0], dev_root=nodes, group_gid=None)  # gid 0: nothing to add
    runner = DockerRunner(DockerSettings(artifacts=nodes, npu=npu, user="1000:1000"))
    with pytest.raises(UserError) as error:
        check_npu_access(npu, [0], runner)
    message = str(error.value)
    assert "root's group (gid 0)" in message and "docker runner" in message
    assert "HwHiAiUser" in message and "zoobox.docker.user" in message


# -- 1. the logs an NPU stage leaves ----------------------------------------------------------
class NpuFailingRunner(HostRunner):
    """Runs the toy recipe on the host; stage c plays an NPU stage that logs, then fails."""

    def __init__(self, output):
        super().__init__()
        self.output = output
        self.seen_env = None

    def run(self, call):
        if call.stage != "c":
            return super().run(call)
        self.seen_env = self.environment(call)
        call.logs.mkdir(parents=True, exist_ok=True)
        (call.logs / "plog-1.log").write_text("[ERROR] RUNTIME ...\n")
        return Completed(1, self.output)


def _engine(tmp_path, runner):
    options = Options(artifacts=tmp_path / "art", cache=tmp_path, data=tmp_path)
    recipe = load_recipe_file(REPO / "tests" / "toy" / "recipe.yaml")
    return Pipeline(recipe, Choice("host", "aie", [2], "test"), runner, options)


def test_a_failed_npu_stage_keeps_its_logs_and_says_where(tmp_path):
    logs = tmp_path / "art" / "toy" / "logs" / "c"
    logs.mkdir(parents=True)
    (logs / "stale.log").write_text("from an earlier run\n")
    runner = NpuFailingRunner("Traceback: RuntimeError\n")
    with pytest.raises(UserError) as error:
        _engine(tmp_path, runner).run()
    assert f"the NPU tools' logs are in {logs}" in str(error.value)
    assert sorted(p.name for p in logs.iterdir()) == ["plog-1.log"]  # this run's only
    assert runner.seen_env["ASCEND_PROCESS_LOG_PATH"] == str(logs)
    assert not list((tmp_path / "art" / "toy").glob(".c.tmp-*"))  # the output is discarded


def test_a_known_device_error_also_points_at_the_logs(tmp_path):
    runner = NpuFailingRunner("open device 0 failed, runtime result = 507033.\n")
    with pytest.raises(UserError, match=r"^stage c: setting device davinci2 failed .*logs: "):
        _engine(tmp_path, runner).run()


# -- 17. the dev engine, found the way the tests find it --------------------------------------
FAKE_DOCKER = """#!/bin/sh
# Answers only on the dev engine's socket; records what each command was sent to.
echo "$1 DOCKER_HOST=${DOCKER_HOST:-unset}" >> "$FAKE_LOG"
if [ "$DOCKER_HOST" != "unix://$FAKE_SOCKET" ]; then
    echo "Cannot connect to the Docker daemon at unix:///var/run/docker.sock" >&2
    exit 1
fi
case "$1" in
    info) echo '{"ServerVersion": "4.3.1", "Runtimes": {"runc": {}}}' ;;
    image) echo "sha256:0123" ;;
    run)
        # The stage "ran": its completion record, which the stage kit writes last and
        # without which the engine accepts no output, lands in FAKE_ARTIFACTS.
        out=""; previous=""
        for arg in "$@"; do [ "$previous" = "--out" ] && out="$arg"; previous="$arg"; done
        if [ -n "$FAKE_ARTIFACTS" ] && [ -n "$out" ]; then
            mkdir -p "$FAKE_ARTIFACTS${out#/artifacts}"
            echo '{"status": "ok"}' > "$FAKE_ARTIFACTS${out#/artifacts}/status.json"
        fi ;;
esac
exit 0
"""


@pytest.fixture
def fake_engine(tmp_path, monkeypatch):
    """A `docker` on PATH that answers only on the socket of a fake dev engine."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    docker = bin_dir / "docker"
    docker.write_text(FAKE_DOCKER)
    docker.chmod(docker.stat().st_mode | stat.S_IEXEC)
    state = tmp_path / "engine"
    state.mkdir()
    (state / "podman.sock").touch()
    env = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "ZOOBOX_ENGINE_DIR": str(state),
        "FAKE_SOCKET": str(state / "podman.sock"),
        "FAKE_LOG": str(tmp_path / "docker.log"),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    return env


def test_the_dev_engine_is_found_without_docker_host(fake_engine, monkeypatch):
    found = container_engine()
    assert found.reachable and found.docker_host == f"unix://{fake_engine['FAKE_SOCKET']}"
    assert "invoke dev.engine" in found.detail and "4.3.1" in found.detail
    assert container_engine(dev_fallback=False).reachable is False
    monkeypatch.setenv("DOCKER_HOST", "unix:///elsewhere.sock")  # an explicit one wins
    assert container_engine().reachable is False
    monkeypatch.delenv("DOCKER_HOST")
    os.remove(fake_engine["FAKE_SOCKET"])  # no dev engine: the default's answer stands
    assert container_engine().reachable is False


def test_the_cli_runs_containers_on_the_dev_engine_and_says_so(fake_engine, tmp_path):
    env = dict(os.environ, **fake_engine)
    env.pop("DOCKER_HOST", None)
    env["INVOKE_ZOOBOX_DOCKER_TTY"] = "false"
    env["FAKE_ARTIFACTS"] = str(tmp_path / "art")
    result = subprocess.run(
        [
            *(sys.executable, "-m", "invoke", "retinaface.export", "--runner", "docker"),
            *("--random-init", "--artifacts", str(tmp_path / "art")),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    first = result.stdout.splitlines()[0]
    assert f"Docker engine server 4.3.1 at unix://{fake_engine['FAKE_SOCKET']}" in first
    calls = (tmp_path / "docker.log").read_text().splitlines()
    runs = [line for line in calls if line.startswith("run ")]
    assert runs == [f"run DOCKER_HOST=unix://{fake_engine['FAKE_SOCKET']}"]
    record = json.loads((tmp_path / "art" / "retinaface" / "export" / "stage.json").read_text())
    assert record["env"]["image_id"] == "sha256:0123"


def test_probe_module_exposes_the_dev_engine_socket(tmp_path, monkeypatch):
    monkeypatch.setenv("ZOOBOX_ENGINE_DIR", str(tmp_path))
    assert detect.dev_engine_host() == f"unix://{tmp_path}/podman.sock"


# -- 1. the training launcher's workers get a writable working directory ----------------------
def test_training_workers_run_in_a_writable_directory_not_the_repository(tmp_path, monkeypatch):
    from models.retinanet.train import launch

    seen = {}

    def fake_call(argv, env=None, cwd=None):
        seen["cwd"] = cwd
        return 0

    monkeypatch.setattr(launch.subprocess, "call", fake_call)
    config = {"out": str(tmp_path / "out"), "work_dir": str(tmp_path / "work")}
    (tmp_path / "out").mkdir()
    monkeypatch.chdir(tmp_path)  # in a container: the docker runner's tmpfs
    launch.run_workers(["python", "-V"], config, threads=0)
    assert seen["cwd"] == str(tmp_path) and seen["cwd"] != launch.REPO
    # A read-only working directory (the repository mount): the work folder instead.
    monkeypatch.setattr(launch.os, "access", lambda path, mode: False)
    launch.run_workers(["python", "-V"], config, threads=0)
    assert seen["cwd"] == str(tmp_path / "work")


# -- 12. the 310P workflow -------------------------------------------------------------------
def test_the_310p_workflow_builds_only_aie_and_atc_from_a_pinned_venv():
    import re

    import yaml

    workflow = yaml.safe_load((REPO / ".github" / "workflows" / "ascend.yml").read_text())
    job = workflow["jobs"]["recipes"]
    assert "ascend-310p" in job["runs-on"]
    runs = [step.get("run", "") for step in job["steps"]]
    install = next(i for i, run in enumerate(runs) if "pip install" in run)
    assert "python3 -m venv .venv" in runs[install]
    assert re.search(r"\.venv/bin/python -m pip install torch==\d+\.\d+\.\d+ ", runs[install])
    assert '"$PWD/.venv/bin" >> "$GITHUB_PATH"' in runs[install]
    invokes = [i for i, run in enumerate(runs) if "invoke " in run]
    assert invokes and min(invokes) > install  # every invoke is the venv's
    build = next(run for run in runs if "images.build" in run)
    assert "for env in aie atc; do" in build and "train" not in build
    assert 'invoke images.build --env "$env" --npu yes' in build
    assert "docker/local/wheels" in build  # aarch64: the local torch 1.5.0 wheel
    assert not any("train" in run for run in runs)
    assert any(run.strip() == "invoke npu.smoke" for run in runs)


def test_every_runner_points_cann_logs_at_the_stage_log_folder(tmp_path):
    from zoobox.core.envspec import get_env
    from zoobox.envs.venvs import VenvCache
    from zoobox.runners.base import StageCall
    from zoobox.runners.venv import VenvRunner

    logs = tmp_path / "art" / "toy" / "logs" / "compile"
    call = StageCall(
        recipe="toy",
        stage="compile",
        module="zoostage.backends.compile",
        args=[],
        out=tmp_path / "out",
        env=get_env("aie"),
        needs_npu=True,
        devices=[0],
        logs=logs,
    )
    venv = VenvRunner(VenvCache(tmp_path / "venvs", {}), ascend_root=tmp_path, say=print)
    assert venv.environment(call)["ASCEND_PROCESS_LOG_PATH"] == str(logs)
    assert HostRunner().environment(call)["ASCEND_PROCESS_LOG_PATH"] == str(logs)
    call.needs_npu = False  # a CPU stage sets nothing
    assert "ASCEND_PROCESS_LOG_PATH" not in venv.environment(call)
    assert "ASCEND_PROCESS_LOG_PATH" not in HostRunner().environment(call)
