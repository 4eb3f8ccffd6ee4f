"""The container path as a new user meets it (issue 19, items 12-15).

12: with no engine, or with the dev engine found without DOCKER_HOST, what is said;
13: a backend the stages' images or venvs do not install is refused before anything runs;
14: a stopped images.build / envs.build stops its children (and the build's containers);
15: the NPU argv run for real on a container with stand-in device nodes.
"""

import subprocess
import sys

import pytest

from tests.conftest import REPO
from zoobox.core.errors import UserError
from zoobox.core.recipe import load_recipe
from zoobox.hosts.detect import NO_DOCKER_CLI, ContainerEngine, NpuHost
from zoobox.pipeline.backend_envs import check_backend_in_envs
from zoobox.pipeline.choice import choose

INVOKE = (sys.executable, "-m", "invoke")


def _invoke(*args, env=None, timeout=120):
    return subprocess.run(
        [*INVOKE, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )


# -- item 12: what is said about the engine ---------------------------------------------------
def test_i19_item12_no_engine_advice_names_dev_engine():
    dead = ContainerEngine(False, "Cannot connect to the Docker daemon at unix:///x.sock")
    assert "invoke dev.engine" in dead.advice()
    assert "invoke dev.engine" in ContainerEngine(False, NO_DOCKER_CLI).advice()
    assert ContainerEngine(True, "server 27 at the default socket").advice() is None


def test_i19_item12_dev_engine_found_without_docker_host_says_what_the_cli_needs():
    found = ContainerEngine(
        True, "server 4.3.1", docker_host="unix:///s/podman.sock", dev_fallback=True
    )
    assert "export DOCKER_HOST=unix:///s/podman.sock" in found.advice()
    # A docker run's first line says it too: its echoed commands are for rerunning by hand.
    choice = choose({"npu": "aie", "cpu": "torchscript"}, "docker", "auto", "0", found, NpuHost())
    assert "DOCKER_HOST=unix:///s/podman.sock" in choice.line


def test_i19_item12_doctor_with_no_engine_says_how_to_get_one(tmp_path):
    import os

    env = dict(os.environ, DOCKER_HOST=f"unix://{tmp_path}/none.sock")
    result = _invoke("doctor", env=env)
    assert result.returncode == 0, result.stderr
    notes = [line for line in result.stdout.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "invoke dev.engine" in notes[0], result.stdout


# -- item 13: a backend the envs do not install -------------------------------------------------
@pytest.mark.parametrize("runner", ["docker", "venv"])
def test_i19_item13_onnxruntime_in_images_without_it_is_refused(runner):
    recipe = load_recipe("retinaface")
    with pytest.raises(UserError) as raised:
        check_backend_in_envs(recipe, recipe.default_stages, runner, "onnxruntime")
    message = str(raised.value)
    assert "env export" in message and "env aie" in message
    assert "stages compile, infer" in message and "--backend torchscript" in message


def test_i19_item13_envs_that_have_the_backend_pass():
    refinedet = load_recipe("refinedet")  # the atc env pins onnxruntime
    check_backend_in_envs(refinedet, refinedet.default_stages, "docker", "onnxruntime")
    retinaface = load_recipe("retinaface")
    check_backend_in_envs(retinaface, retinaface.default_stages, "host", "onnxruntime")
    check_backend_in_envs(retinaface, retinaface.default_stages, "docker", "torchscript")
    check_backend_in_envs(retinaface, retinaface.default_stages, "docker", "aie")


def test_i19_item13_only_the_stages_that_run_are_checked():
    recipe = load_recipe("retinaface")
    check_backend_in_envs(recipe, ["weights", "data"], "docker", "onnxruntime")


def test_i19_item13_auto_picks_a_cpu_backend_the_images_install():
    def usable(runner, name):
        return name == "torchscript"

    engine = ContainerEngine(True, "server")
    choice = choose(
        {"npu": "aie", "cpu": ["onnxruntime", "torchscript"]},
        "docker",
        "auto",
        "0",
        engine,
        NpuHost(),
        cpu_usable=usable,
    )
    assert choice.backend == "torchscript"


def test_i19_item13_the_cli_refuses_before_any_stage_even_dry(tmp_path):
    result = _invoke(
        "retinaface.all",
        "--dry",
        "--runner",
        "docker",
        "--backend",
        "onnxruntime",
        "--artifacts",
        str(tmp_path / "a"),
    )
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --backend onnxruntime"), result.stderr
    assert "would run" not in result.stdout
    assert not (tmp_path / "a").exists()
    # auto under docker picks the backend the images have: the README's dry-run line works
    result = _invoke(
        "retinaface.all", "--dry", "--runner", "docker", "--artifacts", str(tmp_path / "a")
    )
    assert result.returncode == 0, result.stderr
    assert "backend torchscript" in result.stdout.splitlines()[0]


# -- item 14: a stopped build stops what it started ------------------------------------------
def _wait_for(predicate, timeout, step=0.2):
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(step)
    return None


def _pids_running(pattern):
    found = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True)
    return [int(pid) for pid in found.stdout.split()]


def _start(script, env=None):
    import os

    return subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=REPO,
        env=env or dict(os.environ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
@pytest.mark.parametrize("signame", ["SIGTERM", "SIGINT"])
def test_i19_item14_stopped_venv_build_leaves_no_child(tmp_path, signame):
    """envs.build stopped while `python -m venv` runs: the child goes with it."""
    import os
    import signal
    import stat

    marker = f"zoobox-fake-venv-{os.getpid()}-{signame}"
    fake = tmp_path / "python3.9"
    fake.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = "-I" ]; then\n'
        f'  echo \'[[3, 9, 18], "{fake}", "CPython", "/usr", "/usr"]\'; exit 0\n'
        "fi\n"
        f"exec {sys.executable} -c 'import time; time.sleep(3600)' {marker}\n"
    )
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    script = (
        "from pathlib import Path\n"
        "from zoobox.core.envspec import get_env\n"
        "from zoobox.core.errors import main_guard\n"
        "from zoobox.envs.venvs import VenvCache\n"
        f"cache = VenvCache(Path({str(tmp_path / 'venvs')!r}), {{'3.9': {str(fake)!r}}})\n"
        "main_guard(lambda: cache.build(get_env('export')))\n"
    )
    process = _start(script)
    try:
        assert _wait_for(lambda: _pids_running(marker), 60), "the fake venv never started"
        process.send_signal(getattr(signal, signame))
        _, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 128 + getattr(signal, signame), stderr
    assert stderr.strip().splitlines()[-1].startswith("error: interrupted by"), stderr
    assert _wait_for(lambda: not _pids_running(marker), 15), "python -m venv outlived the task"


@pytest.mark.slow
@pytest.mark.container
def test_i19_item14_stopped_image_build_stops_the_client_and_the_engine_side(tmp_path):
    """SIGTERM to a build: the docker client ends, and the RUN step on the engine too
    (podman's API goes on building when only the client goes: see zoobox.envs.build_cgroup).
    """
    import os
    import signal

    from zoobox.dev import podman as devengine
    from zoobox.envs import build_cgroup

    env = dict(os.environ)
    if not env.get("DOCKER_HOST") and devengine.ping():
        env["DOCKER_HOST"] = devengine.docker_host()
    if not env.get("DOCKER_HOST"):
        pytest.skip("no container engine: `.ci/engine` or `invoke dev.engine` starts one")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DOCKER_HOST", env["DOCKER_HOST"])
        if not build_cgroup.local_podman_cgroupfs():
            pytest.skip("the engine is not a local podman with cgroupfs (Docker cancels itself)")
    base = "localhost/zoobox/debian:bookworm"
    if subprocess.run(
        ["docker", "image", "inspect", base], env=env, capture_output=True
    ).returncode:
        pytest.skip(f"{base} is not in the engine (`invoke dev.engine` makes it)")
    marker = f"{os.getpid()}4242"
    (tmp_path / "Dockerfile").write_text(f"FROM {base}\nRUN sleep {marker}\n")
    script = (
        "from zoobox.core.errors import main_guard\n"
        "from zoobox.envs.image_build import run_build\n"
        f"argv = ['docker', 'build', '--no-cache', '-t', 'zoobox-test/stopped:{marker}', "
        f"{str(tmp_path)!r}]\n"
        "main_guard(lambda: run_build(argv))\n"
    )
    process = _start(script, env)
    try:
        assert _wait_for(lambda: _pids_running(f"^sleep {marker}"), 120), "the RUN never began"
        client = _pids_running(f"docker build --cgroup-parent .*{marker}")
        assert client, "the build did not get a cgroup of its own"
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
        for pid in _pids_running(f"^sleep {marker}"):
            os.kill(pid, signal.SIGKILL)  # never leave the build running on failure
    assert process.returncode == 128 + signal.SIGTERM, stderr
    assert "stopped the build on the engine" in stdout
    assert _wait_for(lambda: not _pids_running(f"docker build --cgroup-parent .*{marker}"), 15)
    assert _wait_for(lambda: not _pids_running(f"^sleep {marker}"), 15), "the RUN step goes on"
    inspect = subprocess.run(
        ["docker", "image", "inspect", f"zoobox-test/stopped:{marker}"],
        env=env,
        capture_output=True,
    )
    assert inspect.returncode != 0, "a stopped build still produced its image"


def test_i19_item14_cgroup_parent_goes_right_after_build():
    from zoobox.envs.build_cgroup import with_cgroup_parent

    argv = ["docker", "build", "-f", "x", "-t", "y", "ctx"]
    assert with_cgroup_parent(argv, "/z") == [
        "docker",
        "build",
        "--cgroup-parent",
        "/z",
        "-f",
        "x",
        "-t",
        "y",
        "ctx",
    ]


def test_i19_item14_kill_cgroup_reads_every_hierarchy(tmp_path):
    """v1 (one folder per controller) and v2 (one tree) layouts, children cgroups included."""
    from zoobox.envs.build_cgroup import cgroup_pids

    (tmp_path / "pids" / "zb" / "sub").mkdir(parents=True)
    (tmp_path / "pids" / "zb" / "cgroup.procs").write_text("11\n12\n")
    (tmp_path / "pids" / "zb" / "sub" / "cgroup.procs").write_text("13\n")
    (tmp_path / "zb").mkdir()
    (tmp_path / "zb" / "cgroup.procs").write_text("14\n")
    assert cgroup_pids("/zb", tmp_path) == {11, 12, 13, 14}
    assert cgroup_pids("/other", tmp_path) == set()


# -- item 15: the NPU argv on a real container ----------------------------------------------
def _podman_engine():
    """(podman path, its environment) for the dev engine's storage, or a skip saying why."""
    import shutil

    from zoobox.dev import podman as devengine

    podman = shutil.which("podman")
    if podman is None or not devengine.conf_path().is_file():
        pytest.skip("no podman set up by `invoke dev.engine` / `.ci/engine` on this machine")
    env = devengine.podman_env()
    base = "localhost/zoobox/python:3.9-bookworm"
    if subprocess.run([podman, "image", "exists", base], env=env).returncode != 0:
        pytest.skip(f"{base} is not in the engine (`invoke dev.engine` makes it)")
    return podman, env, base


@pytest.fixture
def stand_in_310p(tmp_path):
    """A 310P host's device nodes (character devices like /dev/null, group 4242, mode 660)
    under a dev root that is not /dev, its driver folder and npu-smi."""
    import os

    dev = tmp_path / "dev"
    dev.mkdir()
    for name in ("davinci0", "davinci1", "davinci_manager", "devmm_svm", "hisi_hdc"):
        try:
            os.mknod(dev / name, 0o660 | 0o020000, os.makedev(1, 3))
        except PermissionError:
            pytest.skip("cannot make device nodes here (mknod needs root / CAP_MKNOD)")
        os.chown(dev / name, 0, 4242)
        os.chmod(dev / name, 0o660)
    driver = tmp_path / "driver"
    driver.mkdir()
    (driver / "version.info").write_text("Version=23.0.rc1\n")
    smi = tmp_path / "npu-smi"
    smi.write_text("#!/bin/sh\necho npu-smi stand-in\n")
    smi.chmod(0o755)
    return NpuHost(devices=[0, 1], dev_root=dev, driver_dir=driver, npu_smi=smi, group_gid=4242)


@pytest.mark.slow
@pytest.mark.container
def test_i19_item15_npu_argv_runs_a_real_container_with_stand_in_devices(tmp_path, stand_in_310p):
    """The docker runner's NPU argv, run by podman's own CLI (docker CLI 28 refuses any
    --device against podman 4.3's API: 'unknown server OS'): the container sees the chosen
    node at its /dev name, the control nodes, the driver read-only, the node's group."""
    import json
    import os

    from zoobox.core.envspec import get_env
    from zoobox.runners.base import StageCall
    from zoobox.runners.docker import DockerRunner, DockerSettings

    podman, env, base = _podman_engine()
    artifacts = tmp_path / "art"
    out = artifacts / "toy" / "infer"
    out.mkdir(parents=True)
    os.chown(out, 1000, 1000)  # made by the runner as the caller; here the caller is uid 1000
    runner = DockerRunner(
        DockerSettings(artifacts=artifacts, npu=stand_in_310p, tty=False, user="1000:1000")
    )
    call = StageCall(
        recipe="toy",
        stage="infer",
        module="tests.toy.npu_view",
        args=[],
        out=out,
        env=get_env("aie"),
        needs_npu=True,
        devices=[1],
        uses_data=False,
        logs=artifacts / "toy" / "logs" / "infer",
    )
    argv = runner.argv(call)
    assert argv[:2] == ["docker", "run"]
    argv = [podman, *argv[1:]]
    argv[argv.index(call.env.image)] = base  # the aie image's stand-in: a python base
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    view = json.loads((out / "view.json").read_text())
    dev = view["dev"]
    assert set(dev) == {"davinci1", "davinci_manager", "devmm_svm", "hisi_hdc"}, dev
    assert all(node["char"] and node["rdev"] == [1, 3] for node in dev.values()), dev
    # uid 1000 opens the nodes through --group-add of their group, as with HwHiAiUser
    assert view["uid"] == 1000 and 4242 in view["groups"]
    assert all(node["writable"] for node in dev.values()), dev
    assert view["driver_files"] == ["version.info"] and view["driver_read_only"] is True
    assert view["cwd"] == "/tmp/zoobox-work"
    assert view["log_path"] == "/artifacts/toy/logs/infer"


@pytest.mark.container
def test_i19_item15_the_docker_cli_refuses_device_against_podman_43(tmp_path, stand_in_310p):
    """The quirk the test above works around, checked so the docs stay true: when the
    engine accepts --device through the docker CLI, this skips (use the docker CLI then)."""
    import os

    from zoobox.dev import podman as devengine

    _, _, base = _podman_engine()
    env = dict(os.environ, DOCKER_HOST=devengine.docker_host())
    node = stand_in_310p.dev_root / "davinci0"
    result = subprocess.run(
        ["docker", "run", "--rm", "--device", f"{node}:/dev/davinci0", base, "true"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if result.returncode == 0:
        pytest.skip("this engine takes --device through the docker CLI")
    assert "unknown server OS" in result.stderr
