"""Datasets: generated samples in each dataset's own layout."""

from __future__ import annotations

from invoke import task

from zoobox.jobs.datasets import dataset_names


@task(
    default=True,
    help={
        "dataset": f"one of {', '.join(dataset_names())}",
        "out": "folder to write the sample into",
        "seed": "random seed (the same seed gives the same sample)",
    },
)
def sample(c, dataset, out, seed=0):
    """Generate a small sample of a dataset in its real layout (no download needed)."""
    from zoobox.core.errors import main_guard
    from zoobox.jobs.datasets import make_sample

    main_guard(lambda: print(f"{dataset} sample written to {make_sample(dataset, out, seed)}"))
