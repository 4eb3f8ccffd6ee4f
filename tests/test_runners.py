"""Runner commands, compared argument by argument with what a 310P host must get."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO
from zoobox.core.envspec import get_env, load_envs
from zoobox.core.errors import UserError
from zoobox.core.recipe import StageSpec, render_args
from zoobox.hosts.detect import ContainerEngine, NpuHost, driver_version, npu_host
from zoobox.pipeline.choice import choose, parse_devices
from zoobox.runners.base import StageCall
from zoobox.runners.docker import DockerRunner, DockerSettings
from zoobox.runners.host import HostRunner


@pytest.fixture
def fake_310p(tmp_path):
    """Device nodes and driver folder standing in for a 310P host with four NPUs."""
    dev = tmp_path / "dev"
    dev.mkdir()
    for name in [
        "davinci0",
        "davinci1",
        "davinci2",
        "davinci3",
        "davinci_manager",
        "devmm_svm",
        "hisi_hdc",
        "davinci_manager_docker",
    ]:
        (dev / name).touch()
    driver = tmp_path / "Ascend" / "driver"
    driver.mkdir(parents=True)
    (driver / "version.info").write_text("Version=23.0.rc1\nascendhal_version=7.35.19\n")
    smi = tmp_path / "sbin" / "npu-smi"
    smi.parent.mkdir()
    smi.touch()
    (tmp_path / "dcmi").mkdir()  # this host has dcmi but no /etc/ascend_install.info
    return npu_host(
        dev_root=dev,
        driver_dir=driver,
        npu_smi_candidates=(tmp_path / "bin" / "npu-smi", smi),
        driver_files=(tmp_path / "dcmi", tmp_path / "ascend_install.info"),
        hccn_conf=tmp_path / "hccn.conf",
    )


def test_npu_host_probe_reads_devices_driver_and_npu_smi(fake_310p, tmp_path):
    assert fake_310p.devices == [0, 1, 2, 3]
    assert fake_310p.driver_version == "23.0.rc1"
    assert fake_310p.npu_smi == tmp_path / "sbin" / "npu-smi"  # /usr/local/sbin variant
    assert driver_version(tmp_path / "nowhere") is None


def _call(tmp_path, env="aie", npu=True, devices=(2,)):
    art = tmp_path / "art"
    return StageCall(
        recipe="retinaface",
        stage="infer",
        module="models.retinaface.infer",
        args=[
            "--model",
            f"{art}/retinaface/compile",
            "--data",
            f"{tmp_path}/wider/images",
            "--batch-size",
            "1",
        ],
        out=art / "retinaface" / ".infer.tmp-1",
        env=get_env(env),
        needs_npu=npu,
        devices=list(devices),
    )


def test_docker_npu_command_mounts_devices_and_driver_read_only(fake_310p, tmp_path):
    runner = DockerRunner(
        DockerSettings(
            artifacts=tmp_path / "art",
            data=tmp_path / "wider",
            npu=fake_310p,
            tty=False,
            user="1000:1001",
        )
    )
    call = _call(tmp_path)
    call.logs = tmp_path / "art" / "retinaface" / "logs" / "infer"
    argv = runner.argv(call)
    dev = fake_310p.dev_root
    driver = fake_310p.driver_dir
    image = get_env("aie").image
    assert argv == [
        "docker",
        "run",
        "--rm",
        "--user",
        "1000:1001",
        "--mount",
        f"type=bind,source={REPO},target=/workspace,readonly",
        "--mount",
        f"type=bind,source={tmp_path}/art,target=/artifacts",
        "--mount",
        f"type=bind,source={tmp_path}/wider,target=/data,readonly",
        "--shm-size",
        "2g",
        # CANN writes kernel_meta/ into the working directory: a tmpfs, not the repo
        "--tmpfs",
        "/tmp/zoobox-work:rw,exec,mode=1777",
        "-w",
        "/tmp/zoobox-work",
        "-e",
        "ASCEND_PROCESS_LOG_PATH=/artifacts/retinaface/logs/infer",
        "-e",
        "PYTHONPATH=/workspace",
        "-e",
        "HOME=/tmp",
        "-e",
        "PYTHONUNBUFFERED=1",
        "-e",
        "ZOOBOX_ENV=aie",
        "-e",
        f"ZOOBOX_IMAGE={image}",
        "--device",
        f"{dev}/davinci2:/dev/davinci2",
        "--device",
        f"{dev}/davinci_manager:/dev/davinci_manager",
        "--device",
        f"{dev}/devmm_svm:/dev/devmm_svm",
        "--device",
        f"{dev}/hisi_hdc:/dev/hisi_hdc",
        # a driver kept elsewhere goes where the entrypoint and CANN look for it
        "--mount",
        f"type=bind,source={driver},target=/usr/local/Ascend/driver,readonly",
        # host files mounted only where they exist (no ascend_install.info here)
        "--mount",
        f"type=bind,source={tmp_path}/dcmi,target={tmp_path}/dcmi,readonly",
        "--mount",
        f"type=bind,source={tmp_path}/sbin/npu-smi,target={tmp_path}/sbin/npu-smi,readonly",
        image,
        "python",
        "-m",
        "models.retinaface.infer",
        "--model",
        "/artifacts/retinaface/compile",
        "--data",
        "/data/images",
        "--batch-size",
        "1",
        "--out",
        "/artifacts/retinaface/.infer.tmp-1",
    ]
    assert "--privileged" not in argv and "-v" not in argv
    assert runner.device_for([2]) == "0"  # the one mounted device is device 0 inside


def test_npu_host_probe_finds_the_host_files_that_exist(fake_310p, tmp_path):
    assert fake_310p.driver_files == [tmp_path / "dcmi"]
    assert fake_310p.hccn_conf is None
    (tmp_path / "hccn.conf").write_text("address_0=10.0.0.1\n")
    again = npu_host(dev_root=fake_310p.dev_root, hccn_conf=tmp_path / "hccn.conf")
    assert again.hccn_conf == tmp_path / "hccn.conf"


def test_stage_without_data_gets_no_dataset_mount(fake_310p, tmp_path):
    runner = DockerRunner(
        DockerSettings(artifacts=tmp_path / "art", data=tmp_path / "wider", tty=False)
    )
    call = _call(tmp_path, env="export", npu=False)
    call.uses_data = False
    argv = runner.argv(call)
    assert not any("target=/data" in a for a in argv)
    assert f"{tmp_path}/wider/images" in argv  # not rewritten to an unmounted /data
    call.uses_data = True
    assert f"type=bind,source={tmp_path}/wider,target=/data,readonly" in runner.argv(call)


def test_cpu_stage_keeps_the_repository_as_working_directory(tmp_path):
    runner = DockerRunner(DockerSettings(artifacts=tmp_path / "art", tty=False))
    argv = runner.argv(_call(tmp_path, env="export", npu=False))
    assert argv[argv.index("-w") + 1] == "/workspace"
    assert "--tmpfs" not in argv and not any("ASCEND_PROCESS_LOG_PATH" in a for a in argv)


def _train_call(tmp_path, devices=(0, 1, 2, 3, 4, 5, 6, 7), nnodes="1", workers="4"):
    art = tmp_path / "art"
    return StageCall(
        recipe="retinanet",
        stage="train",
        module="models.retinanet.train.launch",
        args=[
            *("--data", f"{tmp_path}/coco", "--devices", "0,1,2,3,4,5,6,7"),
            *("--workers", workers, "--nnodes", nnodes),
        ],
        out=art / "retinanet" / ".train.tmp-1",
        env=get_env("train"),
        needs_npu=True,
        devices=list(devices),
        logs=art / "retinanet" / "logs" / "train",
    )


def _after(argv, flag):
    return [argv[i + 1] for i, a in enumerate(argv) if a == flag]


def test_training_container_shm_hccl_timeouts_and_one_node(fake_310p, tmp_path):
    runner = DockerRunner(DockerSettings(artifacts=tmp_path / "art", npu=fake_310p, tty=False))
    argv = runner.argv(_train_call(tmp_path))
    # 8 ranks x 4 loader workers x 256 MiB each (two prefetched 64.5 MB batches)
    assert _after(argv, "--shm-size") == [f"{8 * 4 * 256}m"]
    assert "HCCL_CONNECT_TIMEOUT=1200" in argv and "HCCL_EXEC_TIMEOUT=1836" in argv
    assert "--network" not in argv and not any("hccn.conf" in a for a in argv)
    assert _after(argv, "-w") == ["/tmp/zoobox-work"]  # the launcher's workers inherit it
    # one device, no workers: the configured size stays
    small = runner.argv(_train_call(tmp_path, devices=(0,), workers="0"))
    assert _after(small, "--shm-size") == ["2g"]
    # or the host's IPC namespace, when configured
    shared = DockerRunner(
        DockerSettings(artifacts=tmp_path / "art", npu=fake_310p, tty=False, ipc_host=True)
    )
    argv = shared.argv(_train_call(tmp_path))
    assert _after(argv, "--ipc") == ["host"] and "--shm-size" not in argv
    # inference containers get no HCCL settings
    assert not any(a.startswith("HCCL_") for a in runner.argv(_call(tmp_path)))


def test_multi_node_training_uses_the_host_network_and_hccn_conf(fake_310p, tmp_path):
    runner = DockerRunner(DockerSettings(artifacts=tmp_path / "art", npu=fake_310p, tty=False))
    call = _train_call(tmp_path, nnodes="2")
    argv = runner.argv(call)
    assert _after(argv, "--network") == ["host"]
    assert "type=bind,source=/etc/hccn.conf,target=/etc/hccn.conf,readonly" in argv
    with pytest.raises(UserError, match=r"needs the device NIC configuration /etc/hccn.conf"):
        runner.run(call)  # this fake host has none: said before any container starts
    (tmp_path / "hccn.conf").write_text("address_0=10.0.0.1\n")
    import dataclasses

    npu = dataclasses.replace(fake_310p, hccn_conf=tmp_path / "hccn.conf")
    argv = DockerRunner(DockerSettings(artifacts=tmp_path / "art", npu=npu, tty=False)).argv(call)
    assert f"type=bind,source={tmp_path}/hccn.conf,target=/etc/hccn.conf,readonly" in argv


def test_hccl_timeouts_are_settings_checked_against_canns_ranges(fake_310p, tmp_path):
    runner = DockerRunner(
        DockerSettings(
            artifacts=tmp_path,
            npu=fake_310p,
            tty=False,
            hccl_connect_timeout=600,
            hccl_exec_timeout="3400",
        )
    )
    argv = runner.argv(_train_call(tmp_path))
    assert "HCCL_CONNECT_TIMEOUT=600" in argv and "HCCL_EXEC_TIMEOUT=3400" in argv
    with pytest.raises(UserError, match=r"hccl_connect_timeout must be .* \[120, 7200\]"):
        DockerRunner(DockerSettings(artifacts=tmp_path, hccl_connect_timeout=60))
    with pytest.raises(UserError, match=r"hccl_exec_timeout must be .* \[68, 17340\]"):
        DockerRunner(DockerSettings(artifacts=tmp_path, hccl_exec_timeout="soon"))


def test_npu_container_without_a_driver_fails_before_starting(fake_310p, tmp_path):
    import dataclasses

    npu = dataclasses.replace(fake_310p, driver_dir=tmp_path / "no-driver")
    runner = DockerRunner(
        DockerSettings(artifacts=tmp_path / "art", npu=npu, tty=False, docker="false")
    )
    with pytest.raises(UserError, match=r"driver folder .*no-driver does not exist"):
        runner.run(_call(tmp_path))


def test_docker_with_ascend_runtime_uses_visible_devices(fake_310p, tmp_path):
    runner = DockerRunner(
        DockerSettings(
            artifacts=tmp_path / "art", npu=fake_310p, ascend_runtime=True, tty=False, user="1:1"
        )
    )
    argv = runner.argv(_call(tmp_path, devices=(0, 3)))
    at = argv.index("--runtime")
    assert argv[at : at + 4] == ["--runtime", "ascend", "-e", "ASCEND_VISIBLE_DEVICES=0,3"]
    assert "--device" not in argv
    assert not any("Ascend/driver" in a for a in argv)


def test_docker_cpu_stage_gets_no_npu_and_tty_only_when_asked(fake_310p, tmp_path):
    runner = DockerRunner(DockerSettings(artifacts=tmp_path / "art", npu=fake_310p, tty=True))
    argv = runner.argv(_call(tmp_path, env="export", npu=False))
    assert argv[:4] == ["docker", "run", "--rm", "-t"]
    assert "--device" not in argv and "--runtime" not in argv
    assert argv[argv.index("--user") + 1] == f"{os.getuid()}:{os.getgid()}"
    assert get_env("export").image in argv


def test_docker_runner_runs_host_env_stages_on_the_host(tmp_path):
    runner = DockerRunner(DockerSettings(artifacts=tmp_path / "art", tty=False))
    call = _call(tmp_path, env="host", npu=False)
    assert runner.argv(call) == HostRunner().argv(call)


def test_data_folder_inside_the_artifact_folder_maps_to_data(tmp_path):
    runner = DockerRunner(DockerSettings(artifacts=tmp_path, data=tmp_path / "demo" / "data"))
    assert runner.container_path(f"{tmp_path}/demo/data/images") == "/data/images"
    assert runner.container_path(f"{tmp_path}/demo/x") == "/artifacts/demo/x"
    assert runner.container_path("relative/path") == "relative/path"


def test_host_runner_command_is_the_current_interpreter(tmp_path):
    call = _call(tmp_path, env="host", npu=False)
    argv = HostRunner().argv(call)
    assert argv[:3] == [sys.executable, "-m", "models.retinaface.infer"]
    assert argv[-2:] == ["--out", str(call.out)]


NO_ENGINE = ContainerEngine(False, "no docker")
ENGINE = ContainerEngine(True, "server 4.3.1", "4.3.1", ("ascend", "runc"))
BACKENDS = {"npu": "aie", "cpu": "torchscript"}


def test_auto_choice_is_host_cpu_without_npu():
    choice = choose(BACKENDS, "auto", "auto", "0", ENGINE, NpuHost())
    assert (choice.runner, choice.backend) == ("host", "torchscript")
    assert "no NPU devices" in choice.line


def test_auto_choice_is_docker_npu_with_engine_and_npu(fake_310p):
    choice = choose(BACKENDS, "auto", "auto", "1", ENGINE, fake_310p)
    assert (choice.runner, choice.backend, choice.devices) == ("docker", "aie", [1])
    assert choice.line.startswith("runner docker, backend aie on npu 1")


def test_forced_choices_fail_clearly_when_impossible(fake_310p):
    with pytest.raises(UserError, match="no Docker engine answers"):
        choose(BACKENDS, "docker", "auto", "0", NO_ENGINE, NpuHost())
    with pytest.raises(UserError, match="needs an Ascend NPU"):
        choose(BACKENDS, "host", "aie", "0", NO_ENGINE, NpuHost())
    with pytest.raises(UserError, match=r"device\(s\) \[7\] not present"):
        choose(BACKENDS, "host", "aie", "7", NO_ENGINE, fake_310p)
    with pytest.raises(UserError, match="unknown backend"):
        choose(BACKENDS, "host", "tensorrt", "0", NO_ENGINE, NpuHost())
    # --dry may describe a host it is not on
    assert choose(BACKENDS, "docker", "aie", "0", NO_ENGINE, NpuHost(), dry=True).npu


def test_parse_devices():
    assert parse_devices("0,1,2,3") == [0, 1, 2, 3]
    assert parse_devices(2) == [2]
    with pytest.raises(UserError):
        parse_devices("npu0")


def test_render_args_drops_none_and_false_and_keeps_bare_true():
    spec = StageSpec(
        "s",
        "host",
        "m",
        {
            "a": "{p.x}",
            "b": "{p.none}",
            "c": "{p.no}",
            "d": "{p.yes}",
            "e": "{in.up}/model.ts",
            "f": "{p.x},3,{p.x}",
        },
    )
    from types import SimpleNamespace

    context = {
        "p": SimpleNamespace(x=4, none=None, no=False, yes=True),
        "in": SimpleNamespace(up="/art/up"),
    }
    assert render_args(spec, context) == [
        "--a",
        "4",
        "--d",
        "--e",
        "/art/up/model.ts",
        "--f",
        "4,3,4",
    ]
    bad = StageSpec("s", "host", "m", {"a": "{p.missing}"})
    with pytest.raises(UserError, match="unknown placeholder"):
        render_args(bad, context)


def test_env_specs_name_their_python_and_npu():
    envs = load_envs()
    assert {"host", "export", "aie", "atc", "train"} <= set(envs)
    assert envs["export"].python == "3.9" and envs["export"].pin("torch") == "1.10.1"
    assert envs["aie"].pin("torch") == "2.0.1" and envs["aie"].npu
    assert envs["atc"].python == "3.7" and envs["atc"].pin("torch") == "1.5.0"
    assert not envs["export"].npu
    assert envs["aie"].image.startswith("zoobox/aie:")


def test_invoke_list_is_fast_and_shows_the_namespaces():
    result = subprocess.run(
        [sys.executable, "-m", "invoke", "--list"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    for name in ["retinaface.all", "images.build", "data.sample", "demo", "doctor"]:
        assert name in result.stdout
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, tasks; print('torch' in sys.modules, 'numpy' in sys.modules)",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert probe.stdout.split() == ["False", "False"]


def _dry_docker(fake_310p, tmp_path, recipe, *extra):
    env = dict(os.environ)
    env.update(
        {
            "INVOKE_ZOOBOX_DOCKER_DEV_ROOT": str(fake_310p.dev_root),
            "INVOKE_ZOOBOX_DOCKER_DRIVER_DIR": str(fake_310p.driver_dir),
            "INVOKE_ZOOBOX_DOCKER_TTY": "false",
            "INVOKE_ZOOBOX_DOCKER_ASCEND_RUNTIME": "false",
        }
    )
    result = subprocess.run(
        [
            *(sys.executable, "-m", "invoke", f"{recipe}.all", "--dry", "--runner", "docker"),
            *("--artifacts", str(tmp_path / "art"), *extra),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    lines = [line.strip()[2:] for line in result.stdout.splitlines() if line.strip()[:2] == "$ "]
    return result.stdout, {line.split(" -m ")[1].split()[0]: line for line in lines}


def test_dry_docker_plan_prints_the_310p_container_commands(fake_310p, tmp_path):
    out, by_module = _dry_docker(
        fake_310p, tmp_path, "retinaface", "--devices", "1", "--data", str(tmp_path / "wider")
    )
    assert "runner docker, backend aie on npu 1" in out
    export = by_module["models.retinaface.export"]
    assert get_env("export").image in export and "--device" not in export
    for module in ("zoostage.backends.compile", "models.retinaface.infer"):
        line = by_module[module]
        assert get_env("aie").image in line
        assert f"--device {fake_310p.dev_root}/davinci1" in line
        assert (
            f"type=bind,source={fake_310p.driver_dir},target=/usr/local/Ascend/driver,readonly"
            in line
        )
        assert "--device 0" in line  # the mounted device is device 0 inside
        assert "/artifacts/retinaface/" in line
        assert "target=/data" not in line  # neither compile nor infer reads the dataset
    assert "--root /data" in by_module["data_scripts.widerface.prepare"]
    assert by_module["zoostage.fetch"].startswith(sys.executable)  # host env, no image


def test_dry_retinanet_plan_shows_workdir_existing_mounts_and_log_path(fake_310p, tmp_path):
    out, by_module = _dry_docker(fake_310p, tmp_path, "retinanet", "--data", str(tmp_path / "c"))
    for module, stage in (
        ("zoostage.backends.compile", "compile"),
        ("models.retinanet.infer", "infer"),
    ):
        line = by_module[module]
        assert "--tmpfs /tmp/zoobox-work:rw,exec,mode=1777 -w /tmp/zoobox-work" in line
        assert f"-e ASCEND_PROCESS_LOG_PATH=/artifacts/retinanet/logs/{stage}" in line
        for host_file in ("/usr/local/dcmi", "/etc/ascend_install.info"):
            assert (f"source={host_file}," in line) == Path(host_file).exists(), host_file
        assert " -v " not in line
        driver = f"source={fake_310p.driver_dir},target=/usr/local/Ascend/driver,readonly"
        assert driver in line
    assert "-w /workspace" in by_module["models.retinanet.export"]  # CPU stages keep it


def test_a_missing_driver_is_not_mounted_and_the_run_refuses(fake_310p, tmp_path):
    import dataclasses

    npu = dataclasses.replace(fake_310p, driver_dir=tmp_path / "no-driver")
    runner = DockerRunner(DockerSettings(artifacts=tmp_path / "art", npu=npu, tty=False))
    assert not any("Ascend/driver" in a for a in runner.argv(_call(tmp_path)))


def test_version_order_and_driver_check():
    from zoobox.hosts.npucompat import driver_supports, version_key

    ordered = ["22.0.2", "23.0.rc1", "23.0.rc3", "23.0.0", "23.0.1", "24.1.rc1"]
    assert sorted(ordered, key=version_key) == ordered
    assert driver_supports("23.0.rc1", "23.0.rc1") is True
    assert driver_supports("22.0.2", "23.0.rc1") is False
    assert driver_supports(None, "23.0.rc1") is None


def test_doctor_style_compatibility_rows():
    from zoobox.hosts.npucompat import image_compatibility

    rows = {r[0]: r[-1] for r in image_compatibility("22.0.2", list(load_envs().values()))}
    assert rows["atc"] == "can run"  # CANN 6.0.RC1 on driver 22.0.2
    assert rows["aie"] == "driver too old"  # CANN 7.0.RC1 needs 23.0.rc1
    assert "export" not in rows


def test_busy_device_is_diagnosed_naming_the_device():
    from zoobox.hosts.npucompat import diagnose

    output = (
        "DrvMngGetConsoleLogLevel failed. (g_conLogLevel=3)\n"
        "dcmi module initialize failed. ret is -8005\n"
    )
    message = diagnose(output, [3])
    assert "davinci3" in message and "-8005" in message
    assert diagnose("Traceback: ZeroDivisionError", [0]) is None


def test_npu_stage_failing_with_8005_is_reported_as_busy_device(tmp_path, monkeypatch):
    from zoobox.core.recipe import load_recipe_file
    from zoobox.pipeline.choice import Choice
    from zoobox.pipeline.pipeline import Options, Pipeline
    from zoobox.runners.base import Completed

    class BusyRunner(HostRunner):
        def run(self, call):
            if call.stage != "c":
                return super().run(call)
            return Completed(1, "dcmi module initialize failed. ret is -8005\n")

    options = Options(artifacts=tmp_path / "art", cache=tmp_path, data=tmp_path)
    engine = Pipeline(
        load_recipe_file(REPO / "tests" / "toy" / "recipe.yaml"),
        Choice("host", "aie", [2], "test"),
        BusyRunner(),
        options,
    )
    with pytest.raises(UserError, match=r"^stage c: NPU davinci2 is held by another"):
        engine.run()
    assert (tmp_path / "art" / "toy" / "b" / "stage.json").exists()  # earlier work kept


def test_named_volume_replaces_the_bind_mount(tmp_path):
    runner = DockerRunner(
        DockerSettings(artifacts=tmp_path / "vol", volume="zoobox-art", tty=False, user="1:1")
    )
    argv = runner.argv(_call(tmp_path, env="export", npu=False))
    assert "type=volume,source=zoobox-art,target=/artifacts" in argv
    assert not any(f"{tmp_path}/vol" in a for a in argv)


@pytest.mark.slow
def test_npu_containers_join_the_group_owning_the_device_nodes(fake_310p, tmp_path):
    import dataclasses

    from zoobox.hosts.detect import device_group

    node = fake_310p.dev_root / "davinci2"
    os.chown(node, os.getuid(), 1234)  # HwHiAiUser's group on a real host
    assert device_group(fake_310p.dev_root, [2]) == 1234
    npu = dataclasses.replace(fake_310p, group_gid=1234)
    for runtime in (False, True):
        runner = DockerRunner(
            DockerSettings(artifacts=tmp_path, npu=npu, tty=False, ascend_runtime=runtime)
        )
        argv = runner.argv(_call(tmp_path))
        assert argv[argv.index("--group-add") + 1] == "1234"
    cpu = DockerRunner(DockerSettings(artifacts=tmp_path, npu=npu, tty=False))
    assert "--group-add" not in cpu.argv(_call(tmp_path, env="export", npu=False))
    os.chown(node, os.getuid(), 0)
    assert device_group(fake_310p.dev_root, [2]) is None  # root's group: nothing to add
