"""The venv runner: interpreters, the venv cache, clear errors, and the real version split.

Cheap tests build venvs from tiny fake specs (no packages, or one `six` pin that uv locks
into a temporary folder: PyPI must answer) in a temporary folder. The `slow` tests build
the real `export` (torch 1.10.1, Python 3.9) and `atc` (torch 1.5.0, Python 3.7) venvs
from their locks in the stable cache ~/.cache/zoobox/venvs (or
$XDG_CACHE_HOME/zoobox/venvs), the folder `invoke envs.build` uses, so reruns and CI
machines that keep that folder reuse them: about 1.5 minutes per venv the first time
(two gigabytes of wheels), a second afterwards. Deselect them with `-m "not slow"`.
"""

import json
import os
import re
import signal
import stat
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO
from zoobox.core.envspec import _from_dict, get_env
from zoobox.core.errors import UserError
from zoobox.core.paths import default_cache
from zoobox.core.recipe import load_recipe, load_recipe_file
from zoobox.envs import lockgen, locks, requirements, venvtable
from zoobox.envs import venvs as venvs_module
from zoobox.envs.venvs import (
    MARKER,
    VenvCache,
    clear_interpreter_cache,
    find_interpreter,
    venv_hash,
)
from zoobox.pipeline.choice import Choice
from zoobox.pipeline.pipeline import Options, Pipeline
from zoobox.runners.base import StageCall
from zoobox.runners.host import HostRunner
from zoobox.runners.venv import VenvRunner

TOY = REPO / "tests" / "toy" / "recipe.yaml"


def need_python(version):
    found, tried = find_interpreter(version)
    if found is None:
        pytest.skip(f"no CPython {version} on this machine ({'; '.join(tried)})")
    return found


def spec(name="tiny", python="3.9", packages=(), **extra):
    return _from_dict(dict(name=name, python=python, packages=list(packages), **extra))


def quiet_cache(root, **kwargs):
    lines = []
    cache = VenvCache(root, say=lines.append, **kwargs)
    cache.lines = lines
    return cache


@pytest.fixture
def pip_calls(monkeypatch):
    """Counts pip runs (the only slow, network-bound part of a build)."""
    calls = []
    real = venvs_module._pip_install

    def counting(python, env_spec, lock_file, lock_fd):
        calls.append(env_spec.name)
        return real(python, env_spec, lock_file, lock_fd)

    monkeypatch.setattr(venvs_module, "_pip_install", counting)
    return calls


@pytest.fixture
def lock_dir(tmp_path, monkeypatch):
    """docker/requirements/ moved to a temporary folder, for the tiny specs' locks."""
    folder = tmp_path / "requirements"
    folder.mkdir()
    monkeypatch.setattr(requirements, "REQUIREMENTS", folder)
    return folder


def lock(env_spec):
    """Lock a tiny spec for this machine with uv, as `invoke envs.lock` would."""
    try:
        uv = lockgen.find_uv()
    except UserError as error:
        pytest.skip(str(error))
    target = locks.LockTarget(env_spec, False, locks.machine_arch())
    said = lockgen.compile_target(target, uv=uv)
    assert target.lock_path.is_file(), said
    return target.lock_path


def toy_call(tmp_path, env, args=("--add", "5")):
    out = tmp_path / "out" / env.name
    out.parent.mkdir(parents=True, exist_ok=True)
    return StageCall(
        recipe="toy", stage="b", module="tests.toy.stage", args=list(args), out=out, env=env
    )


# -- interpreters ------------------------------------------------------------------------
def test_interpreter_search_order_and_verification(tmp_path, monkeypatch):
    real = need_python("3.9")
    real37 = find_interpreter("3.7")[0]
    clear_interpreter_cache()
    versions = tmp_path / "pyenv" / "versions"
    good = versions / "3.9.99" / "bin" / "python3.9"
    good.parent.mkdir(parents=True)
    good.symlink_to(real.path)
    shim = versions / "3.9.100" / "bin" / "python3.9"  # newer, but broken like a shim
    shim.parent.mkdir(parents=True)
    shim.write_text("#!/bin/sh\necho 'pyenv: python3.9: command not found' >&2\nexit 127\n")
    shim.chmod(shim.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PYENV_ROOT", str(tmp_path / "pyenv"))
    found, tried = find_interpreter("3.9")
    assert found.source == "pyenv" and found.path == str(good), (found, tried)
    assert found.version.startswith("3.9.")
    assert any(str(shim) in why and "does not run" in why for why in tried)
    # A configured interpreter is authoritative: used when right, an error when wrong.
    configured, _ = find_interpreter("3.9", {"3.9": real.path})
    assert configured.source == "zoobox.venv.pythons['3.9']"
    missing, tried = find_interpreter("3.9", {"3.9": str(tmp_path / "nope")})
    assert missing is None and tried == (f"{tmp_path / 'nope'} does not exist",)
    if real37 is not None:
        wrong, tried = find_interpreter("3.9", {"3.9": real37.path})
        assert wrong is None and "is Python 3.7" in tried[0]


def test_host_env_runs_with_the_current_interpreter(tmp_path):
    runner = VenvRunner(VenvCache(tmp_path / "venvs"))
    call = toy_call(tmp_path, get_env("host"))
    assert runner.argv(call) == HostRunner().argv(call)
    assert runner.argv(call)[0] == sys.executable
    assert runner.env_identity(get_env("host"))["runner"] == "host"
    runner.check(get_env("host"))  # nothing to build
    with pytest.raises(UserError, match="host interpreter"):
        VenvCache(tmp_path / "venvs").build(get_env("host"))


# -- the cache ---------------------------------------------------------------------------
@pytest.mark.slow
def test_second_build_reuses_and_a_changed_pin_gets_a_new_venv(tmp_path, pip_calls, lock_dir):
    need_python("3.9")
    cache = quiet_cache(tmp_path / "venvs")
    six = spec(packages=["six==1.16.0"])
    lock_file = lock(six)
    first = cache.build(six)
    assert first.built and pip_calls == ["tiny"]
    assert first.path == tmp_path / "venvs" / f"tiny-{venv_hash(six)[:12]}"
    marker = first.path / MARKER
    assert first.marker["packages"]["six"] == "1.16.0"
    assert first.marker["python"].startswith("3.9.")
    # The venv keeps the lock it was installed from; the marker names it by its hash.
    kept = first.path / lock_file.name
    assert kept.read_bytes() == lock_file.read_bytes()
    assert first.marker["lock"] == f"{lock_file.name}@{locks.file_sha256(lock_file)[:12]}"
    assert cache.lock_file(six) == kept
    # Scripts point at the final folder, not the temporary one the build ran in.
    assert (first.path / "bin" / "pip").read_text().startswith(f"#!{first.path}/bin/")
    stamp = marker.stat().st_mtime_ns
    again = cache.build(six)
    assert not again.built and again.path == first.path
    assert pip_calls == ["tiny"] and marker.stat().st_mtime_ns == stamp
    # A spec edited without relocking: a new venv key, and the build says to relock.
    changed = spec(packages=["six==1.15.0"])
    assert venv_hash(changed) != venv_hash(six)
    with pytest.raises(UserError, match=r"is stale: .*run `invoke envs.lock --env tiny"):
        cache.build(changed)
    assert pip_calls == ["tiny"] and not cache.path(changed).exists()
    lock(changed)
    other = cache.build(changed)
    assert other.built and other.path != first.path and pip_calls == ["tiny", "tiny"]
    assert other.marker["packages"]["six"] == "1.15.0" and first.path.is_dir()
    # A stage in it records the lock it ran on (env.json, from ZOOBOX_LOCK_FILE).
    runner = VenvRunner(cache, ascend_root=tmp_path / "Ascend", say=lambda _: None)
    call = toy_call(tmp_path, changed)
    assert runner.run(call).returncode == 0
    assert json.loads((call.out / "env.json").read_text())["lock"] == other.marker["lock"]
    assert runner.env_identity(changed)["lock"] == other.marker["lock"]
    # envs.list: installed = lock, until something is installed by hand (drift, named).
    assert venvtable.lock_state(cache, changed) == f"{other.marker['lock']}, installed = lock"
    site = next(other.path.glob("lib/python3.9/site-packages"))
    (site / "by_hand-1.0.dist-info").mkdir()
    assert venvtable.lock_state(cache, changed) == (
        f"DRIFT from {other.marker['lock']}: by-hand - -> 1.0"
    )
    (site / "by_hand-1.0.dist-info").rmdir()
    # The spec now says 1.15.0: prune removes the 1.16.0 venv, keeps the current one.
    removed = cache.prune({"tiny": changed})
    assert removed == [first.path]
    assert not first.path.exists() and other.path.is_dir()
    assert sorted(p.name for p in cache.root.iterdir()) == sorted(
        [other.path.name, f".{other.path.name}.lock"]
    )


def test_a_changed_lock_alone_gets_a_new_venv(tmp_path, lock_dir):
    six = spec(packages=["six==1.16.0"])
    target = locks.LockTarget(six, False, locks.machine_arch())
    assert target.lock_path.parent == lock_dir
    before = venv_hash(six)
    target.lock_path.write_text("six==1.16.0 --hash=sha256:" + "0" * 64 + "\n")
    with_lock = venv_hash(six)
    target.lock_path.write_text("six==1.16.0 --hash=sha256:" + "1" * 64 + "\n")
    assert len({before, with_lock, venv_hash(six)}) == 3


_KILLED_BUILD = """
import sys, time
from zoobox.envs import venvs
from zoobox.core.envspec import _from_dict

def stall(python):
    open(sys.argv[2], "w").write("venv created")
    time.sleep(600)

venvs.scan_interpreter = stall
venvs.VenvCache(sys.argv[1]).build(_from_dict({"name": "tiny", "python": "3.9"}))
"""


def test_a_killed_build_is_never_used_and_is_cleaned_up(tmp_path):
    need_python("3.9")
    root, ready = tmp_path / "venvs", tmp_path / "ready"
    process = subprocess.Popen(
        [sys.executable, "-c", _KILLED_BUILD, str(root), str(ready)],
        cwd=REPO,
        start_new_session=True,
    )
    deadline = time.time() + 60
    while not ready.exists() and time.time() < deadline:
        assert process.poll() is None
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    tiny = spec()
    cache = quiet_cache(root)
    temps = list(root.glob(".tiny-*.tmp-*"))
    assert len(temps) == 1 and (temps[0] / "bin" / "python").exists()  # half built
    assert not cache.path(tiny).exists() and not cache.state(tiny).built
    with pytest.raises(UserError, match=r"not built: run `invoke envs.build --env tiny`"):
        VenvRunner(cache).check(tiny)
    # A folder at the final name without the marker (copied, half deleted) is not a venv.
    (cache.path(tiny) / "bin").mkdir(parents=True)
    assert not cache.state(tiny).built
    result = cache.build(tiny)
    assert result.built and cache.state(tiny).ok
    assert list(root.glob(".tiny-*.tmp-*")) == [] and list(root.glob(".tiny-*.old-*")) == []
    assert any("left by a build that died" in line for line in cache.lines)


def test_a_broken_venv_is_reported_then_rebuilt(tmp_path):
    need_python("3.9")
    cache = quiet_cache(tmp_path / "venvs")
    tiny = spec()
    cache.build(tiny)
    python = cache.python(tiny)
    python.unlink()
    python.symlink_to(tmp_path / "gone" / "python3.9")  # the base interpreter went away
    state = cache.state(tiny)
    assert state.built and not state.ok and "does not exist" in state.broken
    with pytest.raises(UserError, match=r"env tiny .* is broken .*invoke envs.build --env tiny"):
        VenvRunner(cache).check(tiny)
    assert cache.build(tiny).built and cache.state(tiny).ok


# -- errors: one line, nothing in the artifact folder touched ----------------------------
def test_missing_interpreter_is_one_user_error(tmp_path):
    cache = quiet_cache(tmp_path / "venvs")
    with pytest.raises(UserError) as error:
        cache.build(spec(python="3.99"))
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith("env tiny needs CPython 3.99, not found here")
    assert "pyenv install 3.99" in message and "zoobox.venv.pythons" in message
    assert "invoke envs.build --env tiny" in message
    assert not any(p.is_dir() for p in cache.root.iterdir())


@pytest.mark.slow
def test_a_lock_whose_hash_does_not_match_is_one_user_error(tmp_path, capfd, lock_dir):
    need_python("3.9")
    cache = quiet_cache(tmp_path / "venvs")
    six = spec(packages=["six==1.16.0"])
    lock_file = lock(six)
    # Every hash of six's files replaced: pip must refuse what it downloads.
    text = lock_file.read_text()
    lock_file.write_text(re.sub(r"sha256:[0-9a-f]{64}", "sha256:" + "0" * 64, text))
    with pytest.raises(UserError) as error:
        cache.build(six)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(
        f"env tiny: pip could not install its lock {lock_file.name} into a Python 3.9 venv"
    )
    assert "HASHES" in message or "hash" in message
    assert "invoke envs.lock --env tiny" in message
    assert not any(p.is_dir() for p in cache.root.iterdir())  # no venv, no temporary folder


def test_a_spec_without_a_lock_is_one_user_error_before_anything_is_made(tmp_path, lock_dir):
    cache = quiet_cache(tmp_path / "venvs")
    with pytest.raises(UserError, match=r"tiny\.\w+\.lock is missing: run `invoke envs.lock"):
        cache.build(spec(packages=["six==1.16.0"]))
    assert not cache.root.exists() or not any(p.is_dir() for p in cache.root.iterdir())


def _toy_engine(tmp_path, runner):
    options = Options(artifacts=tmp_path / "art", cache=tmp_path / "cache", data=tmp_path)
    return Pipeline(
        load_recipe_file(TOY), Choice("venv", "torchscript", [0], "test"), runner, options
    )


def test_pipeline_stops_before_a_stage_whose_venv_cannot_run(tmp_path):
    nowhere = tmp_path / "nowhere" / "python3.9"
    runner = VenvRunner(quiet_cache(tmp_path / "venvs", pythons={"3.9": str(nowhere)}))
    with pytest.raises(UserError, match=rf"env export needs CPython 3.9.*{nowhere} does not"):
        _toy_engine(tmp_path, runner).run()
    toy = tmp_path / "art" / "toy"
    assert (toy / "a" / "stage.json").is_file()  # host env stage: ran
    assert not (toy / "b").exists() and list(toy.glob(".*.tmp-*")) == []
    need_python("3.9")
    runner = VenvRunner(quiet_cache(tmp_path / "venvs"))
    with pytest.raises(
        UserError,
        match=r"venv of env export .* is not built: run `invoke "
        r"envs.build --env export`",
    ):
        _toy_engine(tmp_path, runner).run()
    assert not (toy / "b").exists() and list(toy.glob(".*.tmp-*")) == []


# -- running stages ----------------------------------------------------------------------
def test_a_stage_runs_with_the_venv_python_and_records_it(tmp_path):
    need_python("3.9")
    cache = quiet_cache(tmp_path / "venvs")
    tiny = spec()
    cache.build(tiny)
    lines = []
    runner = VenvRunner(cache, ascend_root=tmp_path / "Ascend", say=lines.append)
    call = toy_call(tmp_path, tiny)
    argv = runner.argv(call)
    assert argv[:3] == [str(cache.python(tiny)), "-m", "tests.toy.stage"]
    assert argv[-2:] == ["--out", str(call.out)]
    runner.check(tiny)
    assert lines == []  # not an NPU env: nothing to say
    assert runner.run(call).returncode == 0
    assert (call.out / "value.txt").read_text() == "5"
    seen = json.loads((call.out / "env.json").read_text())
    assert seen["executable"] == str(cache.python(tiny)) and seen["python"].startswith("3.9.")
    assert seen["zoobox_env"] == "tiny"
    identity = runner.env_identity(tiny)
    assert identity["runner"] == "venv" and identity["spec_hash"] == venv_hash(tiny)
    assert identity["executable"] == str(cache.python(tiny))
    assert identity["interpreter"] == cache.interpreter(tiny).path
    assert identity["python"] == seen["python"]


def test_npu_env_sources_the_hosts_set_env_scripts_or_says_what_is_missing(tmp_path, monkeypatch):
    need_python("3.9")
    cache = quiet_cache(tmp_path / "venvs")
    npu = spec(name="tinynpu", npu=True, npu_stack={"cann": "7.0.RC1", "torch_aie": "6.3.rc2"})
    cache.build(npu)
    ascend = tmp_path / "Ascend"
    toolkit = ascend / "ascend-toolkit" / "set_env.sh"
    toolkit.parent.mkdir(parents=True)
    toolkit.write_text('echo "cann for $ZOOBOX_ENV" > "$SOURCED_LOG"\n')
    monkeypatch.setenv("SOURCED_LOG", str(tmp_path / "sourced.txt"))
    lines = []
    runner = VenvRunner(cache, ascend_root=ascend, say=lines.append)
    call = toy_call(tmp_path, npu)
    argv = runner.argv(call)
    assert argv[:2] == ["bash", "-c"]
    assert argv[2].startswith(f"source {toolkit} && exec {cache.python(npu)} -m tests.toy.stage")
    runner.check(npu)
    runner.check(npu)
    assert lines == [
        f"venv tinynpu: no Torch_AIE ({ascend}/aie/set_env.sh) on this host: NPU "
        "backends are unavailable, the CPU parts run"
    ]  # one line, once
    assert runner.run(call).returncode == 0
    assert (tmp_path / "sourced.txt").read_text() == "cann for tinynpu\n"
    assert (call.out / "value.txt").read_text() == "5"
    assert runner.env_identity(npu)["sourced"] == [str(toolkit)]
    # No NPU software at all: the plain venv python, and one line naming both parts.
    lines.clear()
    bare = VenvRunner(cache, ascend_root=tmp_path / "none", say=lines.append)
    assert bare.argv(call)[0] == str(cache.python(npu))
    bare.check(npu)
    assert len(lines) == 1 and "no CANN (" in lines[0] and "Torch_AIE (" in lines[0]


# -- settings and tasks ------------------------------------------------------------------
def test_runner_venv_from_settings_and_a_dry_plan(tmp_path, capsys):
    from zoobox.pipeline.configure import build_pipeline, settings_from

    settings = settings_from(
        {
            "zoobox": {
                "venv": {
                    "cache": str(tmp_path / "venvs"),
                    "pythons": {"3.9": "/opt/py39/bin/python"},
                }
            }
        }
    )
    engine = build_pipeline(
        settings,
        "retinaface",
        runner="venv",
        dry=True,
        artifacts=tmp_path / "art",
        data=tmp_path / "wider",
    )
    assert engine.runner.name == "venv" and engine.choice.runner == "venv"
    assert engine.runner.venvs.root == tmp_path / "venvs"
    assert engine.runner.venvs.pythons == {"3.9": "/opt/py39/bin/python"}
    engine.run()
    out = capsys.readouterr().out
    export_python = engine.runner.venvs.python(get_env("export"))
    assert f"$ {export_python} -m models.retinaface.export" in out
    assert f"$ {sys.executable} -m zoostage.fetch" in out  # host env stage


def test_invoke_envs_list_and_build_errors(tmp_path):
    env = dict(os.environ, INVOKE_ZOOBOX_VENV_CACHE=str(tmp_path / "venvs"))
    listed = subprocess.run(
        ["invoke", "envs.list"], cwd=REPO, capture_output=True, text=True, env=env, timeout=120
    )
    assert listed.returncode == 0, listed.stderr
    rows = {line.split()[0]: line for line in listed.stdout.splitlines()[2:]}
    assert {"export", "atc", "host"} <= set(rows)
    assert "not built (export-" in rows["export"] and "not needed (host)" in rows["host"]
    host = subprocess.run(
        ["invoke", "envs.build", "--env", "host"],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert host.returncode == 2 and "Traceback" not in host.stderr
    assert host.stderr.strip() == (
        "error: env host is the host interpreter: it has no venv to build"
    )


# -- the real version split (slow the first time: downloads torch) -----------------------
def stable_cache():
    """The cache `invoke envs.build` fills by default: reruns reuse its venvs."""
    return VenvCache(default_cache() / "venvs")


def _venv_engine(tmp_path, recipe, backend, cache, **params):
    options = Options(
        artifacts=tmp_path / "art",
        cache=tmp_path / "weights",
        data=None,
        params=dict(allow_random=True, **params),
    )
    return Pipeline(
        load_recipe(recipe), Choice("venv", backend, [0], "test"), VenvRunner(cache), options
    )


@pytest.mark.slow
def test_export_venv_traces_retinaface_that_the_host_torch_runs_identically(tmp_path):
    torch = pytest.importorskip("torch")
    need_python("3.9")
    from models.retinaface.net import build_model

    cache = stable_cache()
    export_env = get_env("export")
    cache.build(export_env)
    result = _venv_engine(tmp_path, "retinaface", "torchscript", cache, input_size=96).run("export")
    assert [(p.name, p.action) for p in result.plans] == [("weights", "run"), ("export", "run")]
    folder = result.stage_dir("export")
    record = json.loads((folder / "stage.json").read_text())
    assert record["env"]["runner"] == "venv"
    assert record["env"]["executable"] == str(cache.python(export_env))
    assert record["env"]["spec_hash"] == venv_hash(export_env)
    assert record["env"]["versions"]["torch"] == "1.10.1"
    assert record["versions"]["python"].startswith("3.9.")
    assert record["versions"]["torch"].startswith("1.10.1")
    assert json.loads((folder / "export.json").read_text())["torch"].startswith("1.10.1")
    traced = torch.jit.load(str(folder / "model.ts"), map_location="cpu")
    eager = build_model(None, seed=0).eval()
    eager.load_state_dict(traced.state_dict())
    batch = torch.rand(1, 3, 96, 96, generator=torch.Generator().manual_seed(1)) * 255 - 117
    with torch.no_grad():
        expected, found = eager(batch), traced(batch)
    assert len(found) == len(expected) == 3
    for want, got in zip(expected, found):
        assert want.shape == got.shape
        assert torch.allclose(want, got, atol=1e-4, rtol=1e-5), float((want - got).abs().max())
    again = _venv_engine(tmp_path, "retinaface", "torchscript", cache, input_size=96).run("export")
    assert [p.action for p in again.plans] == ["skip", "skip"]  # the venv identity is stable


_EAGER_IN_ATC = """
import sys
import numpy as np
import torch
from models.refinedet.net import build_model
model = build_model(None, seed=int(sys.argv[1])).eval()
batch = np.load(sys.argv[2])
with torch.no_grad():
    outputs = [o.numpy() for o in model(torch.from_numpy(batch))]
np.savez(sys.argv[3], *outputs)
print(torch.__version__)
"""


@pytest.mark.slow
def test_atc_venv_exports_refinedet_onnx_on_torch_1_5_that_onnxruntime_runs(tmp_path):
    np = pytest.importorskip("numpy")
    onnxruntime = pytest.importorskip("onnxruntime")
    need_python("3.7")
    cache = stable_cache()
    atc = get_env("atc")
    cache.build(atc)
    result = _venv_engine(tmp_path, "refinedet", "onnxruntime", cache).run("export")
    folder = result.stage_dir("export")
    record = json.loads((folder / "stage.json").read_text())
    assert record["env"]["runner"] == "venv" and record["env"]["spec_hash"] == venv_hash(atc)
    assert record["env"]["interpreter"] == cache.interpreter(atc).path
    assert record["versions"]["python"].startswith("3.7.")
    assert record["versions"]["torch"] == "1.5.0"
    exported = json.loads((folder / "export.json").read_text())
    assert exported["torch"] == "1.5.0" and exported["opset"] == 11
    assert exported["max_abs_diff"] < 1e-3  # onnxruntime 1.14 in the venv agreed
    # The host's onnxruntime runs the torch 1.5 export, batch 3 (the batch axis is dynamic),
    # and agrees with torch 1.5's eager outputs.
    batch = (np.random.RandomState(3).uniform(0, 255, (3, 3, 320, 320)) - 117).astype("float32")
    np.save(tmp_path / "batch.npy", batch)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    eager = subprocess.run(
        [
            str(cache.python(atc)),
            "-c",
            _EAGER_IN_ATC,
            str(exported["seed"]),
            str(tmp_path / "batch.npy"),
            str(tmp_path / "eager.npz"),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert eager.returncode == 0, eager.stderr
    assert eager.stdout.strip() == "1.5.0"
    expected = np.load(tmp_path / "eager.npz")
    session = onnxruntime.InferenceSession(
        str(folder / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    found = session.run(None, {"image": batch})
    assert len(found) == 4
    for index, got in enumerate(found):
        want = expected[f"arr_{index}"]
        assert got.shape == want.shape and got.shape[0] == 3
        assert np.abs(got - want).max() < 1e-4


_IMPORT_ALL = """
import importlib, pkgutil
failed, count = [], 0
for package in ("models", "data_scripts", "zoostage", "zoostage.backends"):
    for info in pkgutil.walk_packages(importlib.import_module(package).__path__, package + "."):
        try:
            importlib.import_module(info.name)
            count += 1
        except Exception as error:
            failed.append("%s: %r" % (info.name, error))
print(count)
print("\\n".join(failed))
"""


@pytest.mark.slow
@pytest.mark.parametrize("env_name, python", [("atc", "3.7"), ("export", "3.9")])
def test_every_stage_side_module_imports_in_the_oldest_envs(env_name, python):
    """Stage-side code must import on Python 3.7 + torch 1.5 and 3.9 + torch 1.10."""
    need_python(python)
    cache = stable_cache()
    env = get_env(env_name)
    cache.build(env)
    result = subprocess.run(
        [str(cache.python(env)), "-c", _IMPORT_ALL],
        cwd=REPO,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    count, *failed = result.stdout.strip().split("\n")
    assert int(count) > 50 and [f for f in failed if f] == []


@pytest.mark.slow
def test_export_venv_traces_retinanet_that_the_host_torch_runs_identically(tmp_path):
    """RetinaNet's TorchScript from torch 1.10.1 (the seed's export torch) on the host torch:
    the seed profile's graph (seed_graph.ClassTopK, per-class top-200 and decoding)."""
    torch = pytest.importorskip("torch")
    need_python("3.9")
    from models.retinanet import net, seed_graph
    from models.retinanet.export import match_detections
    from models.retinanet.seed_postprocess import SeedPostprocessor

    cache = stable_cache()
    export_env = get_env("export")
    cache.build(export_env)
    size = 128
    result = _venv_engine(tmp_path, "retinanet", "torchscript", cache, input_size=size).run(
        "export"
    )
    folder = result.stage_dir("export")
    facts = json.loads((folder / "export.json").read_text())
    assert facts["torch"].startswith("1.10.1") and facts["output_kind"] == "class_topk"
    traced = torch.jit.load(str(folder / "model.ts"), map_location="cpu")
    eager = seed_graph.ClassTopK(net.build_model(seed=0), (size, size)).eval()
    eager.load_state_dict(traced.state_dict())
    batch = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(2)) * 255 - 117
    with torch.no_grad():
        expected, found = eager(batch), traced(batch)
    assert len(found) == len(expected) == 2
    for want, got in zip(expected, found):
        assert want.shape == got.shape
    # The top-k's values do not depend on how an engine orders equal logits ...
    assert torch.allclose(expected[1], found[1], atol=1e-6, rtol=1e-5)
    # ... the rows' boxes may swap there: compare what the host makes of them.
    post = SeedPostprocessor((size, size))
    want = post.detect_nms_inputs(expected[0][0].numpy(), expected[1][0].numpy())
    got = post.detect_nms_inputs(found[0][0].numpy(), found[1][0].numpy())
    matched, total = match_detections(want, got, 2.0**-11)
    assert matched >= total - 2, (matched, total)
