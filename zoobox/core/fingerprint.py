"""Fingerprints: what a stage's result depends on, hashed.

A stage is up to date when its fingerprint -- its code, its parameters, its inputs, its
environment -- equals the one recorded in its stage.json. The code part follows the
stage module's imports inside the repository (statically, with `ast`: nothing is
imported), so editing the evaluator reruns evaluation but not the export.

Modules loaded at run time count too: a string constant that is a dotted module name
resolving to a repository file (`"zoostage.backends.torchscript"` in the backends table,
handed to importlib) is followed like an import. Over-counting costs a rerun at most;
missing one would keep a stale result.
"""

from __future__ import annotations

import ast
import errno
import hashlib
import json
import os
import re
import stat as stat_module
from functools import lru_cache
from pathlib import Path

from zoobox.core.errors import UserError
from zoobox.core.outputs import scan
from zoobox.core.paths import REPO


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def sha256_json(data) -> str:
    return sha256_text(json.dumps(data, sort_keys=True, default=str))


def _module_file(module: str, repo: Path) -> Path | None:
    parts = module.split(".")
    # Only packages of the repository count; everything else is third-party.
    if not (repo / parts[0] / "__init__.py").is_file():
        return None
    base = repo.joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


# "a.b" or "a.b.c": what importlib.import_module takes for a module inside a package.
_DOTTED = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)+$")


def _imports(path: Path, module: str) -> set[str]:
    tree = ast.parse(path.read_bytes(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            found.add(prefix)
            # `from pkg import module` may name a submodule
            found.update(f"{prefix}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if _DOTTED.match(node.value):
                found.add(node.value)  # a module loaded at run time (importlib)
    # importing a.b.c runs a/__init__ and a/b/__init__ too
    for name in list(found):
        parts = name.split(".")
        found.update(".".join(parts[:i]) for i in range(1, len(parts)))
    return found


def code_files(module: str, repo: Path = REPO) -> list[Path]:
    """The repository files a module runs: itself and what it imports, transitively."""
    return list(_code_files(module, str(repo)))


@lru_cache(maxsize=None)
def _code_files(module: str, repo_text: str) -> tuple[Path, ...]:
    repo = Path(repo_text)
    seen: dict[str, Path] = {}
    todo = [module]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        path = _module_file(name, repo)
        if path is None:
            continue
        seen[name] = path
        todo.extend(_imports(path, name) - set(seen))
    return tuple(sorted(set(seen.values())))


def modules_named(values, repo: Path = REPO) -> list[str]:
    """The values that name a module of the repository ("models.retinaface.onnx_weights").

    A stage given a module by name (a recipe's `weights.convert`) imports it at run
    time: that module is the stage's code as much as its static imports are.
    """
    return sorted(
        {v for v in values if isinstance(v, str) and _DOTTED.match(v) and _module_file(v, repo)}
    )


def code_fingerprint(module: str, repo: Path = REPO, named: tuple[str, ...] = ()) -> str:
    """sha256 of the files `module` runs, and those of the modules `named` to it."""
    digest = hashlib.sha256()
    files = code_files(module, repo)
    if not files:
        raise UserError(f"stage module {module} does not exist in {repo}")
    for extra in named:
        files = sorted(set(files) | set(code_files(extra, repo)))
    for path in files:
        digest.update(str(path.relative_to(repo)).encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()


def tree_fingerprint(root: str | os.PathLike, exclude: tuple[str | os.PathLike, ...] = ()) -> str:
    """A fast fingerprint of a folder or file: names, sizes and mtimes, not contents.

    Datasets are gigabytes; a changed, added or removed file changes this in
    milliseconds, which is what deciding "rerun or not" needs. Symbolic links are
    followed, as reading the dataset follows them (an images/ folder on another disk),
    and a link that points back at a folder it is in is a UserError, as is one that
    loops on itself. Names are bytes (os.fsencode): any name a file system holds.
    Folders in `exclude` (the artifact folder, when it lies inside the dataset) are
    left out: what zoobox writes there is not the dataset.
    """
    root = Path(root)
    digest = hashlib.sha256()
    try:
        info = os.stat(root)
    except FileNotFoundError:
        return "missing"
    except OSError as error:
        raise _unreadable(root, error) from None
    if not stat_module.S_ISDIR(info.st_mode):
        name = os.fsencode(root.name)
        digest.update(name + f"\0{info.st_size}\0{info.st_mtime_ns}".encode())
        return digest.hexdigest()
    skip = set()
    for folder in exclude:
        try:
            found = os.stat(folder)
        except OSError:
            continue
        skip.add((found.st_dev, found.st_ino))
    _walk_tree(os.fsencode(root), b".", digest, [(info.st_dev, info.st_ino)], skip)
    return digest.hexdigest()


def _unreadable(path, error: OSError) -> UserError:
    if error.errno == errno.ELOOP:
        return UserError(
            f"{os.fsdecode(path)} is a symbolic link that loops (it leads back to itself): "
            "remove or fix the link in the dataset"
        )
    return UserError(
        f"cannot read {os.fsdecode(path)} ({error.strerror or error}): fix its permissions "
        "or remove it from the dataset"
    )


def _walk_tree(folder: bytes, rel: bytes, digest, ancestors: list, skip: set) -> None:
    """os.walk's order (files sorted, then each folder), following links to folders.

    Each file adds b"<rel>/<name>\\0<size>\\0<mtime_ns>\\n", the bytes the walk always
    hashed, so the fingerprint of a tree without links or odd names is unchanged.
    """
    try:
        entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
    except OSError as error:
        raise _unreadable(folder, error) from None
    folders = []
    for entry in entries:
        try:
            info = entry.stat()  # follows links
        except FileNotFoundError:
            if entry.is_symlink():  # a dangling link: its target text is what there is
                target = os.readlink(entry.path)
                digest.update(rel + b"/" + entry.name + b"\0->" + target + b"\n")
            continue  # removed while we walk
        except OSError as error:
            raise _unreadable(entry.path, error) from None
        if stat_module.S_ISDIR(info.st_mode):
            folders.append((entry, (info.st_dev, info.st_ino)))
            continue
        digest.update(rel + b"/" + entry.name + f"\0{info.st_size}\0{info.st_mtime_ns}\n".encode())
    for entry, identity in folders:
        if identity in skip:
            continue
        if identity in ancestors:
            raise UserError(
                f"{os.fsdecode(entry.path)} is a symbolic link to a folder that contains it "
                f"({os.fsdecode(os.path.realpath(entry.path))}): a loop; remove or fix the "
                "link in the dataset"
            )
        child = entry.name if rel == b"." else rel + b"/" + entry.name
        _walk_tree(entry.path, child, digest, [*ancestors, identity], skip)


def content_digest(folder: str | os.PathLike, exclude: tuple[str, ...] = ()) -> str:
    """sha256 over a folder's files (relative names and contents), `exclude`d names left out.

    What a stage produced, by content: a downstream stage fingerprints its inputs with
    this, so an upstream rerun that writes byte-identical outputs reruns nothing below it.
    """
    return scan(folder, exclude)[0]
