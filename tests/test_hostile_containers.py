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
from zoobox.hosts.probe import NO_DOCKER_CLI, ContainerEngine, NpuHost
from zoobox.run.backend_envs import check_backend_in_envs
from zoobox.run.choice import choose

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
