"""Recipes in real containers: the images built, the RetinaFace recipe run with the docker
runner, artifacts crossing images through the shared folder.

Needs a Docker-compatible engine: DOCKER_HOST from the environment, else the one
`invoke dev.engine` / `.ci/engine` started (its socket, if it answers). Skipped, saying so,
when none answers. The first run builds three images (export, aie and atc without their NPU
installers, i.e. CPU images) from their locks: minutes; later runs find them built. One
more build, of atc without the layer cache, checks that a lock gives the same installed set
twice (about two minutes; the image is removed afterwards).
"""

import json
import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from tests.conftest import REPO
from zoobox.core.envspec import get_env
from zoobox.dev import podman as devengine
from zoobox.envs import image_build, locks
from zoobox.hosts.detect import container_engine

pytestmark = [pytest.mark.container, pytest.mark.slow]

# The interpreter running the tests, not whatever `invoke` is first on PATH.
INVOKE = (sys.executable, "-m", "invoke")
IMAGES = ("export", "aie", "atc")  # the CPU variants of aie and atc: no NPU installers here
REBUILT = "atc"  # built a second time, without the cache: the most transitive packages
BUILD_TIMEOUT = 1200
RUN_TIMEOUT = 900


@pytest.fixture(scope="module")
def engine_env():
    """os.environ with a DOCKER_HOST that answers, or a skip saying why there is none."""
    env = dict(os.environ)
    if not env.get("DOCKER_HOST") and devengine.ping():
        env["DOCKER_HOST"] = devengine.docker_host()
    with pytest.MonkeyPatch.context() as patch:
        if env.get("DOCKER_HOST"):
            patch.setenv("DOCKER_HOST", env["DOCKER_HOST"])
        found = container_engine(timeout=20)
    if not found.reachable:
        pytest.skip(
            f"no Docker-compatible engine answers ({found.detail}; DOCKER_HOST="
            f"{env.get('DOCKER_HOST', 'unset')}): start one with `.ci/engine` or "
            "`invoke dev.engine` and export the DOCKER_HOST it prints"
        )
    env["INVOKE_ZOOBOX_DOCKER_TTY"] = "false"
    env.pop("INVOKE_ZOOBOX_RUNNER", None)
    return env


def _run(argv, env, timeout, cwd=REPO):
    started = time.time()
    result = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    result.seconds = time.time() - started
    return result


def _tail(result, lines=40):
    return "\n".join((result.stdout + "\n" + result.stderr).strip().splitlines()[-lines:])


@pytest.fixture(scope="module")
def built(engine_env):
    """The export, aie and atc images, built (or found up to date) through images.build."""
    times = {}
    for name in IMAGES:
        result = _run([*INVOKE, "images.build", "--env", name], engine_env, BUILD_TIMEOUT)
        assert result.returncode == 0, f"images.build --env {name} failed:\n{_tail(result)}"
        times[name] = round(result.seconds, 1)
    print(f"\nimage builds (s): {times}")
    return {name: get_env(name).image for name in IMAGES}


def _docker(engine_env, *args, timeout=300):
    return _run(["docker", *args], engine_env, timeout)


def _inspect(engine_env, image):
    result = _docker(engine_env, "image", "inspect", image)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)[0]


# -- the images themselves ---------------------------------------------------------------------
def test_images_are_labelled_and_check_against_their_specs(engine_env, built):
    for name, image in built.items():
        spec = get_env(name)
        labels = _inspect(engine_env, image)["Config"]["Labels"]
        assert labels["org.zoobox.env"] == name
        assert labels["org.zoobox.spec"] == spec.hash[:12]
        assert labels["org.zoobox.python"] == spec.python
        assert labels["org.zoobox.torch"] == spec.pin("torch")
        assert labels["org.zoobox.npu"] == "absent"  # no installers on this machine
        assert labels["org.opencontainers.image.revision"]
        lock = locks.read_lock(locks.LockTarget(spec, False, locks.machine_arch()).lock_path)
        assert labels["org.zoobox.lock"] == lock.id
    result = _run([*INVOKE, "images.check"], engine_env, 600)
    assert result.returncode == 0, _tail(result)
    checked = {row.split()[0] for row in result.stdout.splitlines() if row.split()[-1:] == ["ok"]}
    assert set(built) <= checked and "ERROR" not in result.stdout
    # Every distribution in each image is the one its lock names (other built images too).
    drift = {
        row.split()[0]: row.split()[-1]
        for row in result.stdout.splitlines()
        if "installed = lock" in row
    }
    assert set(built) <= set(drift) and set(drift.values()) == {"ok"}
    listed = _run([*INVOKE, "images.list"], engine_env, 120)
    assert listed.returncode == 0 and all(image in listed.stdout for image in built.values())


def test_images_run_as_a_non_root_user_and_honour_the_callers_uid(engine_env, built, tmp_path):
    image = built["export"]
    default = _docker(engine_env, "run", "--rm", image, "id", "-u")
    assert default.returncode == 0 and default.stdout.strip() == "1000", _tail(default)
    tmp_path.chmod(0o777)
    wrote = _docker(
        engine_env,
        "run",
        "--rm",
        "--user",
        "4321:4322",
        "-v",
        f"{tmp_path}:/artifacts",
        image,
        "touch",
        "/artifacts/made-inside",
    )
    assert wrote.returncode == 0, _tail(wrote)
    made = (tmp_path / "made-inside").stat()
    assert (made.st_uid, made.st_gid) == (4321, 4322)


def test_every_image_gives_an_arbitrary_uid_a_passwd_entry(engine_env, built, tmp_path):
    """HCCL's getpwuid() for a caller the image never heard of (the entrypoint's job).

    podman adds a passwd line for --user itself, Docker does not: the image's own
    /etc/passwd is mounted read-only over it, so the container sees what Docker gives.
    """
    probe = "import os, pwd; print(pwd.getpwuid(os.getuid()).pw_name, os.getuid(), os.getgid())"
    for name, image in built.items():
        passwd = tmp_path / f"{name}.passwd"
        own = _docker(engine_env, "run", "--rm", "--entrypoint", "cat", image, "/etc/passwd")
        assert own.returncode == 0 and ":4321:" not in own.stdout, _tail(own)
        passwd.write_text(own.stdout)
        result = _docker(
            engine_env,
            *("run", "--rm", "--user", "4321:4322"),
            *("--mount", f"type=bind,source={passwd},target=/etc/passwd,readonly"),
            *(image, "python", "-c", probe),
        )
        assert result.returncode == 0, f"{name}: {_tail(result)}"
        assert result.stdout.split() == ["zoobox-4321", "4321", "4322"], name
        assert "no passwd entry" not in result.stderr, name


def test_npu_smoke_runs_its_checks_inside_the_images(engine_env, built, tmp_path):
    result = _run(
        [*INVOKE, "npu.smoke", "--runner", "docker", "--artifacts", str(tmp_path / "smoke")],
        engine_env,
        RUN_TIMEOUT,
    )
    assert result.returncode == 0, _tail(result, 60)
    checks = json.loads((tmp_path / "smoke" / "smoke.json").read_text())["checks"]
    inside = {(c["where"], c["check"]): c for c in checks}
    for env in ("aie", "atc"):
        identity = inside[(built[env], "uid, passwd entry, groups")]
        assert identity["status"] == "ok", identity  # the caller's uid, with an entry
        assert f"uid {os.getuid()} " in identity["detail"]
        assert inside[(built[env], "CANN version")]["status"] == "needs host"  # CPU images
    assert "checks that need a real Ascend host" in result.stdout


# -- RetinaFace, host runner vs docker runner --------------------------------------------------
@pytest.fixture(scope="module")
def retinaface_runs(engine_env, built, published_retinaface, tmp_path_factory):
    """The same photos, the same weights: `retinaface.all` with the host and docker runners.

    The published weights on the 16 real WIDER FACE photos the demo ships: faces with
    scores far apart. (Random weights put all ~23k priors above the threshold with
    near-equal and equal scores, and which of those NMS keeps then follows the last bit of
    torch's arithmetic and numpy's order of ties, which differ between the images' torch
    1.10 / 2.0.1 and numpy and the host's.)"""
    from tests.conftest import REPO as repo

    root = tmp_path_factory.mktemp("retinaface")
    data = repo / "samples" / "widerface"
    weights = published_retinaface / "mobilenet0.25_Final.pth"
    env = dict(engine_env, INVOKE_ZOOBOX_CACHE=str(root / "cache"))
    runs = {}
    for runner in ("host", "docker"):
        artifacts = root / runner
        argv = [
            *INVOKE,
            "retinaface.all",
            "--runner",
            runner,
            "--backend",
            "torchscript",
            "--data",
            str(data),
            "--artifacts",
            str(artifacts),
            "--weights",
            str(weights),
        ]
        result = _run(argv, env, RUN_TIMEOUT)
        assert result.returncode == 0, f"{runner} run failed:\n{_tail(result, 60)}"
        runs[runner] = {"dir": artifacts / "retinaface", "result": result, "argv": argv}
    print(
        f"\nretinaface.all (s): host {runs['host']['result'].seconds:.1f}, "
        f"docker {runs['docker']['result'].seconds:.1f}"
    )
    return {"root": root, "env": env, **runs}


def _predictions(folder):
    """Each image's faces, rows sorted by box (x, y, w, h, then score): the order the
    files list them in follows the scores, and scores that are equal or a few 1e-7 apart
    may come in another order from the images' torch and numpy than from the host's, so
    the comparison is of the sets."""
    found = {}
    for path in sorted(folder.rglob("*.txt")):
        lines = path.read_text().split("\n")
        count = int(lines[1])
        rows = [[float(v) for v in line.split()] for line in lines[2 : 2 + count]]
        rows = np.array(rows, dtype=np.float64).reshape(-1, 5)
        order = np.lexsort((rows[:, 4], rows[:, 3], rows[:, 2], rows[:, 1], rows[:, 0]))
        found[str(path.relative_to(folder))] = rows[order]
    return found


def test_docker_run_uses_the_images_and_their_versions(retinaface_runs, built, engine_env):
    out = retinaface_runs["docker"]["result"].stdout
    for stage, image in (("export", built["export"]), ("infer", built["aie"])):
        record = json.loads((retinaface_runs["docker"]["dir"] / stage / "stage.json").read_text())
        assert record["env"]["image"] == image
        assert record["env"]["image_id"] == _inspect(engine_env, image)["Id"]
        assert image in " ".join(record["command"]) and "docker" in record["command"][0]
    assert f"{built['export']} python -m models.retinaface.export" in out  # commands echoed
    # The real version split: traced on torch 1.10.1 / Python 3.9, run on torch 2.0.1.
    seen = {}
    for stage in ("data", "export", "infer"):
        info = json.loads((retinaface_runs["docker"]["dir"] / stage / "env.json").read_text())
        seen[stage] = (info["python"][:3], (info.get("torch") or "").split("+")[0])
    assert seen["export"] == ("3.9", "1.10.1") and seen["data"][0] == "3.9"
    assert seen["infer"] == ("3.9", "2.0.1")
    # Provenance: each stage's env.json names the lock its image was built from.
    for stage, image in (("export", built["export"]), ("infer", built["aie"])):
        info = json.loads((retinaface_runs["docker"]["dir"] / stage / "env.json").read_text())
        assert info["lock"] == _inspect(engine_env, image)["Config"]["Labels"]["org.zoobox.lock"]


def test_docker_artifacts_belong_to_the_caller(retinaface_runs):
    mine = (os.getuid(), os.getgid())
    for path in retinaface_runs["docker"]["dir"].rglob("*"):
        stat = path.lstat()
        assert (stat.st_uid, stat.st_gid) == mine, f"{path} is owned by {stat.st_uid}"


def _iou(box, boxes):
    """IoU of one x, y, w, h box with each of `boxes`."""
    x1 = np.maximum(box[0], boxes[:, 0])
    y1 = np.maximum(box[1], boxes[:, 1])
    x2 = np.minimum(box[0] + box[2], boxes[:, 0] + boxes[:, 2])
    y2 = np.minimum(box[1] + box[3], boxes[:, 1] + boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    return inter / (box[2] * box[3] + boxes[:, 2] * boxes[:, 3] - inter)


def test_docker_results_equal_the_host_runners(retinaface_runs):
    """The images' torch 1.10 (trace) and 2.0.1 (inference) find the host's faces.

    Every face scored >= 0.5 on one side is on the other (IoU >= 0.9, score within 1e-3),
    and the APs agree within 0.05. Below that, among near-duplicate candidates of one
    face, which one NMS keeps can follow the last bits of each torch build's arithmetic."""
    host, docker = retinaface_runs["host"]["dir"], retinaface_runs["docker"]["dir"]
    first = _predictions(host / "infer" / "predictions")
    second = _predictions(docker / "infer" / "predictions")
    assert first and first.keys() == second.keys()
    confident = 0
    for name in first:
        for a, b in ((first[name], second[name]), (second[name], first[name])):
            for face in a[a[:, 4] >= 0.5]:
                confident += 1
                assert len(b), f"{name}: a face {face} on one side, none on the other"
                iou = _iou(face, b)
                best = int(np.argmax(iou))
                assert iou[best] >= 0.9, f"{name}: {face} has no match ({b[best]})"
                assert abs(b[best, 4] - face[4]) <= 1e-3, (name, face, b[best])
    assert confident > 0
    host_metrics = json.loads((host / "evaluate" / "metrics.json").read_text())["metrics"]
    docker_metrics = json.loads((docker / "evaluate" / "metrics.json").read_text())["metrics"]
    assert host_metrics.keys() == docker_metrics.keys()
    for key in host_metrics:
        assert docker_metrics[key] == pytest.approx(host_metrics[key], abs=0.05), key


def test_a_second_docker_run_skips_every_stage(retinaface_runs):
    again = _run(retinaface_runs["docker"]["argv"], retinaface_runs["env"], RUN_TIMEOUT)
    assert again.returncode == 0, _tail(again)
    plans = [line for line in again.stdout.splitlines() if line.startswith("[")]
    assert plans and all("skip: up to date" in line for line in plans), "\n".join(plans)


PROBE_TS = textwrap.dedent(
    """
    import sys
    import numpy as np
    import torch
    model = torch.jit.load(sys.argv[1], map_location="cpu")
    x = torch.from_numpy(np.load(sys.argv[2]))
    with torch.no_grad():
        outputs = model(x)
    np.savez(sys.argv[3], *[o.numpy() for o in outputs], torch=torch.__version__)
    """
)


def test_torchscript_traced_in_the_export_image_loads_in_the_host_torch(
    retinaface_runs, built, engine_env
):
    import torch

    artifacts = retinaface_runs["docker"]["dir"].parent
    model = retinaface_runs["docker"]["dir"] / "export" / "model.ts"
    shape = json.loads((model.parent / "export.json").read_text())["input_shape"]
    x = np.random.RandomState(0).uniform(-117, 138, size=shape).astype(np.float32)
    probe = artifacts / "probe"
    probe.mkdir()
    np.save(probe / "x.npy", x)
    (probe / "run.py").write_text(PROBE_TS)
    inside = "/artifacts/" + str(model.relative_to(artifacts))
    result = _docker(
        engine_env,
        "run",
        "--rm",
        "--user",
        f"{os.getuid()}:{os.getgid()}",
        "-e",
        "HOME=/tmp",
        "-v",
        f"{artifacts}:/artifacts",
        built["export"],
        "python",
        "/artifacts/probe/run.py",
        inside,
        "/artifacts/probe/x.npy",
        "/artifacts/probe/out.npz",
    )
    assert result.returncode == 0, _tail(result)
    saved = np.load(probe / "out.npz")
    assert str(saved["torch"]).startswith("1.10.1")
    loaded = torch.jit.load(str(model), map_location="cpu")
    with torch.no_grad():
        found = [o.numpy() for o in loaded(torch.from_numpy(x))]
    expected = [saved[f"arr_{i}"] for i in range(len(found))]
    assert len(found) == len(expected) == 3
    for a, b in zip(found, expected):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    assert torch.__version__.split("+")[0] != "1.10.1"  # a different torch read it


EXPORT_ONNX = textwrap.dedent(
    """
    import sys
    import numpy as np
    import torch
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
        torch.nn.MaxPool2d(2), torch.nn.Conv2d(8, 4, 1), torch.nn.Sigmoid(),
    ).eval()
    x = torch.from_numpy(np.random.RandomState(1).rand(2, 3, 32, 32).astype(np.float32))
    torch.onnx.export(model, x, sys.argv[1], opset_version=11, input_names=["image"],
                      output_names=["out"], dynamic_axes={"image": {0: "batch"},
                                                          "out": {0: "batch"}})
    with torch.no_grad():
        np.savez(sys.argv[2], x=x.numpy(), y=model(x).numpy(), torch=torch.__version__)
    """
)


def test_onnx_exported_by_torch_1_5_in_the_atc_image_runs_in_onnxruntime(
    built, engine_env, tmp_path
):
    ort = pytest.importorskip("onnxruntime")
    tmp_path.chmod(0o777)
    (tmp_path / "export.py").write_text(EXPORT_ONNX)
    result = _docker(
        engine_env,
        "run",
        "--rm",
        "--user",
        f"{os.getuid()}:{os.getgid()}",
        "-e",
        "HOME=/tmp",
        "-v",
        f"{tmp_path}:/artifacts",
        built["atc"],
        "python",
        "/artifacts/export.py",
        "/artifacts/m.onnx",
        "/artifacts/ref.npz",
    )
    assert result.returncode == 0, _tail(result)
    ref = np.load(tmp_path / "ref.npz")
    assert str(ref["torch"]) == "1.5.0"
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    (y,) = session.run(None, {"image": ref["x"]})
    np.testing.assert_allclose(y, ref["y"], rtol=1e-5, atol=1e-6)
    (one,) = session.run(None, {"image": ref["x"][:1]})  # the batch axis is dynamic
    np.testing.assert_allclose(one, ref["y"][:1], rtol=1e-5, atol=1e-6)


def _freeze(engine_env, image):
    # --all: pip, setuptools and wheel too (a lock may pin wheel; drift ignores them otherwise)
    result = _docker(
        engine_env, "run", "--rm", "--network", "none", image, "pip", "freeze", "--all"
    )
    assert result.returncode == 0, _tail(result)
    return result.stdout.splitlines()


def test_a_rebuild_from_the_same_lock_installs_the_same_set(engine_env, built, monkeypatch):
    """`pip freeze` of two builds of one lock, the second without the layer cache: equal,
    and equal to the lock, every transitive package included."""
    monkeypatch.setenv("DOCKER_HOST", engine_env["DOCKER_HOST"])
    spec = get_env(REBUILT)
    plan = image_build.plan_build(spec, no_cache=True)
    tag = f"zoobox-test/{spec.name}-rebuild:{spec.hash[:12]}"
    argv = [tag if arg == spec.image else arg for arg in plan.argv]
    assert "--no-cache" in argv and tag in argv
    try:
        result = _run(argv, engine_env, BUILD_TIMEOUT)
        assert result.returncode == 0, _tail(result)
        print(f"\nrebuild of {spec.name} without the cache: {result.seconds:.0f} s")
        first, second = _freeze(engine_env, built[REBUILT]), _freeze(engine_env, tag)
    finally:
        _docker(engine_env, "rmi", "--force", tag)
    assert first == second
    frozen = dict(line.split("==", 1) for line in first)
    assert locks.drift(plan.lock.pins, frozen) == []
    assert len(plan.lock.pins) > len(spec.packages)  # the transitive packages are locked too
