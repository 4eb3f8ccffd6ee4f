"""The two sides and the host's layers, checked from the source (nothing is imported).

- The stage side (`models/`, `data_scripts/`, `zoostage/`) runs inside the containers, down
  to Python 3.7 + torch 1.5: it must never import the host package `zoobox`, neither by an
  import statement nor by a module name handed to importlib.
- The host package is layered: a layer imports only from itself and the layers below it,
  so the tree reads top-down (tasks -> jobs -> pipeline -> runners -> envs -> hosts -> core).
- The stage kit (`zoostage/`) sits below the recipes and the datasets: it imports neither
  `models` nor `data_scripts` (a recipe's module reaches it by a name the stage is given).
- No module of ours uses another module's private members (`from m import _x`, `m._x`,
  `obj._x` on anything but `self` / `cls`): what a module offers others is public.
"""

import ast
import re

import pytest

from tests.conftest import REPO

STAGE_SIDE = ("models", "data_scripts", "zoostage")
# The stage kit never imports these: the recipes and datasets are built on it, not under it.
ABOVE_THE_KIT = ("models", "data_scripts")
# Our code: where the private-member rule applies (tests may look inside what they test).
PRODUCT = ("zoobox", "zoostage", "models", "data_scripts", "bench", "tasks.py")
OUR_PACKAGES = {"zoobox", "zoostage", "models", "data_scripts", "tests"}
# Host layers, lowest first; `dev` (podman for development machines) sits beside them and
# may use core and hosts only; nothing of the product imports it but its own task.
# `cluster` (past one host) drives the pipeline and the jobs on each host.
HOST_LAYERS = ("core", "hosts", "envs", "runners", "pipeline", "jobs", "cluster", "tasks")
ALLOWED = {layer: set(HOST_LAYERS[: i + 1]) for i, layer in enumerate(HOST_LAYERS)}
ALLOWED["dev"] = {"core", "hosts", "dev"}
ALLOWED["tasks"].add("dev")

# A dotted module name inside a string: "zoobox.backends.torchscript".
_MODULE_STRING = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_]\w*)+$")


def python_files(*tops):
    for top in tops:
        path = REPO / top
        yield from [path] if path.suffix == ".py" else sorted(path.rglob("*.py"))


def imported_names(path):
    """Every module a file imports, statically or by a dotted name in a string.

    A string counts when it is a dotted module name (what importlib.import_module, a
    module table or `python -m` in a stage entry would take); relative imports are
    resolved against the file's package.
    """
    tree = ast.parse(path.read_bytes(), filename=str(path))
    package = ".".join(path.relative_to(REPO).with_suffix("").parts[:-1])
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found.append((name, node.lineno))
            # `from package import module` imports package.module
            found += [((name + "." if name else "") + a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if _MODULE_STRING.match(node.value):
                found.append((node.value, node.lineno))
    return found


def test_the_checker_sees_every_kind_of_import(tmp_path, monkeypatch):
    """The rule below can fail: a planted import of each kind is found."""
    monkeypatch.setattr("tests.test_layering.REPO", tmp_path)
    folder = tmp_path / "zoostage"
    folder.mkdir()
    planted = folder / "planted.py"
    planted.write_text(
        "import zoobox.core.paths\n"
        "from zoobox.pipeline import engine\n"
        "from .. import zoobox\n"
        "import importlib\n"
        "importlib.import_module('zoobox.jobs.ci')\n"
        "TABLE = {'torchscript': 'zoobox.backends.torchscript'}\n"
        "TEXT = 'not a module name'\n"
    )
    names = [name for name, _ in imported_names(planted)]
    assert "zoobox.core.paths" in names
    assert "zoobox.pipeline" in names
    assert "zoobox" in names  # `from .. import zoobox` from zoostage/ is the top level
    assert "zoobox.jobs.ci" in names and "zoobox.backends.torchscript" in names
    assert "not a module name" not in names


@pytest.mark.parametrize("top", STAGE_SIDE)
def test_stage_side_never_imports_the_host_package(top):
    offending = [
        f"{path.relative_to(REPO)}:{line} imports {name}"
        for path in python_files(top)
        for name, line in imported_names(path)
        if name == "zoobox" or name.startswith("zoobox.")
    ]
    assert not offending, "\n".join(offending)


def _layer(name):
    parts = name.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "zoobox" else None


def test_host_layers_import_downwards_only():
    offending = []
    for path in python_files("zoobox"):
        parts = path.relative_to(REPO).parts
        if len(parts) < 3:
            continue  # zoobox/__init__.py
        layer = parts[1]
        assert layer in ALLOWED, f"zoobox/{layer}/ is not a known layer: add it to the rule"
        for name, line in imported_names(path):
            target = _layer(name)
            if target is not None and target in ALLOWED and target not in ALLOWED[layer]:
                offending.append(f"{path.relative_to(REPO)}:{line} ({layer}) imports {name}")
    assert not offending, "\n".join(offending)


def test_recipe_stage_modules_are_stage_side():
    """Every `run:` of every recipe names a module of the stage side."""
    import yaml

    for recipe in sorted((REPO / "models").glob("*/recipe.yaml")):
        for stage in yaml.safe_load(recipe.read_text())["stages"]:
            assert stage["run"].split(".")[0] in STAGE_SIDE, (recipe, stage["name"])


def test_the_stage_kit_imports_no_recipe_and_no_dataset_package():
    offending = [
        f"{path.relative_to(REPO)}:{line} imports {name}"
        for path in python_files("zoostage")
        for name, line in imported_names(path)
        if name.split(".")[0] in ABOVE_THE_KIT
    ]
    assert not offending, "\n".join(offending)


# Underscored names the standard library documents as its public API.
DOCUMENTED = {"os._exit"}


def _private(name):
    return name.startswith("_") and not name.startswith("__")


def private_uses(path):
    """(line, text) for each use of another module's private member in a file."""
    tree = ast.parse(path.read_bytes(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            ours = node.level or (node.module or "").split(".")[0] in OUR_PACKAGES
            for alias in node.names:
                if ours and _private(alias.name):
                    found.append((node.lineno, f"from {node.module} import {alias.name}"))
        elif isinstance(node, ast.Attribute) and _private(node.attr):
            owner = node.value
            if not (isinstance(owner, ast.Name) and owner.id in ("self", "cls")):
                if ast.unparse(node) not in DOCUMENTED:
                    found.append((node.lineno, ast.unparse(node)))
    return sorted(found)


def test_the_private_member_checker_finds_each_kind(tmp_path):
    """The rule below can fail: planted uses of each kind are found, own ones are not."""
    planted = tmp_path / "planted.py"
    planted.write_text(
        "from zoobox.dev.podman import _log\n"
        "from torch_aie import _enums\n"  # a third party's module: its own business
        "from zoobox.envs import venvs\n"
        "venvs._scan('python')\n"
        "def shard(pipeline):\n"
        "    return pipeline._run_checked\n"
        "class A:\n"
        "    def f(self):\n"
        "        return self._x, cls._y, self.__dict__\n"
    )
    texts = [text for _, text in private_uses(planted)]
    assert texts == ["from zoobox.dev.podman import _log", "venvs._scan", "pipeline._run_checked"]


def test_no_module_uses_another_modules_private_members():
    offending = [
        f"{path.relative_to(REPO)}:{line} uses {text}"
        for path in python_files(*PRODUCT)
        for line, text in private_uses(path)
    ]
    assert not offending, "\n".join(offending)
