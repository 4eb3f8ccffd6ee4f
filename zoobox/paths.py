"""Where things are: the repository, and the default artifact and cache folders."""

import os
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "zoobox"
