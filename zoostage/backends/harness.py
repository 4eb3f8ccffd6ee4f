"""The inference harness: feeds batches, times each call, hands outputs on.

It knows nothing of the model (MLPerf's split): a store supplies batches, a backend
runs them, and `on_outputs(indices, outputs)` -- the recipe's postprocessing -- runs
outside the timed region.

Two times per call, because the ModelZoo seeds report only the first:
- compute: the model's forward alone, input already on the device, between two device
  synchronisations (the span the seeds time; they drop their first 5 images' times,
  zoobox runs 5 extra untimed calls of the first batch instead);
- end_to_end: host to device, forward, device to host.
A backend that splits a call (to_device / forward / to_host) gets both measured here; one
that reports its own device time (compute_seconds(), e.g. ais_bench's) has that taken
as compute; one that only has run() gets the same number for both.
"""

import time

import numpy as np

from zoostage.progress import Progress

SEED_WARMUP = 5  # warm-up calls before the ModelZoo seeds start timing


def summarize(latencies_s, batch_size, images):
    """Timing record from per-call latencies (seconds), warm-up already excluded."""
    lat = np.asarray(latencies_s, dtype=np.float64) * 1000.0
    if lat.size == 0:
        return {"calls": 0, "batch_size": batch_size, "images": images}
    return {
        "calls": int(lat.size),
        "batch_size": int(batch_size),
        "images": int(images),
        "mean_ms": float(lat.mean()),
        "p50_ms": float(np.percentile(lat, 50)),
        "p99_ms": float(np.percentile(lat, 99)),
        # Throughput of full batches: images per second of the timed calls.
        "throughput": float(batch_size * 1000.0 / lat.mean()),
    }


def _stats(latencies_s, batch_size):
    """mean / p50 / p99 (ms) and throughput of one kind of time."""
    record = summarize(latencies_s, batch_size, 0)
    return {k: record[k] for k in ("mean_ms", "p50_ms", "p99_ms", "throughput") if k in record}


SPLIT = ("to_device", "forward", "to_host")


def _splits(backend):
    return all(callable(getattr(backend, name, None)) for name in SPLIT)


def timed_call(backend, batch):
    """(outputs, compute seconds, end-to-end seconds, where compute came from) of one call."""
    clock = time.perf_counter
    backend.synchronize()
    if _splits(backend):
        start = clock()
        staged = backend.to_device(batch)
        backend.synchronize()
        forward_start = clock()
        raw = backend.forward(staged)
        backend.synchronize()
        forward_end = clock()
        outputs = backend.to_host(raw)
        end = clock()
        compute = forward_end - forward_start
    else:
        start = clock()
        outputs = backend.run(batch)
        backend.synchronize()
        end = clock()
        compute = end - start
    reported = getattr(backend, "compute_seconds", None)
    reported = reported() if callable(reported) else None
    if reported is not None:
        return outputs, float(reported), end - start, "backend"
    return outputs, compute, end - start, "harness"


def infer_store(
    store, backend, batch_size, on_outputs, indices=None, warmup=SEED_WARMUP, label="infer"
):
    """Run every image of `store` (or `indices`) through `backend`.

    Batches are always `batch_size` long: a short last batch is padded by repeating its
    last image (static-shape backends need it) and the padding's outputs are dropped.
    The first batch is run `warmup` times untimed before timing starts (the seeds: 5).
    Returns the timing record: the compute numbers at the top level (mean_ms, p50_ms,
    p99_ms, throughput: what the seeds publish and the report compares), and both kinds
    under "compute" and "end_to_end".
    """
    order = list(range(len(store))) if indices is None else list(indices)
    if order and warmup:
        first = store.batch(_pad(order[:batch_size], batch_size))
        for _ in range(warmup):
            timed_call(backend, first)
        backend.synchronize()
    compute, end_to_end, source = [], [], "harness"
    with Progress(len(order), label) as progress:
        for chosen, batch in store.batches(batch_size, order):
            real = len(chosen)
            if real < batch_size:
                batch = np.concatenate([batch, np.repeat(batch[-1:], batch_size - real, axis=0)])
            outputs, compute_s, end_to_end_s, source = timed_call(backend, batch)
            # A padded batch does less useful work than it costs: keep it out of the numbers
            # unless it is the only one.
            if real == batch_size or not end_to_end:
                compute.append(compute_s)
                end_to_end.append(end_to_end_s)
            on_outputs(chosen, tuple(o[:real] for o in outputs))
            progress.update(real)
    # The headline numbers are compute's: what a seed's published throughput measured.
    record = summarize(compute, batch_size, len(order))
    record["end_to_end"] = _stats(end_to_end, batch_size)
    record["compute"] = dict(_stats(compute, batch_size), source=source)
    record.update(backend.describe())
    record["warmup_calls"] = int(warmup)
    return record


def _pad(indices, size):
    return list(indices) + [indices[-1]] * (size - len(indices))
