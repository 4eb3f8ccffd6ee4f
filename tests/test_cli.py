"""The front door as a user meets it: invoke commands, their errors and exit codes."""

import http.server
import os
import re
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

from tests.conftest import REPO, fixture_path
from zoobox.core.artifacts import RecipeLock
from zoostage.errors import UserError
from zoostage.fetch import fetch, sha256_of


def invoke(*args, cwd=REPO, timeout=300):
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = "1"
    return subprocess.run(
        ["invoke", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env
    )


def on_host(task, data, artifacts, *extra):
    """`invoke TASK` on the host runner with a data root and an artifact folder."""
    return invoke(
        task, *extra, "--runner", "host", "--data", str(data), "--artifacts", str(artifacts)
    )


def error_lines(result):
    return [
        line for line in (result.stdout + result.stderr).splitlines() if line.startswith("error:")
    ]


@pytest.fixture(scope="module")
def wider(tmp_path_factory):
    from data_scripts.widerface.sample import make_sample

    root = tmp_path_factory.mktemp("wider")
    make_sample(str(root), events=2, per_event=2)
    return root


def test_missing_dataset_is_one_line_saying_how_to_get_it(tmp_path):
    result = on_host("retinaface.all", str(tmp_path / "nowhere"), str(tmp_path / "art"))
    assert result.returncode == 2
    assert error_lines(result) == [line for line in result.stderr.splitlines() if line]
    (line,) = error_lines(result)
    assert "dataset widerface not found" in line and "WIDER_val.zip" in line
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_corrupt_image_is_one_error_naming_the_file_and_keeps_earlier_artifacts(wider, tmp_path):
    data = tmp_path / "wider"
    shutil.copytree(wider, data)
    art = tmp_path / "art"
    ok = on_host("retinaface.weights", str(data), str(art), "--random-init")
    assert ok.returncode == 0, ok.stderr
    victim = sorted((data / "images").rglob("*.jpg"))[0]
    victim.write_bytes(victim.read_bytes()[:2000])  # truncated: no JPEG end marker
    result = on_host("retinaface.data", str(data), str(art), "--random-init")
    assert result.returncode == 2
    (line,) = error_lines(result)
    assert victim.name in line and "truncated" in line
    assert "Traceback" not in result.stdout + result.stderr
    assert (art / "retinaface" / "weights" / "stage.json").exists()
    assert not list((art / "retinaface").glob(".data.tmp-*"))
    skipped = on_host("retinaface.data", str(data), str(art), "--random-init", "--skip-bad")
    assert skipped.returncode == 0, skipped.stdout + skipped.stderr
    assert "skipped 1 unreadable" in skipped.stdout


def _checkpoint(path, state):
    import torch

    torch.save(state, str(path))
    return path


@pytest.mark.slow
def test_wrong_or_truncated_checkpoint_is_one_clear_line(wider, tmp_path):
    import torch

    other = _checkpoint(tmp_path / "other.pth", {"conv.weight": torch.zeros(2, 3, 1, 1)})
    result = on_host(
        "retinaface.export", str(wider), str(tmp_path / "art"), "--weights", str(other)
    )
    assert result.returncode == 2
    (line,) = error_lines(result)
    assert re.search(r"\d+ missing keys \(BboxHead.0.conv1x1.bias", line)
    assert "1 unexpected keys (conv.weight)" in line
    good = tmp_path / "good.pth"
    from models.retinaface.net import build_model

    torch.save(build_model(None, seed=0).state_dict(), str(good))
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[:5000])
    result = on_host(
        "retinaface.export", str(wider), str(tmp_path / "art"), "--weights", str(truncated)
    )
    assert result.returncode == 2
    (line,) = error_lines(result)
    assert "cannot read checkpoint" in line and "truncated.pth (truncated" in line
    assert "Traceback" not in result.stdout + result.stderr


def test_a_concurrent_run_is_refused_naming_the_holder(wider, tmp_path):
    lock = RecipeLock(tmp_path / "art" / "retinaface")
    lock.acquire("retinaface all (the other terminal)")
    try:
        result = on_host("retinaface.weights", str(wider), str(tmp_path / "art"), "--random-init")
    finally:
        lock.release()
    assert result.returncode == 2
    (line,) = error_lines(result)
    assert "in use by pid" in line and "the other terminal" in line


# -- the weights stage ---------------------------------------------------------------------
class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "served"
    root.mkdir()
    (root / "model.pth").write_bytes(b"weights" * 1000)

    def handler(*args, **kwargs):
        return _Quiet(*args, directory=str(root), **kwargs)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", root
    httpd.shutdown()


def test_download_verifies_sha256_and_fills_the_cache(server, tmp_path):
    url, root = server
    digest = sha256_of(str(root / "model.pth"))
    out = tmp_path / "out"
    out.mkdir()
    cache = tmp_path / "cache"
    manifest = fetch(str(out), "model.pth", url=f"{url}/model.pth", sha256=digest, cache=str(cache))
    assert manifest["source"] == "download" and manifest["sha256"] == digest
    assert (cache / "model.pth").read_bytes() == (root / "model.pth").read_bytes()
    again = tmp_path / "again"
    again.mkdir()
    assert (
        fetch(str(again), "model.pth", url=f"{url}/nothing-there", sha256=digest, cache=str(cache))[
            "source"
        ]
        == "cache"
    )


def test_sha256_mismatch_says_expected_and_found_and_keeps_nothing(server, tmp_path):
    url, root = server
    out = tmp_path / "out"
    out.mkdir()
    cache = tmp_path / "cache"
    with pytest.raises(UserError, match=r"sha256 mismatch .*expected 0{64}, found [0-9a-f]{64}"):
        fetch(str(out), "model.pth", url=f"{url}/model.pth", sha256="0" * 64, cache=str(cache))
    assert not (cache / "model.pth").exists()  # a bad download never lands in the cache
    assert not [p for p in cache.iterdir() if not p.name.startswith(".")]
    (cache / "model.pth").write_bytes(b"damaged")
    with pytest.raises(UserError, match=r"cached weights .* are damaged.*delete .*model.pth"):
        fetch(str(out), "model.pth", sha256=sha256_of(str(root / "model.pth")), cache=str(cache))


def test_unreachable_url_says_to_pass_weights(tmp_path):
    with pytest.raises(UserError, match="--weights PATH"):
        fetch(
            str(tmp_path),
            "model.pth",
            url="http://127.0.0.1:9/model.pth",
            cache=str(tmp_path / "cache"),
        )


def test_given_file_is_used_and_random_init_is_recorded(tmp_path):
    given = tmp_path / "mine.pth"
    given.write_bytes(b"my own training")
    out = tmp_path / "out"
    out.mkdir()
    manifest = fetch(str(out), "model.pth", sha256="0" * 64, source=str(given))
    assert manifest["source"] == "given" and manifest["file"] == "mine.pth"
    assert (out / "mine.pth").read_bytes() == b"my own training"  # kept under its own name
    out2 = tmp_path / "out2"
    out2.mkdir()
    manifest = fetch(
        str(out2),
        "model.pth",
        url="http://127.0.0.1:9/x",
        allow_random=True,
        cache=str(tmp_path / "cache"),
        seed=7,
    )
    assert manifest["source"] == "random" and manifest["seed"] == 7
    with pytest.raises(UserError, match="not found"):
        fetch(str(out2), "model.pth", source=str(tmp_path / "absent.pth"))


def test_demo_fixture_of_the_truncated_voc_jpeg_is_real():
    # The shared fixture the bad-input tests lean on is what its README says.
    path = fixture_path("voc2007-mini", "VOCdevkit", "VOC2007", "JPEGImages", "000001.jpg")
    assert Path(path).stat().st_size == 8192


def test_download_without_a_pinned_sha256_says_what_it_got(server, tmp_path, capfd):
    url, root = server
    out = tmp_path / "out"
    out.mkdir()
    manifest = fetch(str(out), "model.pth", url=f"{url}/model.pth", cache=str(tmp_path / "c"))
    assert manifest["sha256"] == sha256_of(str(root / "model.pth"))
    assert f"pins no sha256 for model.pth; downloaded {url}/model.pth" in capfd.readouterr().err
