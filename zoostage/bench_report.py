"""Throughput per batch size against the published table: Markdown and a plot.

    python -m zoostage.bench_report --out OUT --recipe RECIPE.yaml --bench BENCH_DIR

Reads BENCH_DIR/bench.json ({"by_batch": {B: {"throughput": fps, ...}}}) and the recipe's
`published` throughput_bs<B> entries; writes OUT/bench.md (batch size, measured,
published, ratio) and OUT/fps_vs_batch.png.
"""

import json
import os

from zoostage import cli, params
from zoostage.errors import UserError
from zoostage.recipe import load_recipe
from zoostage.verdict import ratio, throughput_by_batch


def markdown(title, rows, where):
    lines = [
        "# %s: throughput per batch size" % title,
        "",
        "Measured with %s." % where,
        "",
        "| batch size | measured (images/s) | published (images/s) | measured / published |",
        "| --- | --- | --- | --- |",
    ]
    for size, measured, ref in rows:
        fraction = ratio(measured, ref)
        lines.append(
            "| %d | %s | %s | %s |"
            % (
                size,
                "%.2f" % measured if measured is not None else "-",
                "%.2f" % ref if ref is not None else "-",
                "%.2f" % fraction if fraction is not None else "-",
            )
        )
    lines += ["", "![throughput per batch size](fps_vs_batch.png)", ""]
    return "\n".join(lines)


def plot(path, title, rows):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 4))
    for column, label, style in ((1, "measured", "o-"), (2, "published", "s--")):
        points = [(r[0], r[column]) for r in rows if r[column] is not None]
        if points:
            axis.plot([p[0] for p in points], [p[1] for p in points], style, label=label)
    axis.set_xscale("log", base=2)
    axis.set_xticks([r[0] for r in rows])
    axis.set_xticklabels([str(r[0]) for r in rows])
    axis.set_xlabel("batch size")
    axis.set_ylabel("images/s")
    axis.set_title(title)
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def main(args):
    path = os.path.join(args.bench, "bench.json")
    if not os.path.isfile(path):
        raise UserError("no bench.json in %s: run the bench measurement first" % args.bench)
    with open(path) as handle:
        bench = json.load(handle)
    recipe = load_recipe(args.recipe)
    rows = throughput_by_batch(bench.get("by_batch") or {}, recipe.published)
    title = recipe.title
    where = "%s, %s loops" % (bench.get("tool", "the bench stage"), bench.get("loop", "?"))
    with open(os.path.join(args.out, "bench.md"), "w") as handle:
        handle.write(markdown(title, rows, where))
    plot(os.path.join(args.out, "fps_vs_batch.png"), title, rows)
    for size, measured, ref in rows:
        print(
            "batch %3d: %8s images/s (published %s)"
            % (
                size,
                "%.1f" % measured if measured is not None else "-",
                "%.1f" % ref if ref is not None else "-",
            )
        )


def build_parser():
    return cli.parser(__doc__.splitlines()[0], params.BENCH_REPORT)


if __name__ == "__main__":
    cli.run(main, build_parser())
