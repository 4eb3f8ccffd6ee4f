"""The one-screen table printed at the end of a run, read from the report's summary.json."""

from __future__ import annotations

import json
from pathlib import Path

from zoobox.core.text import table


def _fmt(value, digits=2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def summary_rows(summary: dict) -> list[list[str]]:
    rows = []
    for row in summary.get("rows", []):
        unit = row.get("unit") or ""
        rows.append(
            [
                summary.get("recipe", ""),
                summary.get("backend") or "-",
                summary.get("device") or "-",
                row["metric"],
                f"{_fmt(row.get('measured'))} vs {_fmt(row.get('published'))} {unit}".strip(),
                _fmt(summary.get("throughput"), 1),
                row.get("status", ""),
            ]
        )
    return rows


HEADER = ["recipe", "backend", "device", "metric", "measured vs published", "images/s", "status"]


def render_summary(report_dir: Path) -> str:
    summary = json.loads((Path(report_dir) / "summary.json").read_text())
    text = table(summary_rows(summary), HEADER)
    if summary.get("subset"):
        text += f"\n{summary['subset']}"
    if summary.get("profile_note"):
        text += f"\n{summary['profile_note']}"
    if summary.get("weights") == "random":
        text += (
            "\nweights: seeded random initialisation -- accuracy is not meaningful; "
            "pass --weights PATH for the published checkpoint"
        )
    return text
