"""Names that come from data (a dataset, a manifest, a recipe) turned into paths, safely.

A dataset decides the names of its images, events and ids; a crafted or damaged one can
name `../../somewhere/victim` or `/etc/x`. Every place that makes a path from such a name
goes through `child_path`, which returns the path under `root` or raises one UserError
naming the entry. Refused: a name that is not text, empty, holds a NUL byte, is absolute,
or has a `..` component -- so the path, read as text, is always inside `root`. With
`single=True` a name must also be one path component (no `/`): WIDER FACE event and image
names, for instance, each name one folder level.

Symbolic links are file-system content, not names: a dataset assembled from links (an
image folder, or each image, linked from another disk) is common and is read as it is.
A path written to (`writing=True`) must also *resolve* inside `root`, links followed:
a stage's output never lands outside its folder, whatever the folder holds.
"""

import os

from zoostage.errors import UserError


def _problem(name, single):
    """Why `name` cannot name something inside a folder, or None when it can."""
    if not isinstance(name, str):
        return "it is a %s, not text" % type(name).__name__
    if not name.strip():
        return "it is empty"
    if "\0" in name:
        return "it holds a NUL byte"
    if name.startswith("/") or os.path.isabs(name):
        return "it is an absolute path"
    parts = name.split("/")
    if ".." in parts:
        return "it has a '..' component"
    if single and len(parts) > 1:
        return "it has a '/' (one folder level is expected)"
    return None


def safe_name(name, single=False):
    """True when `name` may stand for something inside a folder (see check_name)."""
    return _problem(name, single) is None


def check_name(name, what, root, single=False):
    """Raise UserError when `name` cannot stand for something inside `root`."""
    problem = _problem(name, single)
    if problem is not None:
        raise UserError(
            "refusing %s %r from %s: %s (names from data must stay inside their folder); "
            "the file that lists it is damaged or crafted: replace it with the original"
            % (what, name, root, problem)
        )


def child_path(root, name, what="name", single=False, writing=False):
    """`root/name` for a name read from data; UserError when it would leave `root`.

    `what` says what the name is, for the error ("COCO file_name", "WIDER FACE event").
    With `writing`, a path that resolves outside `root` through a symbolic link inside
    it is refused too (`root` itself may be a link).
    """
    check_name(name, what, root, single)
    path = os.path.join(root, name)
    if not writing:
        return path
    real_root = os.path.realpath(root)
    real = os.path.realpath(path)
    if real != real_root and not real.startswith(real_root.rstrip(os.sep) + os.sep):
        raise UserError(
            "refusing %s %r from %s: it resolves to %s, outside %s (names from data must "
            "stay inside their folder); replace the link or the file that lists it"
            % (what, name, root, real, real_root)
        )
    return path
