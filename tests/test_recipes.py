"""Recipe files against the stages they run: every argument bound, every type agreeing.

A stage argument is declared once, by its module's parser (`build_parser()`); the recipe
only binds values to it. These tests keep the two from drifting: a flag the recipe passes
must exist, a required flag must be passed, and a parameter's declared type must be the
type the stage parses. Parameter values are checked before the first stage runs.
"""

import argparse
import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO
from zoobox.core.recipe import ENGINE_PARAMS, load_recipe, recipe_names, resolve_params
from zoostage.errors import UserError
from zoostage.recipe import RecipeError
from zoostage.recipe import load_recipe as read_recipe

RECIPES = recipe_names()
STAGES = [(r, s.name) for r in RECIPES for s in load_recipe(r).stages]


def _options(parser):
    return {opt: action for action in parser._actions for opt in action.option_strings}


def _lone_param(template):
    if isinstance(template, str) and template.startswith("{p.") and template.endswith("}"):
        name = template[3:-1]
        return name if "{" not in name else None
    return None


@pytest.mark.parametrize("recipe_name,stage_name", STAGES, ids=[f"{r}.{s}" for r, s in STAGES])
def test_recipe_binds_exactly_what_the_stage_parses(recipe_name, stage_name):
    recipe = load_recipe(recipe_name)
    stage = recipe.stage(stage_name)
    parser = importlib.import_module(stage.module).build_parser()
    options = _options(parser)
    for flag, template in stage.args.items():
        assert f"--{flag}" in options, f"{stage.module} has no --{flag}"
        action = options[f"--{flag}"]
        name = _lone_param(template)
        if name is None:
            continue
        spec = recipe.param_specs.get(name) or ENGINE_PARAMS[name]
        if spec.type_name == "bool":
            assert action.nargs == 0, f"--{flag} takes {name}, a bool: it must be a bare flag"
        elif spec.type_name in ("int", "float"):
            wanted = int if spec.type_name == "int" else float
            assert action.type in (wanted, float), f"--{flag} parses {action.type}, not {wanted}"
        if spec.choices and action.choices:
            assert set(spec.choices) <= set(action.choices), (name, action.choices)
    bound = {f"--{flag}" for flag in stage.args} | {"--out"}
    required = {a.option_strings[0] for a in parser._actions if a.required and a.option_strings}
    assert required <= bound, f"{stage.module} requires {sorted(required - bound)}"


@pytest.mark.parametrize("recipe_name", RECIPES)
def test_input_facts_agree_with_the_model_package(recipe_name):
    """The recipe's `input` block (what data prepares) is the model's own constants."""
    facts = load_recipe(recipe_name).input
    assert set(facts) == {"mean_bgr", "std_bgr", "channels", "pad"}
    package = importlib.import_module(f"models.{recipe_name}")
    mean = getattr(package, "MEAN_BGR", None) or getattr(package, "PIXEL_MEAN_BGR", None)
    if mean is not None:
        assert [float(v) for v in facts["mean_bgr"]] == [float(v) for v in mean]


def test_parameters_are_checked_before_anything_runs():
    recipe = load_recipe("retinaface")
    assert resolve_params(recipe, {"batch_size": "4"})["batch_size"] == 4
    assert resolve_params(recipe, {"skip_bad": "yes"})["skip_bad"] is True
    cases = {
        "batch_size": (-1, "an integer >= 1"),
        "input_size": ("abc", "an integer >= 32"),
        "skip_bad": ("maybe", "true or false"),
        "precision": ("int8", "one of default, fp16, fp32"),
        "limit": (True, "an integer >= 0"),  # YAML `true` is not a count
        "workers": (1.5, "an integer"),
    }
    for name, (value, says) in cases.items():
        with pytest.raises(UserError, match=says):
            resolve_params(recipe, {name: value})
    # A path parameter is made absolute where the command was typed.
    found = resolve_params(recipe, {"image_list": "lists/few.txt"})["image_list"]
    assert found == str((Path.cwd() / "lists" / "few.txt").resolve())
    with pytest.raises(UserError, match=r"no parameter\(s\) \['batch'\]"):
        resolve_params(recipe, {"batch": 2})


def test_a_bad_parameter_is_one_line_before_any_stage(tmp_path):
    """--param input_size=abc stops at once: no stage runs, one error line, exit 2."""
    result = subprocess.run(
        [
            *(sys.executable, "-m", "invoke", "retinaface.all", "--runner", "host"),
            *("--artifacts", str(tmp_path), "--param", "input_size=abc"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == ["error: --param input_size must be an integer >= 32, not 'abc'"]
    assert not (tmp_path / "retinaface").exists()


def _broken(tmp_path, text):
    folder = tmp_path / "models" / "broken"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "recipe.yaml").write_text(text)
    return str(tmp_path / "models")


GOOD_STAGE = "stages: [{name: a, env: host, run: tests.toy.stage}]\n"


@pytest.mark.parametrize(
    "text,field",
    [
        ("name: broken\n", "stages: must be a list of stages"),
        ("name: broken\nstages: [{name: a, env: host}]\n", "stages[0].run: missing"),
        (
            "name: broken\nstages: [{name: a, env: host, run: m, needs: [z]}]\n",
            "stages[0] (a).needs: 'z' is not a stage",
        ),
        ("name: broken\nparams: {n: {default: x, type: int}}\n" + GOOD_STAGE, "params.n"),
        ("name: broken\nparams: {n: {default: 1, typo: int}}\n" + GOOD_STAGE, "unknown keys"),
        ("name: broken\nparams: [1]\n" + GOOD_STAGE, "params: must be a mapping"),
        ("- just\n- a list\n", "must be a mapping"),
        ("name: broken\nstages: [\n", "line 3: not valid YAML"),
        ("name: broken\ndataset: 3\n" + GOOD_STAGE, "dataset: must be a mapping"),
    ],
)
def test_a_broken_recipe_file_names_its_file_and_field(tmp_path, text, field):
    models = _broken(tmp_path, text)
    with pytest.raises(RecipeError) as caught:
        read_recipe("broken", models)
    message = str(caught.value)
    assert message.startswith(os.path.join(models, "broken", "recipe.yaml"))
    assert field in message


def test_host_checks_envs_and_placeholders(tmp_path):
    from zoobox.core import recipe as host_recipe

    for stage, says in [
        ("{name: a, env: nowhere, run: m}", r"\(a\).env: unknown env 'nowhere'"),
        ("{name: a, env: host, run: m, args: {x: '{p.nope}'}}", "no parameter 'nope'"),
        ("{name: a, env: host, run: m, args: {x: '{in.b}'}}", "no stage in its needs 'b'"),
        ("{name: a, env: host, run: m, args: {x: '{zap}'}}", "unknown placeholder"),
    ]:
        models = _broken(tmp_path, f"name: broken\nstages: [{stage}]\n")
        with pytest.raises(RecipeError, match=says):
            host_recipe.check_recipe(read_recipe("broken", models))


def test_the_parsers_agree_with_what_the_help_says():
    """Every stage module parses its own defaults (a parser that cannot is a broken stage)."""
    for module in sorted({s.module for r in RECIPES for s in load_recipe(r).stages}):
        parser = importlib.import_module(module).build_parser()
        assert isinstance(parser, argparse.ArgumentParser)
        assert "--out" in _options(parser)


def test_a_broken_recipe_leaves_the_others_working(tmp_path, monkeypatch, capsys):
    """`invoke --list` and every other recipe work; the broken one says why, in one line."""
    import shutil

    from invoke import Context

    from zoobox.core import recipe as host_recipe
    from zoobox.tasks import build_namespace

    models = tmp_path / "models"
    for name in RECIPES:
        (models / name).mkdir(parents=True)
        shutil.copy(REPO / "models" / name / "recipe.yaml", models / name / "recipe.yaml")
    (models / "broken").mkdir()
    (models / "broken" / "recipe.yaml").write_text("name: broken\nstages: [{name: a}]\n")
    monkeypatch.setattr(host_recipe, "MODELS_DIR", models)
    host_recipe.load_recipe.cache_clear()
    try:
        namespace = build_namespace()
    finally:
        host_recipe.load_recipe.cache_clear()
    warning = capsys.readouterr().err.strip().splitlines()
    assert len(warning) == 1 and "stages[0].env: missing" in warning[0]
    assert set(RECIPES) < set(namespace.collections)
    assert "infer" in namespace.collections["retinaface"].tasks
    broken = namespace.collections["broken"]
    assert list(broken.tasks) == ["all"]
    with pytest.raises(SystemExit) as stopped:
        broken.tasks["all"](Context())
    assert stopped.value.code == 2
    line = capsys.readouterr().err.strip()
    assert line.startswith("error: ") and "broken/recipe.yaml: stages[0].env: missing" in line
