"""The inference harness: feeds batches, times each call, hands outputs on.

It knows nothing of the model (MLPerf's split): a store supplies batches, a backend
runs them, and `on_outputs(indices, outputs)` -- the recipe's postprocessing -- runs
outside the timed region.
"""

import time

import numpy as np

from zoostage.progress import Progress


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
        # Throughput of full batches: images per second of pure device time.
        "throughput": float(batch_size * 1000.0 / lat.mean()),
    }


def infer_store(store, backend, batch_size, on_outputs, indices=None, warmup=2, label="infer"):
    """Run every image of `store` (or `indices`) through `backend`.

    Batches are always `batch_size` long: a short last batch is padded by repeating its
    last image (static-shape backends need it) and the padding's outputs are dropped.
    The first `warmup` calls are run again untimed before timing starts.
    Returns the timing record.
    """
    order = list(range(len(store))) if indices is None else list(indices)
    if order and warmup:
        first = store.batch(_pad(order[:batch_size], batch_size))
        for _ in range(warmup):
            backend.run(first)
        backend.synchronize()
    latencies = []
    with Progress(len(order), label) as progress:
        for chosen, batch in store.batches(batch_size, order):
            real = len(chosen)
            if real < batch_size:
                batch = np.concatenate([batch, np.repeat(batch[-1:], batch_size - real, axis=0)])
            backend.synchronize()
            start = time.perf_counter()
            outputs = backend.run(batch)
            backend.synchronize()
            elapsed = time.perf_counter() - start
            # A padded batch does less useful work than it costs: keep it out of the numbers
            # unless it is the only one.
            if real == batch_size or not latencies:
                latencies.append(elapsed)
            on_outputs(chosen, tuple(o[:real] for o in outputs))
            progress.update(real)
    record = summarize(latencies, batch_size, len(order))
    record.update(backend.describe())
    record["warmup_calls"] = int(warmup)
    return record


def _pad(indices, size):
    return list(indices) + [indices[-1]] * (size - len(indices))
