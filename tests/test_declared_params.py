"""Each stage parameter declared once, everything else derived from it (issue 21, item 1).

A stage's parameters are declared in its package's params.py (zoostage.declare). These
tests walk every stage of every recipe and fail when a parameter exists in one place and
not in the others (the stage's CLI, the recipe's binding, the recipe's parameters, the
invoke options), or is accepted and not used (by a stage's arguments, or by its code).
"""

import ast
import importlib
import os

import pytest
import yaml

from tests.conftest import REPO
from tests.test_layering import imported_names
from zoobox.core import recipe as host_recipe
from zoobox.core.recipe import (
    ENGINE_PARAMS,
    bind_declared,
    context_for,
    load_recipe,
    recipe_names,
    render_args,
    resolve_params,
)
from zoobox.tasks.recipes import PARAM_OPTIONS, option_help
from zoostage.declare import Param, declared
from zoostage.errors import UserError
from zoostage.recipe import RecipeError
from zoostage.recipe import load_recipe as read_recipe

RECIPES = recipe_names()
STAGES = [(r, s.name) for r in RECIPES for s in load_recipe(r).stages]


def _lone_params(template):
    """The parameter names a template uses ({p.NAME})."""
    if not isinstance(template, str):
        return []
    import string

    return [
        field[2:]
        for _, field, _, _ in string.Formatter().parse(template)
        if field and field.startswith("p.")
    ]


@pytest.mark.parametrize("recipe_name", RECIPES)
def test_every_recipe_parameter_is_declared_bound_and_used(recipe_name):
    recipe = load_recipe(recipe_name)
    accepted = set(recipe.param_specs) | set(ENGINE_PARAMS)
    used = {name for s in recipe.stages for t in s.args.values() for name in _lone_params(t)}
    assert used <= accepted, f"bound but not a parameter: {sorted(used - accepted)}"
    assert accepted <= used, f"accepted and not used by any stage: {sorted(accepted - used)}"
    raw = yaml.safe_load((REPO / "models" / recipe_name / "recipe.yaml").read_text())
    for stage in recipe.stages:
        flags = {p.flag: p for p in declared(stage.module)}
        for flag in stage.args:
            assert flag in flags, f"{stage.module} does not declare --{flag}"
        for param in flags.values():
            if param.recipe:
                # Bound, from its declaration or from the recipe's own line.
                assert param.flag in stage.args, (stage.name, param.flag)
                raw_args = (
                    next(s for s in raw["stages"] if s["name"] == stage.name).get("args") or {}
                )
                # A recipe line that only repeats the declared binding is not written.
                assert raw_args.get(param.flag) != "{p.%s}" % param.recipe, (
                    f"{recipe_name} {stage.name}: args.{param.flag} repeats the declaration"
                )
    for key, entry in (raw.get("params") or {}).items():
        declared_by = [p for s in recipe.stages for p in declared(s.module) if p.recipe == key]
        if declared_by and isinstance(entry, dict):
            assert set(entry) <= {"default", "choices"}, (key, entry)


@pytest.mark.parametrize("recipe_name,stage_name", STAGES, ids=[f"{r}.{s}" for r, s in STAGES])
def test_the_stage_cli_is_its_declaration(recipe_name, stage_name):
    stage = load_recipe(recipe_name).stage(stage_name)
    module = importlib.import_module(stage.module)
    parser = module.build_parser()
    parsed = {o for a in parser._actions for o in a.option_strings} - {"-h", "--help"}
    assert parsed == {"--out"} | {"--" + p.flag for p in declared(stage.module)}


def _module_file(repo, name):
    path = repo / (name.replace(".", "/") + ".py")
    return path if path.is_file() else None


def _names_read(paths):
    """Attribute names, function parameters and strings in these files' code."""
    found = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute):
                found.add(node.attr)
            elif isinstance(node, ast.arg):
                found.add(node.arg)
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                found.add(node.value)
    return found


def unread_flags(module_name, params, repo=REPO):
    """Declared flags the stage's code never reads: not as args.X, not as a parameter X
    of a function (cli.call), not as a string; the module and the stage-side modules it
    imports (not the declarations) are searched."""
    path = _module_file(repo, module_name)
    files = [path]
    for name, _ in imported_names(path):
        other = _module_file(repo, name)
        if other and other != path and other.name != "params.py":
            files.append(other)
    names = _names_read(files)
    return [p.flag for p in params if p.dest not in names]


@pytest.mark.parametrize(
    "module", sorted({s.module for r in RECIPES for s in load_recipe(r).stages})
)
def test_every_declared_flag_is_read_by_the_stage(module):
    assert unread_flags(module, declared(module)) == []


def test_the_unread_check_can_fail(tmp_path, monkeypatch):
    """A planted stage declaring a flag its code never reads is found."""
    package = tmp_path / "models" / "planted"
    package.mkdir(parents=True)
    (package / "stage.py").write_text(
        "from models.planted import helper\ndef main(args):\n    return args.used\n"
    )
    (package / "helper.py").write_text("def work(batch_size):\n    return batch_size\n")
    monkeypatch.setattr("tests.test_layering.REPO", tmp_path)
    params = (Param("used", "int"), Param("batch-size", "int"), Param("ignored-knob", "int"))
    assert unread_flags("models.planted.stage", params, tmp_path) == ["ignored-knob"]


@pytest.mark.parametrize("recipe_name", RECIPES)
def test_random_fallback_reaches_every_recipes_weights_stage(recipe_name):
    """Accepted by every recipe (the demo's offline fallback), so wired in every one."""
    recipe = load_recipe(recipe_name)
    params = resolve_params(recipe, {"random_fallback": True})
    context = context_for(recipe, params, {}, "/data", "/cache", "cpu")
    assert "--random-fallback" in render_args(recipe.stage("weights"), context)
    params = resolve_params(recipe, {})
    context = context_for(recipe, params, {}, "/data", "/cache", "cpu")
    assert "--random-fallback" not in render_args(recipe.stage("weights"), context)


def test_the_invoke_options_say_what_each_recipes_stage_does_with_them():
    """--limit: RetinaFace spreads N over the events; the others take the first N."""
    assert "spread evenly over the events" in option_help(load_recipe("retinaface"))["limit"]
    for name in ("refinedet", "retinanet"):
        assert option_help(load_recipe(name))["limit"] == "only the first N images (0: all)"
    for name in RECIPES:
        texts = option_help(load_recipe(name))
        specs = {**ENGINE_PARAMS, **load_recipe(name).param_specs}
        for option, key in PARAM_OPTIONS.items():
            assert texts[option] == specs[key].help and texts[option]


def test_a_parameter_declared_by_a_stage_is_bound_without_a_recipe_line():
    raw = yaml.safe_load((REPO / "models" / "retinaface" / "recipe.yaml").read_text())
    data = next(s for s in raw["stages"] if s["name"] == "data")
    assert "limit" not in data["args"]
    assert load_recipe("retinaface").stage("data").args["limit"] == "{p.limit}"


def test_a_stage_refuses_a_value_out_of_its_declared_range(capsys):
    parser = importlib.import_module("data_scripts.widerface.prepare").build_parser()
    base = ["--out", "o", "--root", "r", "--mean-bgr", "1,2,3"]
    assert parser.parse_args([*base, "--limit", "3"]).limit == 3
    with pytest.raises(SystemExit) as stopped:
        parser.parse_args([*base, "--limit", "-1"])
    assert stopped.value.code == 2
    assert "argument --limit must be an integer >= 0, not -1" in capsys.readouterr().err


def _recipe(tmp_path, params, args):
    folder = tmp_path / "models" / "made"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "recipe.yaml").write_text(
        "name: made\n"
        f"params: {params}\n"
        "stages:\n"
        "  - {name: data, env: host, run: data_scripts.voc.prepare,\n"
        f"     args: {{root: '{{data}}', mean-bgr: '1,2,3', {args}}}}}\n"
    )
    return read_recipe("made", str(tmp_path / "models"))


@pytest.mark.parametrize(
    "params, args, says",
    [
        ("{limit: {default: 3, help: mine}}", "", "params.limit.help: declared by"),
        ("{limit: {default: 3, type: float}}", "", "params.limit.type: declared by"),
        ("{}", "nope: 1", "args.nope: data_scripts.voc.prepare has no --nope"),
        ("{spare: 1}", "", "params.spare: no stage uses it"),
        ("{limit: -1}", "", "params.limit must be an integer >= 0"),
        ("{limit: {choices: [1, 2, x]}}", "", "params.limit.choices must be an integer"),
    ],
)
def test_the_recipe_file_check_follows_the_declarations(tmp_path, params, args, says):
    recipe = _recipe(tmp_path, params, args)
    with pytest.raises(RecipeError) as caught:
        bind_declared(recipe)
    assert says in str(caught.value)
    assert str(caught.value).startswith(str(tmp_path / "models" / "made" / "recipe.yaml"))


def test_a_recipe_sets_its_own_default_and_narrows_the_choices(tmp_path):
    recipe = _recipe(tmp_path, "{limit: 7, workers: {choices: [0, 1]}}", "")
    bind_declared(recipe)
    assert recipe.param_specs["workers"].choices == (0, 1)
    with pytest.raises(UserError, match="workers must be one of 0, 1, not 2"):
        resolve_params(recipe, {"workers": 2})
    assert recipe.param_specs["limit"].default == 7
    assert recipe.param_specs["limit"].help == "only the first N images (0: all)"
    assert recipe.stage("data").args["limit"] == "{p.limit}"


def test_two_stages_declaring_one_parameter_differently_is_refused(tmp_path, monkeypatch):
    real = declared

    def fake(module):
        params = real(module)
        if module == "data_scripts.coco.prepare":
            return tuple(p.but(type_name="float") if p.flag == "limit" else p for p in params)
        return params

    monkeypatch.setattr(host_recipe, "declared", fake)
    models = tmp_path / "models"
    (models / "retinanet").mkdir(parents=True)
    (models / "retinanet" / "recipe.yaml").write_text(
        (REPO / "models" / "retinanet" / "recipe.yaml").read_text()
    )
    with pytest.raises(RecipeError, match=r"parameter limit: .* declare its type differently"):
        bind_declared(read_recipe("retinanet", str(models)))


def test_a_declaration_is_light_enough_for_the_task_list():
    """params.py modules import no numpy or torch: `invoke --list` reads them."""
    import subprocess
    import sys

    modules = sorted(
        {s.module.rpartition(".")[0] + ".params" for r in RECIPES for s in load_recipe(r).stages}
    )
    code = "import sys\n" + "".join(f"import {m}\n" for m in modules)
    code += "print('numpy' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert out.stdout.split() == ["False", "False"], out.stderr


def test_param_copies_keep_every_field():
    param = Param("x-y", "int", 3, "help", min=1, max=9, recipe="xy", required=True)
    copy = param.but(help="other")
    assert (copy.flag, copy.type_name, copy.default, copy.minimum, copy.maximum) == (
        "x-y",
        "int",
        3,
        1,
        9,
    )
    assert (copy.recipe, copy.required, copy.help, copy.name) == ("xy", True, "other", "xy")
    assert os.path.basename(__file__) == "test_declared_params.py"
