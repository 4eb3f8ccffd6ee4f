"""`--param` values and settings files (issue 19, item 7).

A value is converted by the parameter's declared type, never read as YAML 1.1: the
recipe's own documented choices (`amp=off`, `resume=no`) stay strings, and text that is
not valid YAML (`soc_version=[1`) is a string like any other. A settings file with YAML
anchors or aliases (a nest of them loads for minutes) is refused in one line.
"""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO
from zoobox.core.recipe import load_recipe, resolve_params
from zoobox.core.settings_file import check_settings_file
from zoobox.pipeline.configure import parse_params
from zoostage.errors import UserError


def _resolved(recipe, *pairs):
    return resolve_params(load_recipe(recipe), parse_params(pairs))


@pytest.mark.parametrize(
    "pair, name, value",
    [
        ("amp=off", "amp", "off"),
        ("amp=on", "amp", "on"),
        ("resume=no", "resume", "no"),
        ("resume=yes", "resume", "yes"),
        ("soc_version=[1", "soc_version", "[1"),
        ("soc_version=%TAG", "soc_version", "%TAG"),
        ("steps=8,11", "steps", "8,11"),
        ("lr=0.04", "lr", "0.04"),
        ("train_eval=yes", "train_eval", True),
        ("train_eval=off", "train_eval", False),
        ("epochs=3", "epochs", 3),
        ("clip-grad=2.5", "clip_grad", 2.5),
    ],
)
def test_a_value_is_converted_by_its_declared_type(pair, name, value):
    assert _resolved("retinanet", pair)[name] == value


def test_a_path_takes_the_text_as_it_is_and_is_made_absolute():
    found = _resolved("retinaface", "image_list=@list.txt")["image_list"]
    assert found == str((Path.cwd() / "@list.txt").resolve())


def test_an_empty_or_null_value_leaves_an_optional_parameter_unset():
    assert _resolved("retinaface", "image_list=")["image_list"] is None
    assert _resolved("retinaface", "image_list=null")["image_list"] is None


@pytest.mark.parametrize(
    "pair, says",
    [
        ("amp=maybe", "--param amp must be one of auto, on, off, not 'maybe'"),
        ("epochs=[1", "--param epochs must be an integer >= 1, not '[1'"),
        ("batch_size=%TAG", "--param batch_size must be an integer >= 1, not '%TAG'"),
    ],
)
def test_a_wrong_value_is_one_line_naming_what_it_takes(pair, says):
    with pytest.raises(UserError) as caught:
        _resolved("retinanet", pair)
    assert str(caught.value) == says


def test_a_yaml_boolean_for_a_string_parameter_says_to_quote_it():
    """invoke.yaml is still YAML: `amp: off` there arrives as False; the line says why."""
    with pytest.raises(UserError, match="quote it"):
        resolve_params(load_recipe("retinanet"), {"amp": False}, where="zoobox.retinanet")


def test_a_param_that_is_not_yaml_runs_the_plan_without_a_traceback(tmp_path):
    """The dry run with values YAML cannot read: the plan, exit 0, no traceback."""
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "invoke", "retinaface.all", "--dry", "--runner", "host"),
            *("--backend", "torchscript", "--artifacts", str(tmp_path)),
            *("--param", "soc_version=[1", "--param", "image_list=@list.txt"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "--soc-version '[1'" in proc.stdout or "--soc-version [1" in proc.stdout


BOMB = (
    "zoobox:\n"
    "  a: &a [x, x, x, x, x, x, x, x, x, x]\n"
    "  b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
    "  c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\n"
    "  d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
    "  e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\n"
    "  f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\n"
    "  g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f, *f]\n"
    "  h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g, *g]\n"
    "  i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h, *h]\n"
)


def test_anchors_and_aliases_in_invoke_yaml_are_refused(tmp_path):
    path = tmp_path / "invoke.yaml"
    path.write_text("zoobox:\n  runner: &r host\n  backend: auto\n")
    with pytest.raises(UserError, match=r"invoke.yaml: line 2: YAML anchor &r"):
        check_settings_file(path)
    path.write_text(BOMB)
    started = time.monotonic()
    with pytest.raises(UserError, match=r"invoke.yaml: line 2: YAML anchor &a"):
        check_settings_file(path)
    assert time.monotonic() - started < 5  # refused from the events, nothing expanded


def test_an_alias_bomb_in_invoke_yaml_is_one_error_line_not_a_hang(tmp_path):
    import shutil

    shutil.copy(REPO / "tasks.py", tmp_path / "tasks.py")
    (tmp_path / "invoke.yaml").write_text(BOMB)
    proc = subprocess.run(
        [sys.executable, "-m", "invoke", "--list"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        timeout=60,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.splitlines() == [
        "error: invoke.yaml: line 2: YAML anchor &a is not accepted here (nothing in it may "
        "be repeated by reference): write the value out"
    ]


def test_anchors_in_a_recipe_file_are_refused(tmp_path):
    from zoostage.recipe import RecipeError
    from zoostage.recipe import load_recipe as read_recipe

    folder = tmp_path / "models" / "aliased"
    folder.mkdir(parents=True)
    (folder / "recipe.yaml").write_text(
        "name: aliased\nstages: [&s {name: a, env: host, run: tests.toy.stage}]\n"
    )
    with pytest.raises(RecipeError, match=r"recipe\.yaml: line 2: YAML anchor &s"):
        read_recipe("aliased", str(tmp_path / "models"))
