"""Checking a recipe file's structure before anything uses it.

A broken recipe.yaml is one UserError naming the file and the field, e.g.

    models/x/recipe.yaml: stages[2].env: unknown env 'gpu' (envs: aie, atc, export, host, train)

so that the task listing and the other recipes keep working (see zoobox.tasks). Checked:
the required fields and their types, stage names (unique), envs (envs/*.yaml), needs
(stages that come before), and every placeholder in stage arguments (known names,
parameters the recipe declares, upstream stages the stage needs).
"""

from __future__ import annotations

import string
from pathlib import Path

from zoobox.core.errors import UserError

# Placeholders every stage argument may use (see zoobox.core.recipe).
CONTEXT_NAMES = ("p", "weights", "in", "data", "cache", "device", "devices", "work", "recipe_file")
# Parameters the engine adds to every recipe's own.
ENGINE_PARAMS = ("weights", "allow_random", "backend")
MAPPINGS = ("dataset", "weights", "backends", "params", "published")
STAGE_FLAGS = ("npu", "shard", "optional")


class _Checker:
    def __init__(self, path: Path, envs):
        self.path = path
        self.envs = sorted(envs)

    def fail(self, field: str, problem: str):
        raise UserError(f"{_shown(self.path)}: {field}: {problem}")

    def expect(self, value, kind, field: str, what: str):
        if not isinstance(value, kind):
            self.fail(field, f"must be {what}, not {type(value).__name__} {value!r}")


def _shown(path: Path) -> str:
    from zoobox.core.paths import repo_relative

    return repo_relative(path)


def check_recipe_data(data, path: Path, envs) -> None:
    """Raise UserError naming the first field of `data` (a parsed recipe) that is wrong."""
    check = _Checker(Path(path), envs)
    check.expect(data, dict, "(top level)", "a mapping of recipe fields")
    for field in ("name", "stages"):
        if field not in data:
            check.fail(field, "missing (a recipe needs a name and its stages)")
    check.expect(data["name"], str, "name", "text")
    for field in MAPPINGS:
        if data.get(field) is not None:
            check.expect(data[field], dict, field, "a mapping")
    check.expect(data["stages"], list, "stages", "a list of stages")
    if not data["stages"]:
        check.fail("stages", "empty (a recipe needs at least one stage)")
    params = set(data.get("params") or {}) | set(ENGINE_PARAMS)
    weights = set(data.get("weights") or {})
    seen: list[str] = []
    for index, entry in enumerate(data["stages"]):
        where = f"stages[{index}]"
        check.expect(entry, dict, where, "a mapping (name, env, run, args, needs)")
        for field in ("name", "env", "run"):
            if field not in entry:
                check.fail(f"{where}.{field}", "missing")
            check.expect(entry[field], str, f"{where}.{field}", "text")
        name = entry["name"]
        where = f"stages[{index}] ({name})"
        if name in seen:
            check.fail(f"{where}.name", "another stage has this name")
        if entry["env"] not in check.envs:
            check.fail(
                f"{where}.env", f"unknown env {entry['env']!r} (envs: {', '.join(check.envs)})"
            )
        needs = entry.get("needs") or []
        check.expect(needs, list, f"{where}.needs", "a list of stage names")
        for need in needs:
            if need not in seen:
                check.fail(f"{where}.needs", f"{need!r} is not a stage that comes before it")
        for flag in STAGE_FLAGS:
            if flag in entry:
                check.expect(entry[flag], bool, f"{where}.{flag}", "true or false")
        args = entry.get("args") or {}
        check.expect(args, dict, f"{where}.args", "a mapping of flag: value")
        for flag, template in args.items():
            _check_template(check, f"{where}.args.{flag}", template, params, weights, needs)
        seen.append(name)


def _check_template(check: _Checker, field: str, template, params, weights, needs) -> None:
    if not isinstance(template, str):
        return
    try:
        fields = [name for _, name, _, _ in string.Formatter().parse(template) if name]
    except ValueError as error:
        check.fail(field, f"{template!r} is not a valid template ({error})")
    for name in fields:
        head, _, rest = name.partition(".")
        known = {"p": params, "weights": weights, "in": set(needs)}
        if head not in CONTEXT_NAMES:
            check.fail(field, f"unknown placeholder {{{name}}} (known: {', '.join(CONTEXT_NAMES)})")
        if head in known and rest not in known[head]:
            what = {"p": "parameter", "weights": "weights field", "in": "stage in its needs"}
            check.fail(field, f"{{{name}}}: no {what[head]} {rest!r}")
