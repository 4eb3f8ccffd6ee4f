"""Merging the outputs of one stage run as N shards (one per device) into one output.

    python -m zoostage.shards --out OUT SHARD_DIR [SHARD_DIR ...]

Shards split the images, so their outputs are disjoint. File by file:
- `timing.json`: one record for the whole run (see merge_timing);
- a JSON list (COCO results): concatenated;
- a JSON object with an "images" object (per-image detections): the images merged;
- another JSON object (a run summary): counts summed (COUNT_KEYS, and any key the
  summary lists under "counts"), other equal values kept, other numbers summed;
- any other file: copied; the same relative path in two shards must be identical.
"""

import filecmp
import json
import os
import shutil

from zoostage import cli
from zoostage.errors import UserError

SKIP = ("env.json", "stage.json", "status.json")  # the merge writes its own
# Keys of a run summary that count things: each shard counts its own part, so they add
# up even when two shards happen to count the same.
COUNT_KEYS = ("images", "detections", "skipped", "calls", "boxes", "faces")


def parse_shard(text):
    """'I/N' -> (I, N) with 0 <= I < N; None or '' -> (0, 1)."""
    if not text:
        return 0, 1
    try:
        index, count = [int(part) for part in str(text).split("/")]
    except ValueError:
        raise UserError("--shard must be I/N with integers, e.g. 0/2, not %r" % (text,)) from None
    if count < 1 or not 0 <= index < count:
        raise UserError("--shard I/N needs 0 <= I < N, not %r" % (text,))
    return index, count


def shard_indices(total, text):
    """The records a shard runs: I, I+N, I+2N, ... of `total` (all of them for no shard)."""
    index, count = parse_shard(text)
    return list(range(index, total, count))


def merge_timing(records):
    """One timing record from per-shard records of devices that ran side by side.

    Throughput adds up (the devices ran concurrently); the mean latency is weighted by
    calls; p50 is the median of the shards' p50 and p99 the worst shard's p99 (per-call
    latencies are not kept, so these are the honest bounds available).
    """
    records = [r for r in records if r.get("calls")]
    if not records:
        return {"calls": 0, "images": 0, "shards": 0}
    calls = [r["calls"] for r in records]
    merged = dict(records[0])
    merged.pop("shard", None)
    merged.update(_merge_stats(records, calls))
    # The compute / end-to-end split of the harness, merged the same way.
    for kind in ("compute", "end_to_end"):
        parts = [(r[kind], r["calls"]) for r in records if r.get(kind)]
        if len(parts) == len(records):
            merged[kind] = dict(records[0][kind])
            merged[kind].update(_merge_stats([s for s, _ in parts], [c for _, c in parts]))
    merged.update(
        {
            "calls": sum(calls),
            "images": sum(r.get("images", 0) for r in records),
            "shards": len(records),
            "devices": [r.get("device") for r in records],
        }
    )
    return merged


def _merge_stats(stats, calls):
    """mean / p50 / p99 / throughput of shards that ran side by side (see merge_timing)."""
    total = sum(calls)
    p50 = sorted(s["p50_ms"] for s in stats)
    return {
        "mean_ms": sum(s["mean_ms"] * c for s, c in zip(stats, calls)) / total,
        "p50_ms": p50[len(p50) // 2],
        "p99_ms": max(s["p99_ms"] for s in stats),
        "throughput": sum(s["throughput"] for s in stats),
    }


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _merge_summaries(name, docs):
    """Per-shard run summaries: settings agree, counts add up, the shard ids go."""
    merged = {}
    counts = set(COUNT_KEYS) | set(docs[0].get("counts") or ())
    for key in docs[0]:
        values = [d.get(key) for d in docs]
        if key == "shard":
            continue
        numbers = all(_is_number(v) for v in values)
        if key in counts and numbers:
            merged[key] = sum(values)
        elif all(v == values[0] for v in values):
            merged[key] = values[0]
        elif numbers:
            merged[key] = sum(values)
        else:
            raise UserError(
                "cannot merge %s from %d shards: %r differs (%s)"
                % (name, len(docs), key, ", ".join(repr(v) for v in values))
            )
    merged["shards"] = len(docs)
    return merged


def _merge_json(path_out, sources):
    docs = []
    for source in sources:
        with open(source) as handle:
            docs.append(json.load(handle))
    if os.path.basename(path_out) == "timing.json":
        merged = merge_timing(docs)
    elif all(isinstance(d, list) for d in docs):
        merged = [item for d in docs for item in d]
    elif all(isinstance(d, dict) and isinstance(d.get("images"), dict) for d in docs):
        merged = dict(docs[0])
        merged["images"] = {}
        for d in docs:
            merged["images"].update(d["images"])
    elif all(isinstance(d, dict) for d in docs):
        merged = _merge_summaries(os.path.basename(path_out), docs)
    else:
        raise UserError(
            "cannot merge %s from %d shards: not a list, timing record or "
            "per-image object" % (os.path.basename(path_out), len(docs))
        )
    cli.write_json(path_out, merged)


def merge(out, shard_dirs):
    by_path = {}
    for shard in shard_dirs:
        for dirpath, _, filenames in os.walk(shard):
            for name in filenames:
                rel = os.path.relpath(os.path.join(dirpath, name), shard)
                if rel in SKIP:
                    continue
                by_path.setdefault(rel, []).append(os.path.join(dirpath, name))
    for rel, sources in sorted(by_path.items()):
        target = os.path.join(out, rel)
        folder = os.path.dirname(target)
        if folder and not os.path.isdir(folder):
            os.makedirs(folder)
        if len(sources) > 1 and rel.endswith(".json"):
            _merge_json(target, sources)
            continue
        for other in sources[1:]:
            if not filecmp.cmp(sources[0], other, shallow=False):
                raise UserError(
                    "shards disagree on %s: %s differs from %s" % (rel, other, sources[0])
                )
        shutil.copyfile(sources[0], target)


def main(args):
    merge(args.out, args.shards)


def build_parser():
    parser = cli.parser(__doc__.splitlines()[0])
    parser.add_argument("shards", nargs="+", help="the shard output folders")
    return parser


if __name__ == "__main__":
    cli.run(main, build_parser())
