"""The two test lanes: the quick one (`pytest -m "not slow"`, while developing) keeps at
least one test of every test module; CI (.ci/run) runs everything, the slow ones too.

Read from the source (nothing is run): a test is slow when it, its class or its module
(`pytestmark`) carries `pytest.mark.slow`.
"""

import ast
import re

from tests.conftest import REPO

# Test modules with no quick test, and why.
ALL_SLOW = {
    "test_containers.py": "builds the export, aie and atc images in a container engine "
    "(minutes each) before any of its checks can run",
    "test_cluster_slurm.py": "starts munged, slurmctld and two slurmd in network namespaces "
    "before any job can run; its quick checks (scripts, sbatch order) are in test_cluster.py",
}


def _marks_slow(node) -> bool:
    """Whether a decorator list or a `pytestmark` value names pytest.mark.slow."""
    return any(
        isinstance(n, ast.Attribute) and n.attr == "slow" and "mark" in ast.unparse(n)
        for n in ast.walk(node)
    )


def quick_and_slow_tests(path):
    """(quick test names, slow test names) of one test module."""
    tree = ast.parse(path.read_text(), filename=str(path))
    module_slow = any(
        isinstance(node, ast.Assign)
        and any(getattr(t, "id", None) == "pytestmark" for t in node.targets)
        and _marks_slow(node.value)
        for node in tree.body
    )
    quick, slow = [], []

    def visit(body, inherited):
        for node in body:
            if isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
                marked = any(_marks_slow(d) for d in node.decorator_list)
                visit(node.body, inherited or marked)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if node.name.startswith("test"):
                    marked = any(_marks_slow(d) for d in node.decorator_list)
                    (slow if inherited or marked else quick).append(node.name)

    visit(tree.body, module_slow)
    return quick, slow


def test_the_reader_sees_each_way_of_marking_slow(tmp_path):
    module = tmp_path / "test_x.py"
    module.write_text(
        "import pytest\n"
        "def test_a(): pass\n"
        "@pytest.mark.slow\n"
        "def test_b(): pass\n"
        "@pytest.mark.slow\n"
        "class TestC:\n"
        "    def test_c(self): pass\n"
        "@pytest.mark.parametrize('x', [1])\n"
        "def test_d(x): pass\n"
    )
    assert quick_and_slow_tests(module) == (["test_a", "test_d"], ["test_b", "test_c"])
    module.write_text(
        "import pytest\npytestmark = [pytest.mark.container, pytest.mark.slow]\n"
        "def test_a(): pass\n"
    )
    assert quick_and_slow_tests(module) == ([], ["test_a"])


def test_every_test_module_keeps_a_quick_test():
    without = []
    for path in sorted((REPO / "tests").glob("test_*.py")):
        quick, slow = quick_and_slow_tests(path)
        if not quick and path.name not in ALL_SLOW:
            without.append(f"{path.name}: all {len(slow)} tests are slow")
    assert not without, "\n".join(without) + "\n(keep one quick test, or say why in ALL_SLOW)"


def test_the_modules_said_to_be_all_slow_are():
    for name in ALL_SLOW:
        quick, _ = quick_and_slow_tests(REPO / "tests" / name)
        assert not quick, f"{name} has quick tests now: take it out of ALL_SLOW"


def test_ci_runs_every_test():
    """.ci/run's pytest selects no marker: the slow and container tests run there."""
    script = (REPO / ".ci" / "run").read_text()
    runs = [line for line in script.splitlines() if re.search(r"-m pytest\b", line)]
    assert runs, ".ci/run runs no pytest"
    assert not [line for line in runs if re.search(r"\s-m\s+['\"]|-k\s|--deselect", line)], runs
    # ... and pytest's own defaults leave nothing out either.
    addopts = re.search(r"^addopts\s*=\s*(.*)$", (REPO / "pyproject.toml").read_text(), re.M)
    assert not addopts or "slow" not in addopts.group(1)
