"""What a stage's fingerprint covers, and how to say which part changed.

A stage's fingerprint hashes these parts:

    module     the stage module
    code       the repository files it runs (static imports and modules named as strings,
               in its code or in its arguments: a recipe's weights.convert module)
    args       its rendered arguments, roots replaced by names (<artifacts>, <data>, ...)
    inputs     each upstream stage's output, by content (stage.json's output_digest)
    external   every other file or folder its arguments name, wherever it lives: the
               dataset, a given checkpoint, demo data kept inside the artifact folder
    env        what identifies the environment it runs in (image id, venv hash, versions)
    npu        whether it runs on the NPU

Exempt from `external`: upstream outputs (covered by `inputs`, by content) and the
recipe's `{work}` folder (state a stage keeps across its own runs). The weights cache
counts as the one file the recipe uses from it, not the whole folder.
"""

from __future__ import annotations

import os
from pathlib import Path

from zoobox.core.fingerprint import code_fingerprint, modules_named, tree_fingerprint

# How each part is named in a "changed: ..." reason.
PART_NAMES = {
    "module": "stage module",
    "code": "code",
    "args": "parameters",
    "inputs": "upstream",
    "external": "input files",
    "env": "environment",
    "npu": "NPU use",
}


def is_under(value: str, root: str) -> bool:
    return value == root or value.startswith(root.rstrip(os.sep) + os.sep)


def external_inputs(
    args: list[str], exempt: list[str], cache: str, cache_file, portable, inside=()
):
    """{portable path: tree fingerprint} of the existing absolute paths `args` name.

    Paths under an `exempt` root are left out. `cache` (the weights cache folder) stands
    for `cache_file` inside it: a new file in the cache changes nothing else. Folders in
    `inside` (the artifact folder) are left out of the trees they lie in: a dataset
    holding the artifact folder would otherwise change with every stage that runs.
    """
    found = {}
    for value in args:
        if value.startswith("-") or not os.path.isabs(value):
            continue
        if any(is_under(value, root) for root in exempt):
            continue
        if value == cache:
            if cache_file:
                target = os.path.join(cache, cache_file)
                found[portable(target)] = tree_fingerprint(target)
            continue
        if os.path.lexists(value):
            found[portable(value)] = tree_fingerprint(value, exclude=tuple(inside))
    return found


def parts_for(call, upstream: dict, external: dict, env: dict, portable) -> dict:
    """The fingerprint's parts for one planned stage call."""
    return {
        "module": call.module,
        # Modules its arguments name are imported by name at run time: code too.
        "code": code_fingerprint(call.module, named=tuple(modules_named(call.args))),
        "args": [portable(a) for a in call.args],
        "inputs": upstream,
        "external": external,
        "env": env,
        "npu": call.needs_npu,
    }


def what_changed(record: dict, parts: dict) -> str:
    """'code, upstream export' and the like: the parts that differ from the last run's."""
    old = record.get("fingerprint_parts")
    if not isinstance(old, dict):
        return "recorded by an older zoobox"
    changed = []
    for key, name in PART_NAMES.items():
        before, now = old.get(key), parts.get(key)
        if before == now:
            continue
        if key in ("inputs", "external") and isinstance(before, dict) and isinstance(now, dict):
            names = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
            changed.append(f"{name} {', '.join(Path(n).name or n for n in names)}")
        else:
            changed.append(name)
    return ", ".join(changed) or "fingerprint"
