"""Shared test helpers: paths to the real fixtures, and a skip that says why."""

import os
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
