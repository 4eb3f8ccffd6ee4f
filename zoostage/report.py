"""The report stage: measured numbers against the published ones, in Markdown.

    python -m zoostage.report --out OUT --recipe models/x/recipe.yaml \
        --export EXPORT_DIR --infer INFER_DIR --evaluate EVALUATE_DIR

Writes OUT/report.md, OUT/summary.json (one row per metric: measured, published,
tolerance, status) and copies the evaluation's figures beside the report.

A metric's status:
- pass / fail: accuracy within `tolerance` below the published value (or better);
- not meaningful: the network ran from a random initialisation;
- subset: evaluated on fewer images than the published number was;
- other device: a speed measured on another device than the published one;
- no <profile> number published: the profile that ran has no published number of its
  own (only the seed's pipeline published one): measured only, no verdict.
"""

import json
import os
import shutil

from zoostage import cli
from zoostage.errors import UserError
from zoostage.recipe import load_recipe
from zoostage.verdict import compare, profile_note


def _read_json(folder, name, required=True):
    path = os.path.join(folder, name) if folder else None
    if path and os.path.isfile(path):
        with open(path) as handle:
            return json.load(handle)
    if required:
        raise UserError("missing %s in %s: run the stage that writes it first" % (name, folder))
    return {}


def _latencies(stats):
    return "%s / %s" % (_fmt(stats.get("p50_ms")), _fmt(stats.get("p99_ms")))


def _fmt(value):
    if value is None:
        return "-"
    if isinstance(value, float):
        return "%.2f" % value
    return str(value)


def subset_note(images, full_images):
    """ "sample of N images: not the full-set number" when fewer than the full set ran."""
    if full_images and images is not None and images < full_images:
        return "sample of %d images: not the full-set number (published over %d)" % (
            images,
            full_images,
        )
    return None


def profile_fact(rows, profile):
    """The report's profile line: whose published numbers the rows compare with."""
    own = [row["metric"] for row in rows if row.get("own_number", True)]
    if len(own) == len(rows):
        return "%s (the published numbers above are this pipeline's)" % profile
    if not own:
        return "%s (no published number of its own: nothing above is judged)" % profile
    return "%s (published numbers of its own for %s only)" % (profile, ", ".join(own))


def render(recipe, rows, metrics_doc, timing, export, versions, figures, profile=None):
    weights = export.get("weights", "unknown")
    lines = ["# %s: zoobox report" % recipe.title, ""]
    if weights == "random":
        lines += [
            "> **Weights: seeded random initialisation.** Accuracy numbers below are "
            "not meaningful; they only show the pipeline runs end to end.",
            "",
        ]
    note = subset_note(metrics_doc.get("images"), recipe.dataset.get("images"))
    if note:
        lines += ["> **Subset: %s.**" % note, ""]
    profile = profile or "seed"
    unpublished = profile_note(rows, profile)
    if unpublished:
        lines += ["> **%s.**" % unpublished, ""]
    lines += [
        "| metric | measured | published | tolerance | status |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        unit = (" " + row["unit"]) if row["unit"] and row["published"] is not None else ""
        lines.append(
            "| %s | %s | %s%s | %s | %s |"
            % (
                row["metric"],
                _fmt(row["measured"]),
                _fmt(row["published"]),
                unit,
                _fmt(row["tolerance"]),
                row["status"],
            )
        )
    lines += ["", "## Where measured", ""]
    facts = [
        (
            "weights",
            "%s%s%s"
            % (
                weights,
                " (seed %s)" % export.get("seed") if weights == "random" else "",
                " from %s" % export["source"]
                if export.get("source") not in (None, weights)
                else "",
            ),
        ),
        ("images evaluated", metrics_doc.get("images")),
        ("profile", profile_fact(rows, profile)),
        ("backend", timing.get("backend")),
        ("device", timing.get("device")),
        ("batch size", timing.get("batch_size")),
        (
            "latency mean / p50 / p99 (ms)",
            "%s / %s / %s"
            % (_fmt(timing.get("mean_ms")), _fmt(timing.get("p50_ms")), _fmt(timing.get("p99_ms"))),
        ),
        ("throughput (images/s)", _fmt(timing.get("throughput"))),
    ]
    if timing.get("compute"):
        compute, end_to_end = timing["compute"], timing.get("end_to_end") or {}
        facts += [
            ("compute latency p50 / p99 (ms): forward only", _latencies(compute)),
            ("end-to-end latency p50 / p99 (ms): with copies", _latencies(end_to_end)),
            (
                "throughput compute / end-to-end (images/s)",
                "%s / %s" % (_fmt(compute.get("throughput")), _fmt(end_to_end.get("throughput"))),
            ),
            ("warm-up calls", timing.get("warmup_calls")),
        ]
    for key in (
        "python",
        "torch",
        "numpy",
        "onnxruntime",
        "torch_aie",
        "cann",
        "zoobox_env",
        "image",
        "lock",
        "hostname",
        "platform",
    ):
        if versions.get(key):
            facts.append((key, versions[key]))
    lines += ["| | |", "| --- | --- |"]
    lines += ["| %s | %s |" % (k, v) for k, v in facts]
    if figures:
        lines += ["", "## Figures", ""]
        lines += ["![%s](%s)" % (name, name) for name in figures]
    lines.append("")
    return "\n".join(lines)


def main(args):
    recipe = load_recipe(args.recipe)
    metrics_doc = _read_json(args.evaluate, "metrics.json")
    timing = _read_json(args.infer, "timing.json")
    export = _read_json(args.export, "export.json", required=False)
    infer_stage = _read_json(args.infer, "stage.json", required=False)
    versions = infer_stage.get("versions") or _read_json(args.infer, "env.json", required=False)
    npu = timing.get("backend") in ("aie", "om")
    full = recipe.dataset.get("images")
    rows = compare(
        recipe.published,
        metrics_doc.get("metrics") or {},
        timing,
        export.get("weights"),
        metrics_doc.get("images"),
        full,
        npu,
        profile=args.profile,
    )
    figures = []
    for name in metrics_doc.get("figures") or []:
        source = os.path.join(args.evaluate, name)
        if os.path.isfile(source):
            shutil.copyfile(source, os.path.join(args.out, name))
            figures.append(name)
    text = render(recipe, rows, metrics_doc, timing, export, versions, figures, args.profile)
    with open(os.path.join(args.out, "report.md"), "w") as handle:
        handle.write(text)
    summary = {
        "recipe": recipe.name,
        "title": recipe.title,
        "rows": rows,
        "weights": export.get("weights"),
        "backend": timing.get("backend"),
        "device": timing.get("device"),
        "throughput": timing.get("throughput"),
        "throughput_end_to_end": (timing.get("end_to_end") or {}).get("throughput"),
        "images": metrics_doc.get("images"),
        "full_images": full,
        "subset": subset_note(metrics_doc.get("images"), full),
        "weights_source": export.get("source"),
        "profile": args.profile,
        "profile_note": profile_note(rows, args.profile or "seed"),
    }
    cli.write_json(os.path.join(args.out, "summary.json"), summary)


def build_parser():
    parser = cli.parser(__doc__.splitlines()[0])
    parser.add_argument("--recipe", required=True, help="recipe.yaml path or recipe name")
    parser.add_argument("--export", help="the export stage's folder")
    parser.add_argument("--infer", required=True, help="the infer stage's folder")
    parser.add_argument("--evaluate", required=True, help="the evaluate stage's folder")
    parser.add_argument(
        "--profile",
        default="seed",
        help="the pipeline that ran (seed: the ModelZoo script's; upstream: the upstream "
        "repository's): picks the published numbers it is compared with",
    )
    return parser


if __name__ == "__main__":
    cli.run(main, build_parser())
