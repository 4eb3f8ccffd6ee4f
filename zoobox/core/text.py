"""Plain-text output shared by every layer: command lines and aligned tables."""

from __future__ import annotations

import shlex


def quote(argv) -> str:
    """An argv as one shell line that can be pasted to rerun it."""
    return shlex.join(str(a) for a in argv)


def table(rows: list[list[str]], header: list[str]) -> str:
    """Columns padded to their widest cell, a dashed line under the header."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = "  ".join("-" * w for w in widths)
    out = ["  ".join(str(h).ljust(w) for h, w in zip(header, widths)), line]
    out += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(out)
