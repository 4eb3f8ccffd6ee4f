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


def measured_speed(key, timing):
    """The measured figure of a published speed metric from an infer timing record."""
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


def compare(published, metrics, timing, weights, images, full_images, npu, profile=None):
    """One row per published metric of an inference recipe, with its status.

    Each metric is compared with the number published for `profile` (default: seed); a
    metric with none for that profile is measured only (`own_number` False, no verdict).
    """
    profile = profile or DEFAULT_PROFILE
    rows = []
    for key, entry in published.items():
        ref = published_for(entry, profile)
        speed = bool(ref.get("speed"))
        measured = measured_speed(key, timing) if speed else metrics.get(key)
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
        rows.append(
            {
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
        )
    return rows
