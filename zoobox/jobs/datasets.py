"""The datasets zoobox knows, by name: their stage-side package in data_scripts/."""

from __future__ import annotations

import importlib

from zoobox.core.errors import UserError

DATASETS = {
    "widerface": "data_scripts.widerface",
    "coco": "data_scripts.coco",
    "voc": "data_scripts.voc",
}


def dataset_module(dataset: str, part: str):
    if dataset not in DATASETS:
        raise UserError(f"unknown dataset {dataset!r} (choose from {', '.join(DATASETS)})")
    return importlib.import_module(f"{DATASETS[dataset]}.{part}")


def make_sample(dataset: str, root: str, seed: int = 0) -> str:
    """Generate a small sample of `dataset` in its own layout at `root`."""
    module = dataset_module(dataset, "sample")
    module.make_sample(root, seed=seed)
    return root
