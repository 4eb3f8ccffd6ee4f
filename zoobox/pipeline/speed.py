"""`--backend auto` on a CPU: the fastest of a recipe's CPU backends, measured here once.

A recipe may list several CPU backends (`backends: {cpu: [onnxruntime, torchscript]}`).
Which is fastest depends on the machine and the installed versions (on a 2-core
machine RetinaFace runs 3-7x faster in onnxruntime than in TorchScript), so it is
measured: `python -m zoostage.backends.probe` times the recipe's network
(`models.<recipe>.probe`) in each installed candidate, in a subprocess (this host side
imports no torch). The answer is cached in ~/.cache/zoobox/backend-speed.json, keyed by
recipe, candidates, Python, torch, onnxruntime, CPU count and machine, so it is measured
once per machine and installation; a change of any of those measures again.

When nothing can be measured (a dry run with no cached answer, one candidate installed,
the probe failing), the first installed candidate is taken and the reason says so.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from importlib import metadata, util
from pathlib import Path

from zoobox.core.artifacts import write_json_atomic
from zoobox.core.paths import REPO, default_cache

CACHE_FILE = "backend-speed.json"
# The import each CPU backend needs, and the distribution whose version keys the cache.
REQUIRES = {"torchscript": ("torch", "torch"), "onnxruntime": ("onnxruntime", "onnxruntime")}
PROBE_TIMEOUT = 600


def installed(backend: str) -> bool:
    """Whether the backend's runtime library can be imported here (found, not imported)."""
    module = REQUIRES.get(backend, (None,))[0]
    return module is not None and util.find_spec(module) is not None


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def machine_key(recipe: str, candidates: list[str]) -> str:
    versions = [f"{b}={_version(REQUIRES[b][1])}" for b in candidates]
    machine = [f"cpus={os.cpu_count()}", platform.machine(), platform.node()]
    return "|".join([recipe, ",".join(candidates), platform.python_version(), *versions, *machine])


def run_probe(recipe: str, candidates: list[str]) -> dict:
    """{backend: images/s} from the stage-side probe, in a subprocess."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (
        os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""
    )
    with tempfile.TemporaryDirectory(prefix="zoobox-probe-") as out:
        command = [
            sys.executable,
            "-m",
            "zoostage.backends.probe",
            "--out",
            out,
            "--network",
            f"models.{recipe}.probe",
            "--backends",
            ",".join(candidates),
        ]
        result = subprocess.run(
            command, cwd=REPO, env=env, capture_output=True, text=True, timeout=PROBE_TIMEOUT
        )
        answer = Path(out) / "probe.json"
        if result.returncode != 0 or not answer.is_file():
            tail = (result.stderr or result.stdout).strip().splitlines()
            raise RuntimeError(tail[-1] if tail else f"exit {result.returncode}")
        return json.loads(answer.read_text())


def _read_cache(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _write_cache(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, data)  # never through a link planted in the cache


def _describe(entry: dict, fresh: bool) -> str:
    speeds = entry["images_per_s"]
    ranked = sorted(speeds, key=speeds.get, reverse=True)
    figures = " vs ".join(f"{b} {speeds[b]:.2f}" for b in ranked)
    shape = "x".join(str(v) for v in entry.get("shape", []))
    when = "measured now" if fresh else f"measured {entry.get('measured', '?')}, cached"
    return f"fastest CPU backend here: {figures} images/s ({shape}, random weights; {when})"


def fastest_cpu_backend(
    recipe: str,
    candidates: list[str],
    cache: Path | None = None,
    dry: bool = False,
    measure=None,
) -> tuple[str, str]:
    """(backend, why): the fastest installed candidate, measured once and cached.

    `measure(recipe, backends) -> {"images_per_s": {...}, "shape": [...]}` (default:
    the probe subprocess).
    """
    available = [b for b in candidates if installed(b)]
    if not available:
        return candidates[0], f"none of {', '.join(candidates)} is installed"
    if len(available) == 1:
        return available[0], f"the only one of {', '.join(candidates)} installed"
    path = (cache or default_cache()) / CACHE_FILE
    key = machine_key(recipe, available)
    stored = _read_cache(path)
    entry = stored.get(key)
    fresh = False
    if entry is None:
        if dry:
            return available[0], "first listed (not measured yet; a run measures it)"
        print(
            f"measuring {', '.join(available)} for {recipe} on this machine (once)...",
            file=sys.stderr,
        )
        try:
            entry = (measure or run_probe)(recipe, available)
        except (RuntimeError, OSError, ValueError, subprocess.TimeoutExpired) as error:
            return available[0], f"first listed (measuring failed: {error})"
        entry["measured"] = time.strftime("%Y-%m-%d %H:%M")
        stored[key] = entry
        _write_cache(path, stored)
        fresh = True
    speeds = entry.get("images_per_s") or {}
    best = max(available, key=lambda b: speeds.get(b, 0.0))
    return best, _describe(entry, fresh)
