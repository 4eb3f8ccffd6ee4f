"""Recipe files (`models/<recipe>/recipe.yaml`) and the stage graph they describe.

A recipe names its stages in order; each stage is a module run with `python -m`, its
arguments written as templates over a small context:

    {p.NAME}        a parameter (recipe default < invoke config < command-line flag)
    {weights.X}     the recipe's weights entry (file, url, sha256)
    {in.STAGE}      the output folder of an upstream stage (it must be in `needs`)
    {data}          the dataset root
    {cache}         the weights cache
    {device}        the device the stage's backend runs on ("cpu", "0", ...)
    {devices}       all devices asked for, comma-separated (for one multi-device process)
    {work}          ARTIFACTS/<recipe>/work: state kept across runs (training checkpoints)

An argument whose template is a single placeholder takes the value as it is: None or
False drop the flag, True leaves a bare flag.
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from types import SimpleNamespace

import yaml

from zoobox.core.errors import UserError
from zoobox.core.paths import REPO, repo_relative

MODELS_DIR = REPO / "models"


@dataclass(frozen=True)
class StageSpec:
    name: str
    env: str
    module: str
    args: dict
    needs: tuple[str, ...] = ()
    npu: bool = False  # uses the backend: needs the NPU when the backend is an NPU one
    shard: bool = False  # takes --shard I/N: several devices split its images
    optional: bool = False  # not part of `all`; runs when asked for by name (training)


@dataclass(frozen=True)
class Recipe:
    name: str
    title: str
    path: Path
    dataset: dict
    weights: dict
    backends: dict
    params: dict
    published: dict
    stages: tuple[StageSpec, ...]
    raw: dict = field(repr=False, compare=False, default_factory=dict)

    @property
    def stage_names(self) -> list[str]:
        return [stage.name for stage in self.stages]

    @property
    def default_stages(self) -> list[str]:
        """What `all` runs: every stage but the optional ones."""
        return [stage.name for stage in self.stages if not stage.optional]

    def stage(self, name: str) -> StageSpec:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise UserError(
            f"recipe {self.name} has no stage {name!r} (stages: {', '.join(self.stage_names)})"
        )

    def upstream(self, name: str) -> list[str]:
        """`name` and every stage it depends on, in recipe order."""
        wanted = {name}
        for stage in reversed(self.stages):
            if stage.name in wanted:
                wanted.update(stage.needs)
        return [stage.name for stage in self.stages if stage.name in wanted]


def recipe_names() -> list[str]:
    return sorted(p.parent.name for p in MODELS_DIR.glob("*/recipe.yaml"))


@lru_cache(maxsize=None)
def load_recipe(name: str) -> Recipe:
    path = MODELS_DIR / name / "recipe.yaml"
    if not path.is_file():
        raise UserError(f"no recipe {name!r} (recipes: {', '.join(recipe_names())})")
    return load_recipe_file(path)


def read_recipe_data(path: Path) -> dict:
    """The parsed recipe file, checked (zoobox.core.recipe_check); UserError if broken."""
    from zoobox.core.envspec import load_envs
    from zoobox.core.recipe_check import check_recipe_data

    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise UserError(f"{repo_relative(path)}: {line}not valid YAML ({problem})") from None
    except OSError as error:
        raise UserError(f"cannot read recipe {path}: {error.strerror or error}") from None
    check_recipe_data(data, path, load_envs())
    return data


def load_recipe_file(path: Path) -> Recipe:
    path = Path(path)
    data = read_recipe_data(path)
    stages = []
    for entry in data["stages"]:
        needs = tuple(entry.get("needs") or ())
        stages.append(
            StageSpec(
                name=entry["name"],
                env=entry["env"],
                module=entry["run"],
                args=dict(entry.get("args") or {}),
                needs=needs,
                npu=bool(entry.get("npu", False)),
                shard=bool(entry.get("shard", False)),
                optional=bool(entry.get("optional", False)),
            )
        )
    return Recipe(
        name=data["name"],
        title=data.get("title", data["name"]),
        path=path,
        dataset=dict(data.get("dataset") or {}),
        weights=dict(data.get("weights") or {}),
        backends=dict(data.get("backends") or {}),
        params=dict(data.get("params") or {}),
        published=dict(data.get("published") or {}),
        stages=tuple(stages),
        raw=data,
    )


class _Formatter(string.Formatter):
    def get_field(self, field_name, args, kwargs):
        head, *rest = field_name.split(".")
        value = kwargs[head]
        for part in rest:
            if isinstance(value, dict):
                if part not in value:
                    raise KeyError(field_name)
                value = value[part]
            else:
                value = getattr(value, part)
        return value, field_name


_FORMATTER = _Formatter()


def render_value(template, context: dict):
    """One argument value: a raw value for a lone placeholder, else a formatted string."""
    if not isinstance(template, str):
        return template
    parsed = list(_FORMATTER.parse(template))
    if len(parsed) == 1 and parsed[0][0] == "" and parsed[0][1] and not parsed[0][2]:
        value, _ = _FORMATTER.get_field(parsed[0][1], (), context)
        return value
    return _FORMATTER.vformat(template, (), context)


def render_args(stage: StageSpec, context: dict) -> list[str]:
    """The stage's command-line arguments (without --out) for a context."""
    argv: list[str] = []
    for flag, template in stage.args.items():
        try:
            value = render_value(template, context)
        except (KeyError, AttributeError) as error:
            raise UserError(
                f"stage {stage.name}: argument --{flag} uses unknown placeholder {error}"
            ) from None
        if value is None or value is False or value == "":
            continue
        argv.append(f"--{flag}")
        if value is not True:
            argv.append(str(value))
    return argv


def context_for(
    recipe: Recipe,
    params: dict,
    stage_dirs: dict,
    data: str,
    cache: str,
    device: str,
    work: str = "",
    devices: tuple = (),
) -> dict:
    return {
        "p": SimpleNamespace(**params),
        "weights": recipe.weights,
        "in": SimpleNamespace(**stage_dirs),
        "data": data,
        "cache": cache,
        "device": device,
        "work": work,
        "devices": ",".join(str(d) for d in devices),
    }
