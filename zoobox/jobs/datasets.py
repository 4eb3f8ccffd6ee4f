"""The datasets zoobox knows: every package data_scripts/<name>/ with a sample.py.

A new dataset needs no registration here: its package under data_scripts/ is found by
name (the name a recipe's `dataset.name` uses).
"""

from __future__ import annotations

import importlib

from zoobox.core.errors import UserError
from zoobox.core.paths import REPO

DATA_SCRIPTS = REPO / "data_scripts"


def dataset_names() -> list[str]:
    return sorted(p.parent.name for p in DATA_SCRIPTS.glob("*/sample.py"))


def make_sample(dataset: str, root: str, seed: int = 0) -> str:
    """Generate a small sample of `dataset` in its own layout at `root`."""
    if dataset not in dataset_names():
        raise UserError(f"unknown dataset {dataset!r} (choose from {', '.join(dataset_names())})")
    importlib.import_module(f"data_scripts.{dataset}.sample").make_sample(root, seed=seed)
    return root
