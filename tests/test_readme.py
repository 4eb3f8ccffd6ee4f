"""Every command in the README runs as written.

The README's ```sh blocks are extracted and each command is checked the way its program
would take it: an `invoke` command is parsed by invoke's own parser against the task tree
(an unknown task or option fails), a `pip install` line's extras must exist in
pyproject.toml, a `pytest -m` lane must name a declared marker. The slow test then
dry-runs (`--dry`) every recipe command that takes `--dry`, as a user would.
"""

import os
import re
import shlex
import subprocess
import sys

import pytest
from invoke.parser import ParseError, Parser

from tests.conftest import REPO

# Python < 3.11 has no tomllib (the host side supports 3.9): the pyproject checks need it.
tomllib = pytest.importorskip("tomllib", reason="Python < 3.11: no tomllib to read pyproject.toml")

README = REPO / "README.md"
_SH_BLOCK = re.compile(r"^```sh\n(.*?)^```", re.S | re.M)


def shell_commands(markdown: str) -> list[list[str]]:
    """The argv of each command in the ```sh blocks: continuations joined, comments dropped,
    `a && b` split into two commands."""
    commands = []
    for block in _SH_BLOCK.findall(markdown):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            while words:
                if "&&" in words:
                    cut = words.index("&&")
                    commands.append(words[:cut])
                    words = words[cut + 1 :]
                else:
                    commands.append(words)
                    words = []
    return commands


def _invoke_parser() -> Parser:
    from invoke import Program

    from zoobox.tasks import build_namespace

    namespace = build_namespace()
    program = Program(namespace=namespace)
    return Parser(initial=program.initial_context, contexts=namespace.to_contexts())


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def problems(command: list[str], parser: Parser, pyproject: dict) -> list[str]:
    """What is wrong with one README command ([] when it would run as written)."""
    text = shlex.join(command)
    if command[0] == "invoke" or command[:3] == ["python3", "-m", "invoke"]:
        argv = command[2:] if command[0] == "python3" else command[1:]
        if not argv:
            return [f"{text}: names no task"]
        try:
            parsed = parser.parse_argv(argv)
        except ParseError as error:
            return [f"{text}: {error}"]
        if not any(context.name for context in parsed):
            return [f"{text}: names no task"]
        return []
    if command[:4] == ["python3", "-m", "pip", "install"]:
        extras = pyproject["project"]["optional-dependencies"]
        found = []
        for word in command[4:]:
            match = re.fullmatch(r"\.\[([\w,]+)\]", word)
            if match:
                found += [
                    f"{text}: no extra {extra!r} in pyproject.toml"
                    for extra in match[1].split(",")
                    if extra not in extras
                ]
            elif word != "-e" and not re.fullmatch(r"[A-Za-z0-9_.-]+==[\w.]+", word):
                found.append(f"{text}: {word!r} is neither a pinned requirement nor '.[extras]'")
        return found
    if command[:3] == ["python3", "-m", "pytest"]:
        args = command[3:]
        if "-m" in args:
            markers = [
                m.split(":")[0] for m in pyproject["tool"]["pytest"]["ini_options"]["markers"]
            ]
            expression = args[args.index("-m") + 1]
            unknown = set(re.findall(r"\w+", expression)) - {"not", "and", "or"} - set(markers)
            if unknown:
                return [f"{text}: marker(s) {sorted(unknown)} not declared in pyproject.toml"]
        return []
    return [f"{text}: the README test does not know how to check this command; teach it"]


def test_readme_has_commands_to_check():
    commands = shell_commands(README.read_text())
    assert any(c[0] == "invoke" for c in commands)
    assert ["python3", "-m", "pytest", "-m", "not slow"] in commands  # the quick lane


def test_every_readme_command_would_run_as_written():
    parser, pyproject = _invoke_parser(), _pyproject()
    found = [
        p
        for command in shell_commands(README.read_text())
        for p in problems(command, parser, pyproject)
    ]
    assert not found, "\n".join(found)


def test_the_checker_refuses_what_does_not_exist():
    """Each kind of mistake the README could make is caught."""
    markdown = (
        "```sh\n"
        "invoke retinaface.al --data /d        # a task that does not exist\n"
        "invoke retinaface.all --no-such-flag  # an option that does not exist\n"
        "invoke images.build --env aie && invoke images.bild\n"
        "python3 -m pip install -e '.[onnx,gpu]'\n"
        'python3 -m pytest -m "not quick"\n'
        "make everything\n"
        "```\n"
        "```\ninvoke not.checked  # not a sh block\n```\n"
    )
    commands = shell_commands(markdown)
    assert len(commands) == 7
    parser, pyproject = _invoke_parser(), _pyproject()
    found = [problems(command, parser, pyproject) for command in commands]
    assert [bool(f) for f in found] == [True, True, False, True, True, True, True]
    assert "'gpu'" in found[4][0] and "'onnx'" not in found[4][0]
    assert "quick" in found[5][0]


def test_continuations_and_comments_are_read_as_the_shell_does():
    markdown = "```sh\ninvoke retinanet.train --devices 0,1 \\\n    --param a=b  # why\n```\n"
    assert shell_commands(markdown) == [
        ["invoke", "retinanet.train", "--devices", "0,1", "--param", "a=b"]
    ]


def _recipe_commands_with_dry():
    commands = []
    for command in shell_commands(README.read_text()):
        if command[0] == "invoke" and "." in command[1]:
            recipe = command[1].split(".")[0]
            if (REPO / "models" / recipe / "recipe.yaml").is_file():
                commands.append(command)
    return commands


@pytest.mark.slow
@pytest.mark.parametrize("command", _recipe_commands_with_dry(), ids=shlex.join)
def test_readme_recipe_command_dry_runs(command, tmp_path):
    """`--dry` plans the stages and prints their commands; nothing runs.

    The dataset and weights paths the README names (/data/..., a .pth) are not on this
    machine: a dry run does not read them, so the command must still plan.
    """
    argv = [*command[1:]]
    if "docker" in argv:
        from zoobox.hosts.detect import container_engine

        engine = container_engine()
        if not engine.reachable:
            pytest.skip(f"no container engine answers ({engine.detail}): nothing to plan on")
    if "--dry" not in argv:
        argv.append("--dry")
    env = dict(os.environ, INVOKE_ZOOBOX_ARTIFACTS=str(tmp_path / "artifacts"))
    result = subprocess.run(
        [sys.executable, "-m", "invoke", *argv],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "would run" in result.stdout or "skip" in result.stdout
