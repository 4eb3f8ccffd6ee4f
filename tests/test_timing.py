"""Forward-only ("compute") and end-to-end timing: what the seeds' numbers compare with.

The harness's clock is replaced by one the fake backend advances, so every latency
below is known exactly and the statistics are checked by hand.
"""

from types import SimpleNamespace

import numpy as np
import pytest

from zoostage.backends import harness
from zoostage.backends.base import Backend
from zoostage.report import render
from zoostage.shards import merge_timing
from zoostage.verdict import compare


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


class FakeStore:
    """n images of one pixel each; batches in order."""

    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def batch(self, indices):
        return np.asarray(indices, dtype=np.float32).reshape(-1, 1, 1, 1)

    def batches(self, size, order):
        for start in range(0, len(order), size):
            chosen = order[start : start + size]
            yield chosen, self.batch(chosen)


class SplitBackend(Backend):
    """H2D 2 ms, D2H 3 ms; forward 10, 20, 30, ... ms on successive calls."""

    name = "split"

    def __init__(self, clock):
        super().__init__("npu:0")
        self.clock = clock
        self.forwards = 0

    def to_device(self, batch):
        self.clock.now += 0.002
        return batch

    def forward(self, inputs):
        self.forwards += 1
        self.clock.now += 0.010 * self.forwards
        return (inputs.reshape(inputs.shape[0], -1),)

    def to_host(self, outputs):
        self.clock.now += 0.003
        return tuple(outputs)


@pytest.fixture
def clock(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(harness.time, "perf_counter", fake)
    return fake


def test_compute_is_the_forward_alone_and_end_to_end_adds_the_copies(clock):
    backend = SplitBackend(clock)
    seen = []
    record = harness.infer_store(
        FakeStore(4), backend, 1, lambda idx, out: seen.append(float(out[0][0, 0])), warmup=2
    )
    assert seen == [0.0, 1.0, 2.0, 3.0]
    # warm-up: forwards 1 and 2 (10, 20 ms), untimed; timed: 30, 40, 50, 60 ms
    compute = record["compute"]
    assert compute["mean_ms"] == pytest.approx(45.0)
    assert compute["p50_ms"] == pytest.approx(45.0)
    assert compute["p99_ms"] == pytest.approx(59.7)  # 50 + 0.97 * 10
    assert compute["throughput"] == pytest.approx(1000 / 45.0)
    assert compute["source"] == "harness"
    # end to end: each call 5 ms more (2 in, 3 out)
    end_to_end = record["end_to_end"]
    assert end_to_end["mean_ms"] == pytest.approx(50.0)
    assert end_to_end["p99_ms"] == pytest.approx(64.7)
    assert end_to_end["throughput"] == pytest.approx(20.0)
    # the top level is compute's: what the report sets beside a seed's number
    assert record["mean_ms"] == pytest.approx(45.0)
    assert record["throughput"] == pytest.approx(1000 / 45.0)
    assert record["warmup_calls"] == 2 and record["calls"] == 4


def test_the_seed_warm_up_is_the_default(clock):
    backend = SplitBackend(clock)
    record = harness.infer_store(FakeStore(1), backend, 1, lambda idx, out: None)
    assert harness.SEED_WARMUP == 5 and record["warmup_calls"] == 5
    assert backend.forwards == 5 + 1
    assert record["compute"]["mean_ms"] == pytest.approx(60.0)  # the 6th forward


def test_a_device_time_the_backend_reports_is_taken_as_compute(clock):
    class Reporting(SplitBackend):
        def compute_seconds(self):
            return 0.004  # e.g. ais_bench's exec time of the last infer

    record = harness.infer_store(FakeStore(2), Reporting(clock), 1, lambda i, o: None, warmup=0)
    assert record["compute"] == {
        "mean_ms": pytest.approx(4.0),
        "p50_ms": pytest.approx(4.0),
        "p99_ms": pytest.approx(4.0),
        "throughput": pytest.approx(250.0),
        "source": "backend",
    }
    assert record["end_to_end"]["mean_ms"] == pytest.approx(20.0)  # (15 + 25) / 2


def test_a_run_only_backend_gets_one_number_for_both(clock):
    class RunOnly:
        def run(self, batch):
            clock.now += 0.008
            return (batch,)

        def synchronize(self):
            pass

        def describe(self):
            return {"backend": "run-only", "device": "cpu"}

    record = harness.infer_store(FakeStore(3), RunOnly(), 1, lambda i, o: None, warmup=1)
    assert record["compute"]["mean_ms"] == pytest.approx(8.0)
    assert record["end_to_end"]["mean_ms"] == pytest.approx(8.0)


def test_torchscript_split_call_equals_its_run(tmp_path):
    torch = pytest.importorskip("torch")
    from zoostage.backends import get_backend

    torch.jit.trace(torch.nn.Conv2d(3, 2, 1), torch.randn(1, 3, 4, 4)).save(str(tmp_path / "m"))
    backend = get_backend("torchscript").load(str(tmp_path / "m"))
    batch = np.random.RandomState(0).randn(2, 3, 4, 4).astype(np.float32)
    staged = backend.to_device(batch)
    split = backend.to_host(backend.forward(staged))
    np.testing.assert_array_equal(split[0], backend.run(batch)[0])


def test_aie_forward_runs_on_its_stream_and_waits_for_it(monkeypatch):
    """The seeds' measured region: module call inside the stream, then its synchronize."""
    import sys
    import types

    torch = pytest.importorskip("torch")
    events = []

    class Stream:
        def __init__(self, device):
            events.append(("stream", device))

        def synchronize(self):
            events.append("sync")

    class StreamContext:
        def __init__(self, stream):
            pass

        def __enter__(self):
            events.append("enter")

        def __exit__(self, *exc):
            events.append("exit")

    fake = types.ModuleType("torch_aie")
    fake.npu = types.SimpleNamespace(Stream=Stream, stream=StreamContext)
    monkeypatch.setitem(sys.modules, "torch_aie", fake)
    from zoostage.backends.aie import Backend as AieBackend

    backend = AieBackend("npu:0")
    backend.stream = Stream("npu:0")
    backend.module = lambda x: events.append("forward") or (x * 2, x)
    outputs = backend.forward(torch.ones(1, 1))
    assert events[1:] == ["enter", "forward", "sync", "exit"]
    assert len(outputs) == 2 and float(outputs[0][0, 0]) == 2.0


def test_shards_merge_both_kinds_of_time():
    def shard(compute, end_to_end, calls):
        stats = {"mean_ms": compute, "p50_ms": compute, "p99_ms": compute + 1}
        e2e = {"mean_ms": end_to_end, "p50_ms": end_to_end, "p99_ms": end_to_end + 2}
        return {
            "calls": calls,
            "images": calls,
            "mean_ms": compute,
            "p50_ms": compute,
            "p99_ms": compute + 1,
            "throughput": 1000 / compute,
            "compute": dict(stats, throughput=1000 / compute, source="harness"),
            "end_to_end": dict(e2e, throughput=1000 / end_to_end),
        }

    merged = merge_timing([shard(10.0, 20.0, 1), shard(30.0, 40.0, 3)])
    assert merged["compute"]["mean_ms"] == pytest.approx((10 + 3 * 30) / 4)
    assert merged["compute"]["p99_ms"] == 31.0
    assert merged["compute"]["throughput"] == pytest.approx(100 + 1000 / 30)
    assert merged["compute"]["source"] == "harness"
    assert merged["end_to_end"]["mean_ms"] == pytest.approx(35.0)
    assert merged["throughput"] == pytest.approx(100 + 1000 / 30)  # the top level: compute


def test_the_report_sets_the_seed_beside_compute_and_shows_both():
    published = {"throughput": {"value": 48.77, "unit": "images/s", "speed": True}}
    timing = {
        "throughput": 50.0,  # the harness puts compute's numbers at the top level
        "compute": {"p50_ms": 19.0, "p99_ms": 22.0, "throughput": 50.0},
        "end_to_end": {"p50_ms": 33.0, "p99_ms": 40.0, "throughput": 30.0},
        "warmup_calls": 5,
        "backend": "aie",
    }
    rows = compare(published, {}, timing, "official", None, None, True)
    assert rows[0]["measured"] == 50.0
    text = render(
        SimpleNamespace(title="x", dataset={}), rows, {}, timing, {"weights": "official"}, {}, []
    )
    assert "| compute latency p50 / p99 (ms): forward only | 19.00 / 22.00 |" in text
    assert "| end-to-end latency p50 / p99 (ms): with copies | 33.00 / 40.00 |" in text
    assert "| throughput compute / end-to-end (images/s) | 50.00 / 30.00 |" in text
    assert "| warm-up calls | 5 |" in text


def test_om_backend_reads_ais_bench_exec_time():
    from zoostage.backends.om import Backend as OmBackend

    backend = OmBackend(0)
    assert backend.compute_seconds() is None  # no session yet: no number

    class Summary:
        exec_time_list = (3.0, 2.5)  # milliseconds, one per infer

    backend.session = type("Session", (), {"summary": lambda self: Summary()})()
    assert backend.compute_seconds() == pytest.approx(0.0025)
    backend.session = type("Old", (), {"sumary": lambda self: Summary()})()
    assert backend.compute_seconds() == pytest.approx(0.0025)
    backend.session = object()
    assert backend.compute_seconds() is None
