"""The built env images: list them, and check each against its spec (docker CLI).

`check` runs a probe inside each image and compares Python, pinned packages, torch, CANN
and torch_aie with envs/<env>.yaml, and every installed distribution with the lock the
image was built from (label org.zoobox.lock): drift is an error naming the packages.
"""

from __future__ import annotations

import json
import re
import subprocess

from zoobox.core.envspec import EnvSpec, get_env
from zoobox.core.errors import UserError
from zoobox.core.paths import REPO
from zoobox.core.text import quote, table
from zoobox.envs import locks
from zoobox.envs.image_build import DOCKER, image_info, labels_of, require_engine
from zoobox.envs.requirements import REQUIREMENTS, buildable_envs, npu_packages


def _size(value) -> str:
    if not isinstance(value, (int, float)) or value <= 0:
        return "-"
    return f"{value / 1e9:.2f} GB" if value >= 1e9 else f"{value / 1e6:.0f} MB"


LISTED_LABELS = (
    "org.zoobox.lock",
    "org.zoobox.python",
    "org.zoobox.torch",
    "org.zoobox.cann",
    "org.zoobox.torch_aie",
    "org.opencontainers.image.revision",
    "org.opencontainers.image.created",
)


NPU_LABELS = ("org.zoobox.cann", "org.zoobox.torch_aie")  # what the NPU layers install


def list_rows(docker: str = DOCKER) -> list[list[str]]:
    require_engine()
    rows = []
    for spec in buildable_envs():
        info = image_info(spec.image, docker)
        if info is None:
            rows.append([spec.name, spec.image, "no", "-", "-", "-", "-", "-"])
            continue
        labels = labels_of(info)
        npu = labels.get("org.zoobox.npu", "?")
        shown = [k for k in LISTED_LABELS if labels.get(k)]
        if npu != "present":  # the NPU layers did not run: their versions are not there
            shown = [k for k in shown if k not in NPU_LABELS]
        digests = info.get("RepoDigests") or []
        rows.append(
            [
                spec.name,
                spec.image,
                "yes",
                (info.get("Id") or "")[:19],
                digests[0].split("@")[-1][:19] if digests else "-",
                _size(info.get("Size")),
                npu,
                " ".join(f"{key.split('.')[-1]}={labels[key]}" for key in shown),
            ]
        )
    return rows


def list_images(docker: str = DOCKER) -> str:
    return table(
        list_rows(docker), ["env", "image", "built", "id", "digest", "size", "npu", "labels"]
    )


# Runs inside the image (Python 3.7 and up): the environment zoostage.envinfo sees, the
# installed version of every distribution asked for, every distribution in site-packages
# (from the .dist-info / .egg-info names, as the venv scan reads them), and whether torch
# really imports.
PROBE = r"""
import json, os, sys
from zoostage import envinfo
info = envinfo.environment()
installed = {}
for entry in sys.path:
    if not entry.endswith(("site-packages", "dist-packages")) or not os.path.isdir(entry):
        continue
    for name in os.listdir(entry):
        for suffix in (".dist-info", ".egg-info"):
            if name.endswith(suffix):
                dist, _, version = name[: -len(suffix)].partition("-")
                installed[dist] = version.split("-py")[0]
info["installed"] = installed
def version(name):
    try:
        from importlib import metadata
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None
    except ImportError:
        import pkg_resources
        try:
            return pkg_resources.get_distribution(name).version
        except Exception:
            return None
info["packages"] = {name: version(name) for name in sys.argv[1:]}
try:
    import torch
    info["torch_import"] = str(torch.__version__)
except Exception as error:
    info["torch_import"] = "error: %s" % (error,)
print("ZOOBOX-PROBE " + json.dumps(info))
"""


def probe_command(spec: EnvSpec, docker: str = DOCKER) -> list[str]:
    names = [r.partition("==")[0].strip() for r in spec.packages]
    if spec.npu:
        names += [r.partition("==")[0].strip() for r in npu_packages(spec)]
        names += {"aie": ["torch_aie"], "atc": ["aclruntime", "ais_bench"]}.get(spec.name, [])
    return [
        docker,
        "run",
        "--rm",
        "--network",
        "none",
        "-v",
        f"{REPO}:/workspace:ro",
        "-w",
        "/workspace",
        "-e",
        "PYTHONPATH=/workspace",
        "-e",
        "HOME=/tmp",
        spec.image,
        "python",
        "-c",
        PROBE,
        *names,
    ]


def _public(version: str | None) -> str | None:
    return version.split("+", 1)[0] if version else version


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def compare(spec: EnvSpec, labels: dict, info: dict) -> list[tuple[str, str, str, bool]]:
    """(what, expected, found, ok) for every fact the spec fixes about its image."""
    rows = []
    python = info.get("python") or ""
    rows.append(("python", spec.python, python, python.split(".")[:2] == spec.python.split(".")))
    packages = {_norm(k): v for k, v in (info.get("packages") or {}).items()}
    claims_npu = labels.get("org.zoobox.npu") == "present"
    pins = list(spec.packages) + (list(npu_packages(spec)) if claims_npu else [])
    for requirement in pins:
        name, _, pinned = requirement.partition("==")
        found = packages.get(_norm(name))
        rows.append((name.strip(), pinned.strip(), found or "missing", _public(found) == pinned))
    if spec.pin("torch"):
        imported = str(info.get("torch_import"))
        rows.append(
            ("import torch", spec.pin("torch"), imported, _public(imported) == spec.pin("torch"))
        )
    if spec.npu:
        rows.append(
            (
                "NPU stack",
                "present (or a CPU image)",
                labels.get("org.zoobox.npu", "unlabelled"),
                labels.get("org.zoobox.npu") in ("present", "absent"),
            )
        )
    if claims_npu:
        cann = spec.npu_stack.get("cann", "")
        found = info.get("cann") or "missing"
        # An install may report 7.0.RC1 for a 7.0.RC1.alpha003 package, or the reverse.
        same = found.lower().startswith(cann.lower()) or cann.lower().startswith(found.lower())
        rows.append(("CANN", cann, found, found != "missing" and same))
        if spec.name == "aie":
            want = spec.npu_stack.get("torch_aie", "")
            found = packages.get("torch-aie") or info.get("torch_aie") or "missing"
            rows.append(("torch_aie", want, found, found.lower().startswith(want.lower())))
        if spec.name == "atc":
            for name in ("aclruntime", "ais_bench"):
                found = packages.get(_norm(name)) or "missing"
                rows.append((name, "installed", found, found != "missing"))
    return rows


def lock_rows(labels: dict, info: dict) -> list[tuple[str, str, str, bool]]:
    """(what, expected, found, ok): the image's lock is the repository's, nothing drifted."""
    label = labels.get("org.zoobox.lock") or ""
    name, _, short = label.partition("@")
    path = REQUIREMENTS / name if name else None
    if not short or path is None or not path.is_file():
        found = label or "no org.zoobox.lock label (built before locks)"
        return [("lock", "a lock in docker/requirements/", found, False)]
    current = locks.read_lock(path)
    rows = [("lock", current.id, label, current.id == label)]
    drifted = locks.drift(current.pins, info.get("installed") or {})
    rows.append(
        (
            "installed = lock",
            f"{len(current.pins)} packages",
            locks.describe_drift(drifted) if drifted else f"{len(current.pins)} packages",
            not drifted,
        )
    )
    return rows


def check_images(env: str | None = None, docker: str = DOCKER) -> str:
    specs = [get_env(env)] if env else buildable_envs()
    require_engine()
    rows, errors, checked = [], [], 0
    for spec in specs:
        info = image_info(spec.image, docker)
        if info is None:
            if env:
                raise UserError(
                    f"image {spec.image} is not built: run `invoke images.build --env {spec.name}`"
                )
            rows.append([spec.name, "image", spec.image, "not built", "skip"])
            continue
        argv = probe_command(spec, docker)
        print(f"$ {quote(argv[: -len(argv) + argv.index('-c')])} -c <probe> ...", flush=True)
        result = subprocess.run(argv, capture_output=True, text=True, timeout=300)
        line = next((x for x in result.stdout.splitlines() if x.startswith("ZOOBOX-PROBE ")), None)
        if result.returncode != 0 or line is None:
            tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
            errors.append(f"{spec.image}: the probe failed: {' / '.join(tail)}")
            rows.append([spec.name, "probe", "runs", "failed", "ERROR"])
            continue
        checked += 1
        probe = json.loads(line[len("ZOOBOX-PROBE ") :])
        labels = labels_of(info)
        for what, expected, found, ok in compare(spec, labels, probe) + lock_rows(labels, probe):
            rows.append([spec.name, what, str(expected), str(found), "ok" if ok else "ERROR"])
            if not ok:
                errors.append(
                    f"{spec.image}: {what} is {found}, envs/{spec.name}.yaml says {expected}"
                )
    text = table(rows, ["env", "check", "expected", "found", "status"])
    if errors:
        raise UserError(text + "\n" + "\n".join(errors))
    if not checked:
        raise UserError(text + "\nno image is built: run `invoke images.build`")
    return text
