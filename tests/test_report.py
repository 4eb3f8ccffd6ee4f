"""The report's verdicts, the summary table, and `invoke ci` on generated data."""

import json

import pytest

from zoobox.core.errors import UserError
from zoostage.verdict import compare

PUBLISHED = {
    "AP": {"value": 38.3, "tolerance": 0.2, "unit": "AP %"},
    "throughput": {"value": 19.9, "unit": "images/s", "speed": True},
}


def _status(rows):
    return {row["metric"]: row["status"] for row in rows}


def test_accuracy_within_tolerance_passes_and_below_fails():
    timing = {"throughput": 20.5}
    assert _status(compare(PUBLISHED, {"AP": 38.1}, timing, "official", 5000, 5000, True)) == {
        "AP": "pass",
        "throughput": "info",
    }
    assert (
        _status(compare(PUBLISHED, {"AP": 38.09}, timing, "official", 5000, 5000, True))["AP"]
        == "fail"
    )
    assert (
        _status(compare(PUBLISHED, {"AP": 39.0}, timing, "given", 5000, 5000, True))["AP"] == "pass"
    )


def test_random_weights_subsets_other_devices_and_gaps_are_not_verdicts():
    assert _status(
        compare(PUBLISHED, {"AP": 0.1}, {"throughput": 1.0}, "random", 5000, 5000, False)
    ) == {"AP": "not meaningful", "throughput": "other device"}
    assert _status(compare(PUBLISHED, {"AP": 30.0}, {}, "official", 200, 5000, True)) == {
        "AP": "subset",
        "throughput": "not measured",
    }


def test_per_batch_throughput_is_read_from_the_timing_record():
    published = {"throughput_bs4": {"value": 427.2, "speed": True}}
    rows = compare(
        published, {}, {"by_batch": {"4": {"throughput": 400.0}}}, "official", None, None, True
    )
    assert rows[0]["measured"] == 400.0 and rows[0]["status"] == "info"


@pytest.mark.slow
def test_ci_on_a_generated_sample_runs_the_recipe_and_writes_a_summary(tmp_path, capsys):
    from zoobox.jobs.ci import run_ci
    from zoobox.pipeline.configure import settings_from

    settings = settings_from({"zoobox": {"echo": False}})
    assert (
        run_ci(settings, recipes="refinedet", sample=True, artifacts=str(tmp_path), runner="host")
        == 0
    )
    out = capsys.readouterr().out
    assert "refinedet" in out and "not meaningful" in out
    summary = json.loads((tmp_path / "ci-summary.json").read_text())
    assert summary["refinedet"]["weights"] == "random"
    with pytest.raises(UserError, match="no recipe"):
        run_ci(settings, recipes="yolo", sample=True, artifacts=str(tmp_path))


def test_bench_report_compares_each_batch_size_and_plots(tmp_path):
    import subprocess
    import sys

    from tests.conftest import REPO, stage_env
    from zoostage.verdict import throughput_by_batch as rows_for

    published = {"throughput_bs1": {"value": 379.45}, "throughput_bs4": {"value": 427.24}}
    assert rows_for({"1": {"throughput": 350.0}, "8": {"throughput": 400.0}}, published) == [
        (1, 350.0, 379.45),
        (4, None, 427.24),
        (8, 400.0, None),
    ]
    bench = tmp_path / "bench"
    bench.mkdir()
    (bench / "bench.json").write_text(
        json.dumps(
            {
                "by_batch": {"1": {"throughput": 350.0}, "4": {"throughput": 410.0}},
                "tool": "ais_bench",
                "loop": 1000,
            }
        )
    )
    out = tmp_path / "out"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "zoostage.bench_report",
            "--out",
            str(out),
            "--recipe",
            str(REPO / "models" / "refinedet" / "recipe.yaml"),
            "--bench",
            str(bench),
        ],
        cwd=REPO,
        env=stage_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    text = (out / "bench.md").read_text()
    # 350 / 379.45 = 0.922; 410 / 427.239 = 0.960
    assert "| 1 | 350.00 | 379.45 | 0.92 |" in text and "| 4 | 410.00 | 427.24 | 0.96 |" in text
    assert "| 64 | - | 370.35 | - |" in text
    assert (out / "fps_vs_batch.png").stat().st_size > 1000


def test_each_profile_is_compared_with_its_own_published_number():
    """RetinaNet publishes 38.3 for the seed's pipeline and 38.6 for detectron2's own."""
    from zoostage.recipe import load_recipe
    from zoostage.verdict import compare, published_for

    published = load_recipe("retinanet").published
    assert published_for(published["AP"])["value"] == 38.3
    assert published_for(published["AP"], "upstream")["value"] == 38.6
    timing = {"throughput": 1.0}
    seed = _status(compare(published, {"AP": 38.2}, timing, "official", 5000, 5000, True))
    upstream = _status(
        compare(published, {"AP": 38.2}, timing, "official", 5000, 5000, True, "upstream")
    )
    assert seed["AP"] == "pass" and upstream["AP"] == "fail"  # 38.2 < 38.6 - 0.2
    # RetinaNet's upstream profile publishes no speed of its own: measured only.
    assert upstream["throughput"] == "no upstream number published"
    # A profile with no number of its own is compared with nothing, and says so.
    face = load_recipe("retinaface").published
    easy = published_for(face["easy"], "upstream")
    assert easy["value"] is None and easy["tolerance"] is None and not easy["own_number"]
    assert "seed profile only (90.06" in easy["note"]
    assert published_for(face["easy"])["value"] == 90.06


def test_an_upstream_report_compares_nothing_with_the_seeds_numbers(tmp_path):
    """RetinaFace publishes 90.06 / 86.90 / 72.04 for the seed's pipeline only: an upstream
    run, even one far below them, gets no verdict in report.md, summary.json or the
    console table, and each says why."""
    from pathlib import Path
    from types import SimpleNamespace

    from zoobox.jobs.summary import render_summary
    from zoostage.recipe import load_recipe
    from zoostage.report import render
    from zoostage.verdict import profile_note

    face = load_recipe("retinaface")
    metrics = {"easy": 50.0, "medium": 40.0, "hard": 30.0}
    timing = {"throughput": 5.0}
    for profile in ("seed", "upstream"):
        rows = compare(face.published, metrics, timing, "official", 3226, 3226, True, profile)
        recipe = SimpleNamespace(title=face.title, dataset=face.dataset)
        doc = {"images": 3226}
        text = render(recipe, rows, doc, timing, {"weights": "official"}, {}, [], profile)
        out = Path(tmp_path) / profile
        out.mkdir()
        summary = {"recipe": "retinaface", "rows": rows, "throughput": 5.0, "profile": profile,
                   "profile_note": profile_note(rows, profile)}  # fmt: skip
        (out / "summary.json").write_text(json.dumps(summary))
        console = render_summary(out)
        statuses = set(_status(rows).values())
        if profile == "seed":
            assert statuses == {"fail", "info"} and "| easy | 50.00 | 90.06 AP % |" in text
            assert "this pipeline's" in text and "no published number" not in text
            continue
        assert statuses == {"no upstream number published"}
        assert "90.06" not in text and "86.90" not in text and "fail" not in text
        assert "| easy | 50.00 | - |" in text
        assert "> **profile upstream: no published number of its own for easy, medium, " \
            "hard, throughput; those rows are measured only, with no verdict" in text  # fmt: skip
        assert "this pipeline's" not in text and "nothing above is judged" in text
        assert "90.06" not in console and "fail" not in console and "50.00 vs -" in console
        assert "no published number of its own for easy, medium, hard" in console


def test_where_measured_shows_the_lock_the_stage_ran_on(tmp_path, monkeypatch):
    """The lock's id comes from the file ZOOBOX_LOCK_FILE names, hashed by the stage itself."""
    import hashlib
    from types import SimpleNamespace

    from zoostage import envinfo
    from zoostage.report import render

    lock = tmp_path / "export.x86_64.lock"
    lock.write_bytes(b"six==1.16.0 --hash=sha256:" + b"a" * 64 + b"\n")
    link = tmp_path / "requirements.lock"
    link.symlink_to(lock)  # as in the images: the id names the real file
    monkeypatch.setenv("ZOOBOX_LOCK_FILE", str(link))
    expected = "export.x86_64.lock@" + hashlib.sha256(lock.read_bytes()).hexdigest()[:12]
    assert envinfo.environment()["lock"] == expected
    monkeypatch.setenv("ZOOBOX_LOCK_FILE", str(tmp_path / "gone.lock"))
    assert envinfo.environment()["lock"] is None
    monkeypatch.delenv("ZOOBOX_LOCK_FILE")
    assert envinfo.installed_lock() is None  # the host env: no lock
    recipe = SimpleNamespace(title="x", dataset={})
    text = render(recipe, [], {}, {}, {}, {"python": "3.9.18", "lock": expected}, [])
    assert f"| lock | {expected} |" in text
    assert "| lock |" not in render(recipe, [], {}, {}, {}, {"python": "3.9"}, [])
