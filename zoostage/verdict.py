"""Measured vs published: the one rule every report applies (inference, bench, training).

An accuracy passes when it is at least the published value minus the recipe's tolerance,
and is only judged when the comparison is fair: real weights, the whole evaluation set,
a finished training. A speed is only information, and says so when it was measured on
another device than the published one.
"""

PASS = "pass"
FAIL = "fail"


def accuracy_status(
    measured,
    published,
    tolerance=0.0,
    weights=None,
    images=None,
    full_images=None,
    partial=False,
):
    """pass / fail, or why the number cannot be judged against the published one."""
    if published is None:
        return "no published number"
    if measured is None:
        return "not measured"
    if weights == "random":
        return "not meaningful"
    if partial:
        return "partial training"
    if full_images and images is not None and images < full_images:
        return "subset"
    return PASS if measured >= published - (tolerance or 0.0) else FAIL


def speed_status(measured, published, reference_device, device=None):
    """'info' on the published device; 'other device' elsewhere (never pass or fail)."""
    if published is None:
        return "no published number"
    if measured is None:
        return "not measured"
    if reference_device:
        return "info"
    return "other device (%s)" % device if device else "other device"


def ratio(measured, published):
    """measured / published, or None when either is missing or zero."""
    if not measured or not published:
        return None
    return float(measured) / float(published)


def throughput_by_batch(by_batch, published):
    """[(batch size, measured images/s or None, published or None)] over both tables.

    `by_batch` is {"B": {"throughput": fps}}; the recipe publishes `throughput_bs<B>`.
    """
    sizes = set(int(b) for b in by_batch)
    for key in published:
        if key.startswith("throughput_bs"):
            sizes.add(int(key[len("throughput_bs") :]))
    rows = []
    for size in sorted(sizes):
        measured = (by_batch.get(str(size)) or {}).get("throughput")
        reference = (published.get("throughput_bs%d" % size) or {}).get("value")
        rows.append((size, measured, reference))
    return rows


# What a published throughput's time covers (recipe `published.<metric>.span`):
# forward: the network's forward on the device, input already there (the harness's
#   compute; what most seeds time);
# graph: the reference's whole compiled graph, where zoobox runs its last ops on the host
#   (RetinaNet: the seed's graph ends with an on-device batch NMS): compute plus that
#   host time per image (zoostage.infer.graph_span).
SPANS = {
    "forward": "forward only, input on the device",
    "graph": "the whole compiled graph",
}


def span_of(ref):
    return ref.get("span") or "forward"


def run_speed(timing, span="forward"):
    """The images/s of the batch that ran, over `span` (None when not measured)."""
    if span == "graph":
        return (timing.get("graph") or {}).get("throughput")
    return timing.get("throughput")


def measured_speed(key, timing, span="forward"):
    """The measured figure of a published speed metric from an infer timing record,
    over the same span as the published one (None when that span was not measured)."""
    if span == "graph":
        ran = "throughput_bs%s" % timing.get("batch_size")
        return run_speed(timing, span) if key in ("throughput", ran) else None
    if key == "throughput":
        return timing.get("throughput")
    batch = key.replace("throughput_bs", "")
    return ((timing.get("by_batch") or {}).get(batch) or {}).get("throughput")


DEFAULT_PROFILE = "seed"


def published_for(ref, profile=DEFAULT_PROFILE):
    """A published entry as it applies to a profile.

    An entry's own value is the seed's (the ModelZoo script's) number; `profiles` gives
    the numbers another pipeline was published with, e.g. {upstream: {value: 38.6}}. A
    profile with no number of its own gets none (value None, `own_number` False): the
    seed's number belongs to another pipeline, so nothing is compared with it.
    """
    override = (ref.get("profiles") or {}).get(profile)
    merged = dict(ref)
    merged.pop("profiles", None)
    merged["own_number"] = True
    if override:
        merged.update(override)
    elif profile != DEFAULT_PROFILE:
        merged.update(value=None, tolerance=None, own_number=False)
        merged["note"] = "published for the %s profile only (%s%s); none for the %s profile" % (
            DEFAULT_PROFILE,
            ref.get("value"),
            " " + ref["unit"] if ref.get("unit") else "",
            profile,
        )
    return merged


def no_number_status(profile):
    """The status of a metric whose profile has no published number: no verdict."""
    return "no %s number published" % profile


def profile_note(rows, profile):
    """One line for report.md and the console when some metrics have no published number
    of this profile's own, else None."""
    missing = [row["metric"] for row in rows if row.get("own_number") is False]
    if not missing:
        return None
    return (
        "profile %s: no published number of its own for %s; those rows are measured only, "
        "with no verdict (the %s profile's numbers come from another pipeline)"
        % (profile, ", ".join(missing), DEFAULT_PROFILE)
    )


def speed_key(batch_size):
    """The one name of a throughput metric: throughput_bs<B> (images/s at batch B)."""
    return "throughput_bs%d" % int(batch_size)


def _speed_row(published, timing, npu, profile):
    """The throughput of the batch that ran, against the figure published for that batch.

    Never against another batch's figure: a bs 4 run beside the bs 1 number says nothing.
    """
    batch = int(timing["batch_size"])
    key = speed_key(batch)
    span = span_of(published[key]) if key in published else "forward"
    measured = run_speed(timing, span)
    if key not in published:
        units = [e.get("unit") for e in published.values() if isinstance(e, dict)]
        return {
            "metric": key,
            "published": None,
            "unit": next((u for u in units if u == "images/s"), "images/s"),
            "tolerance": None,
            "measured": measured,
            "where": "",
            "note": "",
            "own_number": None,  # no figure for this batch, whatever the profile
            "status": "none published for bs %d" % batch,
            "span": span_description(span, timing),
        }
    ref = published_for(published[key], profile)
    if not ref["own_number"]:
        status = no_number_status(profile)
    else:
        status = speed_status(measured, ref.get("value"), npu)
    row = _row(key, ref, measured, status)
    row["span"] = span_description(span, timing)
    return row


def _row(key, ref, measured, status):
    """One compared metric: the published entry as it applies, the measure, the status."""
    return {
        "metric": key,
        "published": ref.get("value"),
        "unit": ref.get("unit", ""),
        "tolerance": ref.get("tolerance"),
        "measured": measured,
        "where": ref.get("where", ""),
        "note": ref.get("note", ""),
        "own_number": ref["own_number"],
        "status": status,
    }


def compare(published, metrics, timing, weights, images, full_images, npu, profile=None):
    """One row per published metric of an inference recipe, with its status.

    Each metric is compared with the number published for `profile` (default: seed); a
    metric with none for that profile is measured only (`own_number` False, no verdict).
    When the timing record says which batch ran, the speed is one row,
    throughput_bs<B>, compared only with the figure published for that batch ("none
    published for bs B" when there is none); the other batches' figures belong to the
    bench report. A record without a batch size (an old one) is read per published key.
    """
    profile = profile or DEFAULT_PROFILE
    rows = []
    batch_known = bool(timing.get("batch_size"))
    speed_done = False
    for key, entry in published.items():
        ref = published_for(entry, profile)
        speed = bool(ref.get("speed"))
        if speed and batch_known:
            if not speed_done:
                rows.append(_speed_row(published, timing, npu, profile))
                speed_done = True
            continue
        measured = measured_speed(key, timing, span_of(ref)) if speed else metrics.get(key)
        if not ref["own_number"]:
            status = no_number_status(profile)
        elif speed:
            status = speed_status(measured, ref.get("value"), npu)
        else:
            status = accuracy_status(
                measured,
                ref.get("value"),
                ref.get("tolerance"),
                weights=weights,
                images=images,
                full_images=full_images,
            )
        rows.append(_row(key, ref, measured, status))
        if speed:
            rows[-1]["span"] = span_description(span_of(ref), timing)
    if batch_known and not speed_done and timing.get("throughput") is not None:
        rows.append(_speed_row(published, timing, npu, profile))
    return rows


def span_description(span, timing):
    """What the measured figure of a speed row covers, in words."""
    if span == "graph":
        graph = timing.get("graph") or {}
        if not graph:
            return "the whole graph (published); not measured: no host part was timed"
        return "%s, as the published number's whole graph (%.2f ms per image on the host)" % (
            graph.get("span"),
            graph.get("tail_ms_per_image", 0.0),
        )
    return SPANS["forward"] + ", as the published number"
