"""The env locks: current with their specs (offline), read back right, made by uv, drift.

The checks of the committed locks need no network. The tests that run uv on a tiny spec
need PyPI (as `invoke envs.lock` does) and skip, saying so, when uv is not installed.
"""

import os
import subprocess

import pytest

from tests.conftest import REPO
from zoobox.core.envspec import _from_dict, get_env, load_envs
from zoobox.core.errors import UserError
from zoobox.envs import lockgen, locks, requirements

ENVS = [spec for spec in load_envs().values() if locks.targets(spec)]
IDS = [spec.name for spec in ENVS]
SHA_A, SHA_B = "a" * 64, "b" * 64


def tiny(packages=("six==1.16.0",), npu_packages=None, python="3.9", name="tiny"):
    data = dict(name=name, python=python, packages=list(packages), npu=npu_packages is not None)
    if npu_packages is not None:
        data["npu_packages"] = list(npu_packages)
    return _from_dict(data)


@pytest.fixture
def lock_dir(tmp_path, monkeypatch):
    folder = tmp_path / "requirements"
    folder.mkdir()
    monkeypatch.setattr(requirements, "REQUIREMENTS", folder)
    return folder


def need_uv():
    try:
        return lockgen.find_uv()
    except UserError as error:
        pytest.skip(str(error))


# -- the committed locks ---------------------------------------------------------------------
@pytest.mark.parametrize("spec", ENVS, ids=IDS)
def test_every_lock_is_current_and_satisfies_its_spec(spec):
    assert locks.check_locks([spec]) == []
    for target in locks.targets(spec):
        if not target.lock_path.is_file():
            continue
        lock = locks.read_lock(target.lock_path)
        for name, version in target.pins().items():
            assert lock.pins[name] == version, f"{target.label}: {name}"
        assert lock.unhashed == [] and len(lock.pins) >= len(target.pins())


def test_the_envs_that_pypi_cannot_serve_have_a_nolock_saying_why():
    """What docker/README.md says: atc on aarch64 (torch 1.5.0), train's NPU set on x86_64."""
    found = sorted(p.name for p in requirements.REQUIREMENTS.glob("*.nolock"))
    assert found == ["atc-npu.aarch64.nolock", "atc.aarch64.nolock", "train-npu.x86_64.nolock"]
    atc = locks.nolock_reason(requirements.REQUIREMENTS / "atc.aarch64.nolock")
    assert "torch==1.5.0 has no wheels" in atc and "aarch64" in atc
    train = locks.nolock_reason(requirements.REQUIREMENTS / "train-npu.x86_64.nolock")
    assert "torch==2.1.0+cpu" in train


def test_invoke_envs_lock_check_passes_offline():
    env = dict(os.environ, UV_OFFLINE="1", PIP_NO_INDEX="1")
    result = subprocess.run(
        ["invoke", "envs.lock", "--check"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert "every lock in docker/requirements is current" in result.stdout


# -- a spec changed without relocking is caught ----------------------------------------------
def _changed(spec, **changes):
    data = dict(spec.raw)
    data.update(changes)
    return _from_dict(data)


def test_a_changed_pin_an_added_package_or_python_makes_the_lock_stale():
    export = get_env("export")
    assert locks.check_locks([export]) == []
    bumped = [p.replace("numpy==1.23.5", "numpy==1.24.4") for p in export.packages]
    for changed in (
        _changed(export, packages=bumped),
        _changed(export, packages=[*export.packages, "six==1.16.0"]),
        _changed(export, python="3.10"),
    ):
        problems = locks.check_locks([changed])
        assert len(problems) == len(locks.ARCHES), problems
        for arch, problem in zip(locks.ARCHES, problems):
            assert problem == (
                f"docker/requirements/export.{arch}.lock is stale: envs/export.yaml (packages) "
                f"changed since it was locked: run `invoke envs.lock --env export --arch {arch}`"
            )
    # The NPU set too: a changed npu_packages pin leaves the CPU locks current.
    aie = get_env("aie")
    npu = [p.replace("attrs==23.1.0", "attrs==23.2.0") for p in aie.raw["npu_packages"]]
    problems = locks.check_locks([_changed(aie, npu_packages=npu)])
    assert problems and all("aie-npu." in p and "is stale" in p for p in problems)


def test_a_lock_that_misses_a_pin_or_a_hash_is_named(lock_dir):
    spec = tiny(packages=["six==1.16.0", "pyyaml==6.0.1"])
    target = locks.LockTarget(spec, False, "x86_64")
    requirements.write_requirements([spec])
    header = locks.INPUT_KEY + target.input_hash() + "\n"
    target.lock_path.write_text(header + f"six==1.15.0 --hash=sha256:{SHA_A}\npyyaml==6.0.1\n")
    problems = locks.target_problems(target)
    hint = "run `invoke envs.lock --env tiny --arch x86_64`"
    assert problems == [
        f"{target.lock_path} has six==1.15.0, envs/tiny.yaml pins 1.16.0: {hint}",
        f"{target.lock_path}: pyyaml without --hash: {hint}",
    ]
    with pytest.raises(UserError, match=r"has six==1.15.0"):
        locks.lock_for(spec, "x86_64", npu=False)
    target.lock_path.unlink()
    assert locks.target_problems(target) == [
        f"{target.lock_path} is missing: run `invoke envs.lock --env tiny --arch x86_64`"
    ]


def test_an_npu_lock_must_install_all_the_cpu_lock_does(lock_dir):
    spec = tiny(npu_packages=["attrs==23.1.0"])
    base, npu = (locks.LockTarget(spec, kind, "aarch64") for kind in (False, True))
    base.lock_path.write_text(
        f"six==1.16.0 --hash=sha256:{SHA_A}\nzipp==3.1 --hash=sha256:{SHA_A}\n"
    )
    npu.lock_path.write_text(
        f"six==1.16.0 --hash=sha256:{SHA_A}\nattrs==23.1.0 --hash=sha256:{SHA_B}\n"
    )
    assert locks.npu_superset_problems(spec, "aarch64") == [
        f"{npu.lock_path} lacks zipp: run `invoke envs.lock --env tiny --arch aarch64`"
    ]
    assert locks.npu_superset_problems(spec, "x86_64") == []  # no locks there: nothing to say


def test_an_architecture_without_a_lock_is_a_user_error_with_the_reason(lock_dir):
    spec = tiny(python="3.7", packages=["torch==1.5.0"])
    target = locks.LockTarget(spec, False, "aarch64")
    target.nolock_path.write_text(
        f"# No lock\n{locks.INPUT_KEY}{target.input_hash()}\n"
        "# uv: cause: torch==1.5.0 has no wheels with a matching platform tag\n"
    )
    assert locks.target_problems(target) == []  # a current .nolock is a fact, not a fault
    with pytest.raises(UserError) as error:
        locks.lock_for(spec, "aarch64", npu=False)
    message = str(error.value)
    assert message.startswith("env tiny has no lock for aarch64: cause: torch==1.5.0 has no")
    assert "docker/local/wheels/" in message and "--find-links docker/local/wheels" in message


# -- reading a lock ----------------------------------------------------------------------------
def test_parse_lock_reads_continued_lines_markers_and_comments():
    text = (
        "# Lock of envs/x.yaml\n"
        f"{locks.INPUT_KEY}{SHA_B}\n"
        "Numpy==1.21.6 \\\n"
        f"    --hash=sha256:{SHA_A} \\\n"
        f"    --hash=sha256:{SHA_B}\n"
        "    # via -r x.txt\n"
        f"typing_extensions==4.7.1 ; python_version < '3.8' --hash=sha256:{SHA_A}\n"
        "opencv-python-headless[extra]==4.8.1.78 \\\n"
        "    # via -r x.txt\n"
        "# six==1.0 is a comment, not a pin\n"
    )
    pins, unhashed, input_hash = locks.parse_lock(text)
    assert pins == {
        "numpy": "1.21.6",
        "typing-extensions": "4.7.1",
        "opencv-python-headless": "4.8.1.78",
    }
    assert unhashed == ["opencv-python-headless"] and input_hash == SHA_B


def test_lock_id_names_the_file_and_its_hash(tmp_path):
    path = tmp_path / "export.x86_64.lock"
    path.write_bytes(b"six==1.16.0\n")
    # sha256 of the 12 bytes above, by hashlib: the id keeps its first 12 hex digits.
    import hashlib

    digest = hashlib.sha256(b"six==1.16.0\n").hexdigest()
    lock = locks.read_lock(path)
    assert lock.sha256 == digest and lock.id == f"export.x86_64.lock@{digest[:12]}"


# -- drift -----------------------------------------------------------------------------------
def test_drift_names_what_differs_and_ignores_local_labels_and_installer_tools():
    pins = {"torch": "1.10.1", "numpy": "1.23.5", "six": "1.16.0"}
    assert locks.drift(pins, {"torch": "1.10.1+cu102", "NumPy": "1.23.5", "six": "1.16.0"}) == []
    assert locks.drift(pins, {**pins, "pip": "23.0.1", "setuptools": "58", "wheel": "0.4"}) == []
    rows = locks.drift(pins, {"torch": "1.10.1", "numpy": "1.24.0", "requests": "2.31.0"})
    assert rows == [
        ("numpy", "1.23.5", "1.24.0"),
        ("requests", "-", "2.31.0"),
        ("six", "1.16.0", "-"),
    ]
    assert (
        locks.describe_drift(rows, limit=2)
        == "numpy 1.23.5 -> 1.24.0, requests - -> 2.31.0, 1 more"
    )
    # A lock that pins setuptools is held to it.
    assert locks.drift({"setuptools": "69.0.0"}, {"setuptools": "58.1.0"}) == [
        ("setuptools", "69.0.0", "58.1.0")
    ]


# -- making locks with uv ----------------------------------------------------------------------
def test_uv_command_resolves_for_the_arch_with_the_envs_own_python(lock_dir):
    spec = tiny(npu_packages=["attrs==23.1.0"])
    target = locks.LockTarget(spec, True, "aarch64")
    options = lockgen.Options(
        upgrade=("six",), find_links=str(lock_dir), extra_index_url="https://i"
    )
    command = lockgen.uv_command(target, ".out", options, uv=["uv"])
    assert command[:3] == ["uv", "pip", "compile"] and "--generate-hashes" in command
    assert command[command.index("--python-platform") + 1] == "aarch64-manylinux_2_17"
    assert "--python" in command or "--python-version" in command
    if "--python" in command:
        assert command[command.index("--python") + 1].endswith("python3.9")
    assert command[command.index("--upgrade-package") + 1] == "six"
    assert command[command.index("--find-links") + 1] == str(lock_dir)
    assert command[command.index("--extra-index-url") + 1] == "https://i"
    assert command[-4:] == ["-o", ".out", "tiny.txt", "tiny-npu.txt"]


def test_compile_locks_both_architectures_and_records_what_cannot_be(lock_dir):
    uv = need_uv()
    spec = tiny(packages=["six==1.16.0"])
    for arch in locks.ARCHES:
        said = lockgen.compile_target(locks.LockTarget(spec, False, arch), uv=uv)
        assert said == f"wrote {lock_dir}/tiny.{arch}.lock (1 packages)"
    assert locks.check_locks([spec]) == []
    lock = locks.read_lock(lock_dir / "tiny.x86_64.lock")
    assert lock.pins == {"six": "1.16.0"} and lock.unhashed == []
    # Again, unchanged: the same bytes (the lock hash, hence image tags, stays put).
    before = (lock_dir / "tiny.x86_64.lock").read_bytes()
    said = lockgen.compile_target(locks.LockTarget(spec, False, "x86_64"), uv=uv)
    assert said.startswith("unchanged") and (lock_dir / "tiny.x86_64.lock").read_bytes() == before
    # A pin PyPI cannot serve: a .nolock with uv's reason, and no lock left behind.
    bad = tiny(packages=["six==0.0.0"], name="bad")
    target = locks.LockTarget(bad, False, "x86_64")
    target.lock_path.write_text("six==1.16.0\n")
    said = lockgen.compile_target(target, uv=uv)
    assert said.endswith("cannot be locked (recorded why)")
    assert not target.lock_path.exists() and target.nolock_path.is_file()
    assert "six==0.0.0" in locks.nolock_reason(target.nolock_path)
    assert locks.target_problems(target) == []


def test_a_resolver_failure_that_is_not_the_specs_writes_nothing(lock_dir, tmp_path):
    fake = tmp_path / "uv"
    fake.write_text(
        "#!/bin/sh\necho 'error: Failed to fetch: https://pypi.org/simple/six/' >&2\nexit 2\n"
    )
    fake.chmod(0o755)
    target = locks.LockTarget(tiny(), False, "x86_64")
    with pytest.raises(UserError, match=r"uv could not lock tiny.x86_64 \(error: Failed to fetch"):
        lockgen.compile_target(target, uv=[str(fake)])
    assert sorted(p.name for p in lock_dir.iterdir()) == ["tiny.txt"]  # no lock, no temp file
