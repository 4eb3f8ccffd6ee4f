"""The batch that ran, end to end (issue 21, item 2).

One metric name, throughput_bs<B>, in every recipe and report; summary.json and the
final table say which batch ran; a speed is compared only with the figure published for
that batch, else the row says "none published for bs B".
"""

import json
from argparse import Namespace

import pytest

from zoobox.core.recipe import load_recipe, recipe_names
from zoobox.jobs.summary import HEADER, render_summary, summary_rows
from zoostage import report
from zoostage.shards import merge_timing
from zoostage.verdict import compare, speed_key

REFINEDET = load_recipe("refinedet").published


def _speed_rows(rows):
    return [r for r in rows if r["metric"].startswith("throughput")]


@pytest.mark.parametrize("recipe_name", recipe_names())
def test_every_published_speed_is_named_by_its_batch(recipe_name):
    for key, entry in load_recipe(recipe_name).published.items():
        if entry.get("speed"):
            assert key.startswith("throughput_bs") and key[len("throughput_bs") :].isdigit()
            assert "bs %s" % key[len("throughput_bs") :] in entry.get("where", "")


def test_a_speed_is_compared_with_the_figure_of_the_batch_that_ran():
    timing = {"batch_size": 16, "throughput": 400.0, "by_batch": {"16": {"throughput": 400.0}}}
    rows = _speed_rows(compare(REFINEDET, {}, timing, "official", None, None, True))
    assert rows == [
        {
            "metric": "throughput_bs16",
            "published": 445.783,
            "unit": "images/s",
            "tolerance": None,
            "measured": 400.0,
            "where": "310P3 ATC bs 16",
            "note": "",
            "own_number": True,
            "status": "info",
            "span": "forward only, input on the device, as the published number",
        }
    ]


@pytest.mark.parametrize("recipe_name", ["retinaface", "retinanet"])
def test_a_batch_with_no_published_figure_says_so_instead_of_using_bs1(recipe_name):
    published = load_recipe(recipe_name).published
    timing = {"batch_size": 4, "throughput": 12.5}
    rows = _speed_rows(compare(published, {}, timing, "official", None, None, False))
    assert len(rows) == 1
    assert rows[0]["metric"] == "throughput_bs4" and rows[0]["published"] is None
    assert rows[0]["measured"] == 12.5 and rows[0]["status"] == "none published for bs 4"
    # RetinaNet's bs 1 figure covers the seed's whole graph (its NMS on the device): the
    # run's figure over that span is the forward plus the host NMS (zoostage.infer).
    timing = {"batch_size": 1, "throughput": 12.5, "graph": {"throughput": 12.5}}
    (row,) = _speed_rows(compare(published, {}, timing, "official", None, None, False))
    assert (
        row["metric"] == "throughput_bs1"
        and row["published"] == published["throughput_bs1"]["value"]
    )
    assert row["status"] == "other device"


def test_speed_key_is_the_one_name():
    assert speed_key(1) == "throughput_bs1" and speed_key("64") == "throughput_bs64"


def test_sharded_per_batch_throughput_is_the_devices_together():
    """Two shards at bs 4, 100 and 50 images/s side by side: 150 images/s at bs 4."""

    def shard(throughput, device):
        return {
            "calls": 2,
            "images": 8,
            "batch_size": 4,
            "mean_ms": 40.0,
            "p50_ms": 40.0,
            "p99_ms": 41.0,
            "throughput": throughput,
            "by_batch": {"4": {"throughput": throughput}},
            "device": device,
        }

    merged = merge_timing([shard(100.0, "0"), shard(50.0, "1")])
    assert merged["throughput"] == 150.0
    assert merged["by_batch"] == {"4": {"throughput": 150.0}}
    assert merged["batch_size"] == 4


def test_summary_json_and_the_final_table_show_the_batch(tmp_path):
    infer = tmp_path / "infer"
    evaluate = tmp_path / "evaluate"
    out = tmp_path / "report"
    for folder in (infer, evaluate, out):
        folder.mkdir()
    (infer / "timing.json").write_text(
        json.dumps({"batch_size": 8, "throughput": 420.0, "backend": "om", "device": "0"})
    )
    (evaluate / "metrics.json").write_text(json.dumps({"metrics": {"mAP": 79.7}, "images": 4952}))
    args = Namespace(
        out=str(out),
        recipe="refinedet",
        export=None,
        infer=str(infer),
        evaluate=str(evaluate),
        profile="seed",
    )
    report.main(args)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["batch_size"] == 8
    assert [r["metric"] for r in summary["rows"]] == ["mAP", "throughput_bs8"]
    assert summary["rows"][1]["published"] == 434.099
    assert "| batch size | 8 |" in (out / "report.md").read_text()
    assert HEADER[3] == "bs"
    assert [row[3] for row in summary_rows(summary)] == ["8", "8"]
    table = render_summary(out)
    assert "throughput_bs8" in table and "420.00 vs 434.10 images/s" in table
