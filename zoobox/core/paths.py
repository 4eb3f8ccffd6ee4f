"""Where things are: the repository, and the default artifact and cache folders."""

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "zoobox"


def repo_relative(path) -> str:
    """A path as the user sees it in messages: relative to the repository when inside it."""
    try:
        return str(Path(path).resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(REPO), *args], capture_output=True, text=True, timeout=5
    ).stdout.strip()


def git_revision() -> str:
    """The repository's short commit, "-dirty" when tracked files changed; "unknown"."""
    try:
        rev = _git("rev-parse", "--short", "HEAD")
        dirty = _git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return (rev or "unknown") + ("-dirty" if dirty else "")
