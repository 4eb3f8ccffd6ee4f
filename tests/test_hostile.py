"""The hostile run's defects (issue 10), one test (or a few) per item, named after it.

Each docstring quotes the defect as the hostile run found it; the test reproduces the
attack and checks the fix. `python3 bench/hostile.py` runs this file and prints
"cases tried / passed" per item, so the figure can be followed over time.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO, input_args, run_stage
from zoostage.errors import UserError


def error_lines(proc):
    return [line for line in proc.stderr.splitlines() if line.startswith("error:")]


def assert_one_line_error(proc, *needles, code=3):
    """The stage stopped with exactly one `error:` line holding every needle, no traceback."""
    assert proc.returncode == code, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = error_lines(proc)
    assert len(errors) == 1, proc.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


# -- item 1: names from datasets escape their folder ---------------------------------------
def test_item01_safe_name_helper_refuses_every_escape(tmp_path):
    """1. Dataset names escape the output folder: names that are absolute, contain '..',
    are empty, hold NUL or resolve outside their root are refused, naming the entry."""
    from zoostage.safepath import child_path

    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "link").symlink_to(outside)
    refused = {
        "../../x/victim": "'..'",
        "//abs/path": "absolute",
        "/etc/passwd": "absolute",
        "a/../../b": "'..'",
        "": "empty",
        "   ": "empty",
        "a\0b": "NUL",
        None: "not text",
    }
    for name, reason in refused.items():
        with pytest.raises(UserError) as caught:
            child_path(str(root), name, "test entry")
        message = str(caught.value)
        assert reason in message and "test entry" in message and repr(name) in message
    # Reading follows links a user placed; writing never lands outside the root.
    assert child_path(str(root), "link/a.jpg", "x") == os.path.join(str(root), "link/a.jpg")
    with pytest.raises(UserError, match="outside"):
        child_path(str(root), "link/victim", "test entry", writing=True)
    assert child_path(str(root), "sub/a.jpg", "x") == os.path.join(str(root), "sub/a.jpg")
    assert child_path(str(root), "a..b.jpg", "x").endswith("a..b.jpg")  # '..' inside a name
    with pytest.raises(UserError, match="one folder level"):
        child_path(str(root), "sub/a.jpg", "x", single=True)


def _wider_sample(root, ids_edit=None):
    """A generated WIDER FACE sample; ids_edit(ids) -> ids rewrites its ground truth."""
    from data_scripts.widerface import layout
    from data_scripts.widerface.sample import make_sample, write_ground_truth

    make_sample(str(root), events=2, per_event=2, max_size=400)
    if ids_edit is not None:
        dataset = layout.read_ground_truth(str(root))
        write_ground_truth(str(root), ids_edit(list(dataset.ids)), dataset.boxes, dataset.keep)
    return root


@pytest.mark.parametrize(
    "bad_id", ["0--Event0/../../x/victim", "0--Event0//abs/path/victim", "../../x/victim"]
)
def test_item01_wider_names_leaving_the_folder_stop_the_data_stage(tmp_path, bad_id):
    """1. A WIDER ground-truth .mat whose image name is ../../x/victim or contains
    //abs/path made the infer stage write victim.txt outside the artifacts folder."""
    root = _wider_sample(tmp_path / "wider", lambda ids: [bad_id, *ids[1:]])
    out = tmp_path / "art" / "data"
    proc = run_stage(
        "data_scripts.widerface.prepare", *input_args("retinaface"), "--out", out, "--root", root
    )
    assert_one_line_error(proc, "refusing", "wider_face_val.mat")
    assert not list(tmp_path.rglob("victim*"))


def test_item01_wider_prediction_writer_refuses_escaping_ids(tmp_path):
    """1. data_scripts/widerface/predictions.py joins names unchecked."""
    from data_scripts.widerface.predictions import write_image_predictions

    pred_root = tmp_path / "art" / "infer" / "predictions"
    pred_root.mkdir(parents=True)
    dets = np.array([[1, 2, 30, 40, 0.9]])
    for image_id in ("0--E/../../../victim", "../x/victim", "/abs/victim", "0--E/", "/victim"):
        with pytest.raises(UserError, match="refusing"):
            write_image_predictions(str(pred_root), image_id, dets)
    assert not list(tmp_path.rglob("victim*"))
    write_image_predictions(str(pred_root), "0--E/img_1", dets)
    assert (pred_root / "0--E" / "img_1.txt").read_text().splitlines()[:2] == ["img_1", "1"]


def test_item01_coco_file_name_leaving_val2017_is_refused(tmp_path):
    """1. Every place that turns a dataset-provided name (... COCO file_name ...) into a
    path must refuse names that are absolute, contain '..', or resolve outside their root."""
    from data_scripts.coco import layout
    from data_scripts.coco.sample import make_sample

    root = tmp_path / "coco"
    make_sample(str(root), images=2)
    path = root / layout.ANNOTATION_FILE
    data = json.loads(path.read_text())
    data["images"][0]["file_name"] = "../../../victim.jpg"
    path.write_text(json.dumps(data))
    out = tmp_path / "art" / "data"
    proc = run_stage(
        "data_scripts.coco.prepare", *input_args("retinanet"), "--out", out, "--root", root
    )
    assert_one_line_error(proc, "refusing", "file_name of image", "'..'")
    with pytest.raises(UserError, match="absolute"):
        layout.image_file(str(root / "val2017"), "/etc/passwd")


def test_item01_voc_id_leaving_the_folder_is_refused(tmp_path):
    """1. Every place that turns a dataset-provided name (... VOC ids) into a path must
    refuse names that are absolute, contain '..', or resolve outside their root."""
    from data_scripts.voc.sample import make_sample

    root = tmp_path / "voc"
    make_sample(str(root), images=2)
    (listing,) = root.rglob("test.txt")
    listing.write_text(listing.read_text() + "../../victim\n")
    out = tmp_path / "art" / "data"
    proc = run_stage(
        "data_scripts.voc.prepare", *input_args("refinedet"), "--out", out, "--root", root
    )
    assert_one_line_error(proc, "refusing", "image id on line 3", "'..'")


def test_item01_names_read_from_manifests_stay_inside_their_folder(tmp_path):
    """1. Apply the same rule to anything else that reads a name: the weights stage's
    weights.json and a compile stage's compile.json name files in their folder."""
    from zoostage.backends.compile import compiled_model
    from zoostage.fetch import fetch, weights_from

    (tmp_path / "weights.json").write_text(json.dumps({"source": "given", "file": "../victim"}))
    with pytest.raises(UserError, match=r"refusing checkpoint name in .*'\.\.'"):
        weights_from(str(tmp_path))
    (tmp_path / "compile.json").write_text(json.dumps({"model": "/etc/passwd"}))
    with pytest.raises(UserError, match=r"refusing model file named in .*absolute"):
        compiled_model(str(tmp_path), ".ts")
    with pytest.raises(UserError, match=r"refusing weights file name '\.\./w\.pth'"):
        fetch(str(tmp_path), "../w.pth", url="http://127.0.0.1:9/w.pth", cache=str(tmp_path))


@pytest.mark.slow
def test_item10_wider_mat_with_an_empty_event_name_is_one_error_line(tmp_path):
    """10. `.mat` with an empty event name: IndexError."""
    root = _wider_sample(tmp_path / "wider", lambda ids: ["/" + ids[0].split("/")[1], *ids[1:]])
    proc = run_stage(
        "data_scripts.widerface.prepare",
        *input_args("retinaface"),
        "--out",
        tmp_path / "out",
        "--root",
        root,
    )
    assert_one_line_error(proc, "event name #1", "empty", "wider_face_val.mat")


# -- item 2: checkpoints can run code --------------------------------------------------------
_PLANT_AND_READ = r"""
import collections, json, os, pickle, random, sys
import numpy as np

import torch
from models.common.checkpoint import read_torch_checkpoint
from models.retinanet.checkpoint import read_checkpoint
from zoostage.errors import UserError

folder, marker = sys.argv[1], sys.argv[2]

class Payload(object):
    def __reduce__(self):
        return (os.mkdir, (marker,))

state = collections.OrderedDict(
    [("conv.weight", torch.ones(2, 3)), ("conv.bias", torch.nn.Parameter(torch.zeros(2)))]
)
optimizer = torch.optim.SGD([torch.nn.Parameter(torch.ones(2))], lr=0.1, momentum=0.9)
optimizer.state_dict()  # momentum buffers appear after a step
files = {
    "state_dict.pth": state,
    "wrapped.pth": {"state_dict": state, "epoch": 3},
    "training.pth": {
        "model": state, "optimizer": optimizer.state_dict(), "iteration": 10,
        "rng": {"numpy": np.random.get_state(), "python": random.getstate(),
                "torch": torch.get_rng_state()},
    },
    "evil.pth": {"state_dict": state, "note": Payload()},
}
for name, obj in files.items():
    torch.save(obj, os.path.join(folder, name))
with open(os.path.join(folder, "model.pkl"), "wb") as handle:
    pickle.dump({"model": {"w": np.ones((2, 3), np.float32)}, "__author__": "zoo"}, handle, 2)
with open(os.path.join(folder, "evil.pkl"), "wb") as handle:
    pickle.dump({"model": {"w": np.ones(2)}, "x": Payload()}, handle, 2)

results = {}
for name, reader in [
    ("state_dict.pth", read_torch_checkpoint), ("wrapped.pth", read_torch_checkpoint),
    ("evil.pth", read_torch_checkpoint), ("training.pth", read_checkpoint),
    ("model.pkl", read_checkpoint), ("evil.pkl", read_checkpoint),
]:
    try:
        results[name] = sorted(reader(os.path.join(folder, name)))
    except UserError as error:
        results[name] = "error: %s" % error
results["torch"] = torch.__version__
print(json.dumps(results))
"""


def _env_python(name):
    """The interpreter of env `name` (host: this one; others: their built venv) or a skip."""
    if name == "host":
        return sys.executable
    from zoobox.core.envspec import get_env
    from zoobox.core.paths import default_cache
    from zoobox.envs.venvs import VenvCache

    cache = VenvCache(default_cache() / "venvs")
    state = cache.state(get_env(name))
    if not state.ok:
        pytest.skip(
            f"the {name} venv is not built in {cache.root} ({state.broken or 'absent'}): "
            f"`python3 -m invoke envs.build --env {name}` builds it"
        )
    return str(cache.python(get_env(name)))


@pytest.mark.slow
@pytest.mark.parametrize("env", ["host", "export", "atc"])
def test_item02_planted_checkpoint_payload_is_refused(tmp_path, env):
    """2. Checkpoints can run code: with torch 1.10.1 (the export env: venv and image) a
    crafted .pth ran its payload. The published layouts still load, in every env."""
    python = _env_python(env)
    marker = tmp_path / "payload-ran"
    proc = subprocess.run(
        [python, "-c", _PLANT_AND_READ, str(tmp_path), str(marker)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout.splitlines()[-1])
    assert not marker.exists(), f"the payload ran under torch {results['torch']}"
    for name in ("evil.pth", "evil.pkl"):
        assert results[name].startswith("error: refusing checkpoint"), results[name]
        assert "mkdir" in results[name] and "state dict" in results[name]
    assert results["state_dict.pth"] == ["conv.bias", "conv.weight"]
    assert results["wrapped.pth"] == ["conv.bias", "conv.weight"]
    assert results["training.pth"] == ["conv.bias", "conv.weight"]
    assert results["model.pkl"] == ["w"]
    if env != "host":
        assert results["torch"].startswith({"export": "1.10.1", "atc": "1.5.0"}[env])


# -- item 3: stale skips after a backend edit ------------------------------------------------
def test_item03_modules_loaded_at_run_time_are_fingerprinted(tmp_path):
    """3. Stale skips after a backend edit: backends are loaded with importlib and the
    fingerprint follows static imports only: editing torchscript.py reruns nothing."""
    from zoobox.core.fingerprint import code_fingerprint

    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "table.py").write_text(
        'import importlib\nMODULES = {"a": "pkg.dynamic"}\n'
        "def get(name):\n    return importlib.import_module(MODULES[name])\n"
    )
    (pkg / "stage.py").write_text("from pkg import table\n")
    (pkg / "dynamic.py").write_text("X = 1\n")
    (pkg / "other.py").write_text("'not.a.module here'\n")
    before = code_fingerprint("pkg.stage", tmp_path)
    (pkg / "other.py").write_text("Y = 2\n")
    assert code_fingerprint("pkg.stage", tmp_path) == before
    (pkg / "dynamic.py").write_text("X = 2\n")
    assert code_fingerprint("pkg.stage", tmp_path) != before


def test_item03_every_backend_module_counts_for_every_stage_that_loads_backends():
    """3. Fingerprint every module a stage can load at run time (torchscript.py, aie.py,
    atc.py, om.py, onnxrt.py, base.py)."""
    from zoobox.core.fingerprint import code_files
    from zoobox.core.recipe import load_recipe
    from zoostage import backends

    wanted = {REPO / (name.replace(".", "/") + ".py") for name in backends._MODULES.values()}
    wanted.add(REPO / "zoostage" / "backends" / "base.py")
    checked = 0
    for recipe in ("retinaface", "retinanet", "refinedet"):
        for stage in load_recipe(recipe).stages:
            files = set(code_files(stage.module))
            if REPO / "zoostage" / "backends" / "__init__.py" in files:
                assert wanted <= files, (recipe, stage.name, sorted(wanted - files))
                checked += 1
    assert checked >= 3  # at least each recipe's infer stage


# -- items 4, 8, 17: what a stage's fingerprint covers, and the reason line ----------------
def _toy_engine(tmp_path, data=None, **params):
    from zoobox.core.recipe import load_recipe_file
    from zoobox.pipeline.choice import Choice
    from zoobox.pipeline.pipeline import Options, Pipeline
    from zoobox.runners.host import HostRunner

    data = data or tmp_path / "data"
    if not data.exists():
        data.mkdir(parents=True)
        (data / "image.jpg").write_bytes(b"original pixels")
    options = Options(
        artifacts=tmp_path / "art", cache=tmp_path / "cache", data=data, params=params
    )
    recipe = load_recipe_file(REPO / "tests" / "toy" / "recipe.yaml")
    return Pipeline(recipe, Choice("host", "torchscript", [0], "test"), HostRunner(), options)


def _plan(result):
    return {plan.name: (plan.action, plan.reason) for plan in result.plans}


def test_item04_data_kept_inside_the_artifacts_folder_is_fingerprinted(tmp_path):
    """4. Data inside the artifacts folder is never fingerprinted: `invoke demo` keeps its
    dataset there, and corrupting demo images reran nothing and kept the old metrics."""
    data = tmp_path / "art" / "demo" / "data"
    _toy_engine(tmp_path, data=data).run()
    (data / "image.jpg").write_bytes(b"corrupted")
    result = _toy_engine(tmp_path, data=data).run()
    assert _plan(result)["a"] == ("run", "changed: input files <data>")


def test_item08_a_new_file_in_the_weights_cache_reruns_nothing(tmp_path):
    """8. Any new file in the weights cache reruns every stage: fingerprint the file the
    stage uses, not the cache folder."""
    from zoobox.pipeline.configure import build_pipeline, settings_from

    def weights_run():
        settings = settings_from({"zoobox": {"echo": False, "cache": str(tmp_path / "cache")}})
        engine = build_pipeline(
            settings,
            "retinaface",
            artifacts=str(tmp_path / "art"),
            runner="host",
            backend="torchscript",
            params={"allow_random": True},
        )
        return _plan(engine.run("weights"))

    (tmp_path / "cache").mkdir()
    assert weights_run()["weights"][0] == "run"
    (tmp_path / "cache" / "some-other-model.pth").write_bytes(b"unrelated")
    assert weights_run()["weights"] == ("skip", "up to date")
    (tmp_path / "cache" / "mobilenet0.25_Final.pth").write_bytes(b"the recipe's file")
    assert weights_run()["weights"] == ("run", "changed: input files mobilenet0.25_Final.pth")


def test_item08_an_upstream_rerun_with_identical_output_reruns_nothing_below(tmp_path):
    """8. A downstream stage whose upstream reran with byte-identical outputs should not
    rerun (fingerprint upstream outputs by content, not only the run id)."""
    _toy_engine(tmp_path).run()
    (tmp_path / "data" / "image.jpg").write_bytes(b"other pixels")  # a reads, ignores it
    result = _toy_engine(tmp_path).run()
    assert _plan(result) == {
        "a": ("run", "changed: input files <data>"),
        "b": ("skip", "up to date"),
        "c": ("skip", "up to date"),
        "d": ("skip", "up to date"),
    }


@pytest.mark.slow
def test_item17_the_reason_line_names_what_changed(tmp_path, monkeypatch):
    """17. The reason line says "changed: parameters" when code or an upstream changed."""
    import zoobox.pipeline.inputs as inputs

    _toy_engine(tmp_path).run()
    plan = _plan(_toy_engine(tmp_path, add_a=2).run())
    assert plan["a"] == ("run", "changed: parameters")
    assert plan["b"] == ("run", "changed: upstream a")
    real = inputs.code_fingerprint
    monkeypatch.setattr(
        inputs, "code_fingerprint", lambda module, **named: real(module, **named) + "-edited"
    )
    plan = _plan(_toy_engine(tmp_path, add_a=2).run())
    assert {name: reason for name, (_, reason) in plan.items()} == dict.fromkeys(
        "abcd", "changed: code"
    )


# -- item 5: a full disk hangs forever -------------------------------------------------------
_SMALL_DISK = """
set -e
mount -t tmpfs -o size=2m tmpfs "$1"
shift
exec "$@"
"""


def _on_a_2mb_disk(folder, *argv, timeout=120, options="size=2m"):
    """Run argv with `folder` a fresh 2 MiB tmpfs, in a private mount namespace."""
    folder.mkdir(parents=True, exist_ok=True)
    script = _SMALL_DISK.replace("size=2m", options)
    probe = subprocess.run(
        ["unshare", "-Urm", "sh", "-c", script, "sh", str(folder), "true"],
        capture_output=True,
        text=True,
    )
    if probe.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (unshare -Urm): {probe.stderr.strip()}")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run(
        ["unshare", "-Urm", "sh", "-c", script, "sh", str(folder), *map(str, argv)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


@pytest.mark.parametrize("workers", [1, 2])
def test_item05_full_disk_is_one_error_line_not_a_hang(tmp_path, workers):
    """5. A full disk hangs forever: the data stage writes through a memory map; a full
    disk kills a worker (SIGBUS) and the pool waits forever; one worker gives "exit -7"."""
    root = _wider_sample(tmp_path / "wider")
    disk = tmp_path / "disk"
    proc = _on_a_2mb_disk(
        disk,
        sys.executable,
        "-m",
        "data_scripts.widerface.prepare",
        *input_args("retinaface"),
        "--out",
        disk / "data",
        "--root",
        root,
        "--workers",
        workers,
    )
    line = assert_one_line_error(proc, "no space left on", "needed", "free")
    assert "11.4 MiB needed" in line  # 4 images x 1000 x 1000 x 3 bytes


_RESERVE_ON_A_FULL_DISK = """
import os, sys
import numpy as np

from zoostage import space
from zoostage.errors import UserError
space.ensure_space = lambda path, need: None  # as if another writer filled the disk since
path = os.path.join(sys.argv[1], "images.npy")
try:
    space.allocate_npy(path, np.uint8, (4, 1000, 1000, 3))
except UserError as error:
    print("error: %s" % error)
print("left behind:", os.listdir(sys.argv[1]))
"""


def test_item05_blocks_are_reserved_so_a_disk_filled_meanwhile_is_caught(tmp_path):
    """5. Check free space before the store is allocated (the store's size is known)."""
    disk = tmp_path / "disk"
    proc = _on_a_2mb_disk(disk, sys.executable, "-c", _RESERVE_ON_A_FULL_DISK, disk)
    assert proc.returncode == 0, proc.stderr
    assert "error: no space left on" in proc.stdout and "11.4 MiB needed" in proc.stdout
    assert "left behind: []" in proc.stdout  # no half-allocated store


_DYING_WORKER = """
import os, signal, sys
import numpy as np

from zoostage.store import feed_spec, write_store
from zoostage.errors import UserError

def prepare(item):
    if item == 3:
        os.kill(os.getpid(), signal.SIGBUS)  # what a write to a full memory map does
    return np.zeros((4, 4, 3), np.uint8), {"id": item}

try:
    write_store(sys.argv[1], range(8), (4, 4), prepare, feed_spec((0, 0, 0)), workers=2)
except UserError as error:
    print("error: %s" % error)
"""


def test_item05_a_worker_killed_by_a_signal_ends_the_stage(tmp_path):
    """5. Catch the worker's death (a full disk kills a worker with SIGBUS and the pool
    waits forever)."""
    proc = subprocess.run(
        [sys.executable, "-c", _DYING_WORKER, str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "error: a preprocess worker process died (killed by SIGBUS (signal 7))" in proc.stdout


# -- items 10 and 19: images that are empty or damaged ---------------------------------------
@pytest.mark.parametrize("skip_bad", [False, True])
def test_item10_zero_byte_image_is_one_error_line_or_skipped(tmp_path, skip_bad):
    """10. zero-byte image: cv2 traceback (also with --skip-bad)."""
    from data_scripts.widerface import layout

    root = _wider_sample(tmp_path / "wider")
    dataset = layout.load(str(root))
    victim = dataset.image_path(1)
    open(victim, "w").close()
    out = tmp_path / "out"
    args = ["--out", out, "--root", root, "--workers", "1"] + (["--skip-bad"] if skip_bad else [])
    proc = run_stage("data_scripts.widerface.prepare", *input_args("retinaface"), *args)
    if not skip_bad:
        assert_one_line_error(proc, victim, "empty (0 bytes)")
        return
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    index = json.loads((out / "index.json").read_text())
    assert len(index["records"]) == 3 and "empty (0 bytes)" in index["skipped"][0]


def _damaged_jpeg(path):
    """A JPEG with 64 bytes of garbage in the middle of its entropy-coded data."""
    import cv2

    pixels = (np.random.RandomState(0).rand(120, 160, 3) * 255).astype(np.uint8)
    data = cv2.imencode(".jpg", pixels)[1].tobytes()
    middle = len(data) // 2
    garbage = np.random.RandomState(1).randint(0, 255, 64).astype(np.uint8).tobytes()
    path.write_bytes(data[:middle] + garbage + data[middle:])
    return str(path)


def test_item19_jpeg_with_garbage_mid_stream_is_bad_unless_the_reference_accepts_it(
    tmp_path, capfd, monkeypatch
):
    """19. A JPEG with garbage mid-stream is accepted with only a libjpeg warning: count
    it as bad (as --skip-bad would) unless the reference decoder accepts it too, and say
    which."""
    from zoostage import image_decode

    path = _damaged_jpeg(tmp_path / "damaged.jpg")
    with pytest.raises(UserError, match=r"damaged JPEG data \(libjpeg: Corrupt JPEG data"):
        image_decode.read_image(path)
    capfd.readouterr()
    assert image_decode.read_image(path, reference="cv2").shape == (120, 160, 3)
    note = capfd.readouterr().err
    assert "kept, as the reference decoder (cv2.imread) decodes it too" in note
    pytest.importorskip("PIL", reason="PIL decides for the detectron2 (PIL) reference")
    assert image_decode.read_image(path, reference="pil").shape == (120, 160, 3)
    assert "(PIL) decodes it too" in capfd.readouterr().err
    monkeypatch.setattr(
        image_decode, "_pil_accepts", lambda data: (False, "PIL refuses it too (x)")
    )
    with pytest.raises(UserError, match="the reference decoder PIL refuses it too"):
        image_decode.read_image(path, reference="pil")


# -- items 6, 13, 14, 16: kills, signals, and what is said about them ------------------------
_ENGINE = """
import sys
from pathlib import Path
from pathlib import Path
from tests.test_hostile import _toy_engine
from zoobox.core.errors import main_guard
main_guard(lambda: _toy_engine(Path(sys.argv[1]), pause=sys.argv[2], helper_b=True).run())
"""


def _alive(pid):
    """True while `pid` runs (a zombie nobody reaped yet counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _wait_gone(*pids, seconds=30.0):
    import time

    deadline = time.monotonic() + seconds
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return [pid for pid in pids if _alive(pid)]


def _paused_run(tmp_path):
    """An engine (subprocess) whose stage b is paused: (process, stage pid, helper pid)."""
    import signal
    import time

    pause = tmp_path / "pause"
    process = subprocess.Popen(
        [sys.executable, "-c", _ENGINE, str(tmp_path), str(pause)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # As a terminal starts it: a shell running the tests in the background (`cmd &`
        # without job control) ignores SIGINT, the engine would inherit that, and Python
        # then installs no KeyboardInterrupt handler.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 60
    while not (pause.exists() and pause.read_text()) and time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        time.sleep(0.05)
    out = Path(pause.read_text())
    return process, int((out / "pid").read_text()), int((out / "helper-pid").read_text())


def _leftovers(tmp_path):
    return sorted(p.name for p in (tmp_path / "art" / "toy").glob(".*.tmp-*"))


def _signal_the_run(tmp_path, signame, stage_says, exit_code):
    """Send `signame` to a paused run's zoobox; check what is said, stopped and kept."""
    import signal

    process, stage, helper = _paused_run(tmp_path)
    process.send_signal(getattr(signal, signame))
    out, err = process.communicate(timeout=60)
    assert process.returncode == exit_code, out + err
    assert stage_says in out.splitlines()  # the stage's own last line came through
    assert f"error: interrupted by {'Ctrl-C (SIGINT)' if signame == 'SIGINT' else signame}" in err
    assert "Traceback" not in out + err
    assert _wait_gone(stage, helper, seconds=5) == []
    assert _leftovers(tmp_path) == []
    result = _toy_engine(tmp_path).run()
    assert [p.action for p in result.plans] == ["skip", "run", "run", "run"]


@pytest.mark.parametrize("signame, exit_code", [("SIGTERM", 143), ("SIGHUP", 129)])
def test_item06_sigterm_or_sighup_to_zoobox_stops_its_stage_and_helpers(
    tmp_path, signame, exit_code
):
    """6. A killed or SIGTERMed engine leaves its stage running, writing into a temp
    folder the rerun deleted: forward SIGTERM/SIGHUP as SIGINT is forwarded."""
    _signal_the_run(tmp_path, signame, f"terminated by {signame}", exit_code)


def test_item16_ctrl_c_keeps_the_stages_interrupted_line(tmp_path):
    """16. Ctrl-C prints nothing: keep the stage's "interrupted" line."""
    _signal_the_run(tmp_path, "SIGINT", "interrupted", 130)


def test_item06_kill_9_of_zoobox_ends_its_stage_and_holds_the_lock_until_then(tmp_path):
    """6. Have the stage die with its parent (PR_SET_PDEATHSIG); the lock must not be
    released while a stage of the run still lives."""
    import signal

    from zoobox.core.artifacts import RecipeLock

    process, stage, helper = _paused_run(tmp_path)
    os.kill(stage, signal.SIGSTOP)  # hold the stage where it is: it cannot die yet
    try:
        process.kill()
        process.communicate(timeout=60)
        lock = RecipeLock(tmp_path / "art" / "toy")
        with pytest.raises(UserError, match="in use by pid"):
            lock.acquire("a second run while the first one's stage lives")
    finally:
        os.kill(stage, signal.SIGCONT)  # it now gets the SIGTERM its parent's death sent
    assert _wait_gone(stage, helper) == []
    lock.acquire("a second run once the stage is gone")
    lock.release()


def test_item13_a_killed_stage_names_the_signal(tmp_path):
    """13. A killed stage says "exit -9": name the signal."""
    import signal

    from zoostage.errors import describe_exit

    assert describe_exit(-9) == "killed by SIGKILL (signal 9)"
    assert describe_exit(-7) == "killed by SIGBUS (signal 7)"
    assert describe_exit(137) == "exit 137: 128 + 9, killed by SIGKILL"
    assert describe_exit(1) == "exit 1"
    process, stage, helper = _paused_run(tmp_path)
    os.kill(stage, signal.SIGKILL)
    _, err = process.communicate(timeout=60)
    assert "error: stage b failed (killed by SIGKILL (signal 9))" in err
    assert _wait_gone(helper) == []  # its helper went with the run too


def test_item14_rerun_by_hand_writes_to_a_folder_that_exists(tmp_path):
    """14. "Rerun by hand" points at the deleted temp folder."""
    import shlex

    with pytest.raises(UserError) as caught:
        _toy_engine(tmp_path, fail_b="crash").run()
    message = str(caught.value)
    assert "Rerun by hand:" in message and ".tmp-" not in message
    argv = shlex.split(message.split("Rerun by hand: ", 1)[1])
    out = Path(argv[argv.index("--out") + 1])
    assert out == tmp_path / "art" / "toy" / "b.by-hand" and out.parent.is_dir()
    argv[argv.index("--fail") + 1] = "none"
    done = subprocess.run(argv, cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert done.returncode == 0 and (out / "value.txt").read_text() == "11"


# -- items 7 and 15: downloads ---------------------------------------------------------------
CHECKPOINT_BYTES = bytes(range(256)) * 40  # 10240 bytes


@pytest.fixture
def bad_server():
    """A local HTTP server: /good.pth, /short.pth (cut at half its Content-Length),
    /stall.pth (sends 10 bytes, then nothing for 5 s), /page.pth (a web page)."""
    import http.server
    import threading
    import time

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = CHECKPOINT_BYTES
            kind = "text/html" if self.path.startswith("/page") else "application/octet-stream"
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.path.startswith("/short"):
                body = body[: len(body) // 2]
            elif self.path.startswith("/stall"):
                self.wfile.write(body[:10])
                self.wfile.flush()
                time.sleep(5)
                return
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _files(folder):
    return sorted(str(p.relative_to(folder)) for p in Path(folder).rglob("*") if p.is_file())


def test_item07_a_truncated_download_is_never_cached(bad_server, tmp_path):
    """7. A truncated download is cached as good when the recipe has no sha256: compare
    bytes received with Content-Length, download to a temp file and rename."""
    from zoostage.fetch import fetch

    cache, out = tmp_path / "cache", tmp_path / "out"
    out.mkdir()
    with pytest.raises(UserError, match=r"cut short: 5120 of 10240 bytes; nothing was kept"):
        fetch(str(out), "model.pth", url=f"{bad_server}/short.pth", cache=str(cache))
    assert _files(cache) == [] and _files(out) == []
    with pytest.raises(UserError, match="answered with a web page"):
        fetch(str(out), "model.pth", url=f"{bad_server}/page.pth", cache=str(cache))
    assert _files(cache) == []


def test_item07_a_stalled_server_is_one_error_after_the_timeout(bad_server, tmp_path):
    """7. A stalled server gives a TimeoutError traceback after 62 s instead of one line."""
    import time

    from zoostage.fetch import download

    started = time.monotonic()
    with pytest.raises(UserError, match=r"stalled for 1 s after 10 bytes .*nothing was kept"):
        download(f"{bad_server}/stall.pth", str(tmp_path / "model.pth"), timeout=1)
    assert _files(tmp_path) == []
    assert time.monotonic() - started < 4.5  # the timeout, not the server, ended it


def test_item07_a_cached_file_damaged_later_names_the_file_to_delete(bad_server, tmp_path):
    """7. Say which cache file to delete when a cached file is bad."""
    from models.common.checkpoint import read_torch_checkpoint
    from zoostage.fetch import fetch

    cache, out = tmp_path / "cache", tmp_path / "out"
    out.mkdir()
    manifest = fetch(str(out), "model.pth", url=f"{bad_server}/good.pth", cache=str(cache))
    cached = cache / "model.pth"
    assert manifest["cache_file"] == str(cached) and cached.read_bytes() == CHECKPOINT_BYTES
    # Not a torch file: the stage that reads it says where it came from.
    with pytest.raises(UserError, match=f"delete {cached} and rerun"):
        read_torch_checkpoint(str(out / "model.pth"))
    cached.write_bytes(CHECKPOINT_BYTES[:100])  # damaged after the download
    again = tmp_path / "again"
    again.mkdir()
    with pytest.raises(UserError, match=f"cached weights {cached} are damaged.*delete {cached}"):
        fetch(str(again), "model.pth", url=f"{bad_server}/good.pth", cache=str(cache))


def test_item15_weights_given_as_a_url_are_downloaded_or_refused(bad_server, tmp_path):
    """15. `--weights http://...` becomes a local path: accept URLs or say it is not one."""
    from zoobox.core.recipe import load_recipe, resolve_params
    from zoostage.fetch import fetch

    recipe = load_recipe("retinaface")
    url = f"{bad_server}/good.pth"
    assert resolve_params(recipe, {"weights": url})["weights"] == url
    with pytest.raises(UserError, match="not a file path or an http"):
        resolve_params(recipe, {"weights": "ftp://example.org/model.pth"})
    cache, out = tmp_path / "cache", tmp_path / "out"
    out.mkdir()
    manifest = fetch(str(out), "mobilenet0.25_Final.pth", source=url, cache=str(cache))
    assert manifest["source"] == "given" and manifest["file"] == "good.pth"
    assert (out / "good.pth").read_bytes() == CHECKPOINT_BYTES
    assert Path(manifest["cache_file"]).parent.parent == cache / "given"


# -- items 9 and 10: broken recipes, settings, folders and records ---------------------------
def _recipe_text(**changes):
    """The toy recipe's text with `stages[1]` fields replaced (None: removed)."""
    import yaml

    data = yaml.safe_load((REPO / "tests" / "toy" / "recipe.yaml").read_text())
    for key, value in changes.items():
        if value is None:
            data["stages"][1].pop(key)
        else:
            data["stages"][1][key] = value
    return yaml.safe_dump(data)


@pytest.mark.parametrize(
    "text, field, problem",
    [
        (_recipe_text(env=None), "stages[1].env", "missing"),
        (_recipe_text(env="gpu"), "stages[1] (b).env", "unknown env 'gpu' (envs: aie, atc"),
        (_recipe_text(needs=["zz"]), "stages[1] (b).needs", "'zz' is not a stage that comes"),
        (_recipe_text(args={"x": "{p.nope}"}), "stages[1] (b).args.x", "no parameter 'nope'"),
        (_recipe_text(args={"x": "{in.c}"}), "stages[1] (b).args.x", "no stage in its needs 'c'"),
        (_recipe_text(args={"x": "{oops}"}), "stages[1] (b).args.x", "unknown placeholder {oops}"),
        (_recipe_text(args={"x": "{p.add_a"}), "stages[1] (b).args.x", "not a valid template"),
        (_recipe_text(npu="yes"), "stages[1] (b).npu", "must be true or false"),
        ("name: x\nstages: {a: 1}\n", "stages", "must be a list of stages"),
        ("- just\n- a list\n", "(top level)", "must be a mapping"),
        ("name: x\nstages: [\n", "line 3", "not valid YAML"),
    ],
    ids=lambda value: value if len(str(value)) < 40 else "",
)
def test_item09_a_broken_recipe_is_one_line_naming_file_and_field(tmp_path, text, field, problem):
    """9. One broken recipe.yaml breaks every task and `invoke --list`, with
    KeyError/TypeError tracebacks: validate recipes (required fields, known envs, known
    needs, placeholders) and report a broken one in one line naming the file and field."""
    from zoobox.core.recipe import load_recipe_file

    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    with pytest.raises(UserError) as caught:
        load_recipe_file(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: {field}"), message
    assert problem in message and "\n" not in message


def test_item09_other_recipes_and_the_task_list_keep_working(tmp_path, monkeypatch, capsys):
    """9. ... while the other recipes keep working."""
    import shutil

    import zoobox.core.recipe as recipe_module
    from zoobox.tasks import build_namespace

    models = tmp_path / "models"
    for name in ("retinaface", "refinedet"):
        shutil.copytree(REPO / "models" / name, models / name)
    (models / "broken").mkdir()
    (models / "broken" / "recipe.yaml").write_text(_recipe_text(env="gpu"))
    monkeypatch.setattr(recipe_module, "MODELS_DIR", models)
    recipe_module.load_recipe.cache_clear()
    try:
        namespace = build_namespace()
    finally:
        recipe_module.load_recipe.cache_clear()
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "broken/recipe.yaml: stages[1] (b).env" in err
    assert {"retinaface", "refinedet", "broken"} <= set(namespace.collections)
    assert "infer" in namespace.collections["retinaface"].tasks
    broken = namespace.collections["broken"].tasks["all"]
    with pytest.raises(SystemExit) as stopped:
        broken.body(None)
    assert stopped.value.code == 2
    assert "unknown env 'gpu'" in capsys.readouterr().err


@pytest.mark.parametrize(
    "text, expected",
    [
        ("zoobox:\n  runner: host\n  data: [1\n", "invoke.yaml: line 4: not valid YAML"),
        ("zoobox: [host]\n", "invoke.yaml: zoobox: must be a mapping"),
        ("zoobox:\n  data: /data\n", "invoke.yaml: zoobox.data: must be a mapping"),
        ("- a list\n", "invoke.yaml: must be a mapping of settings"),
    ],
    ids=["bad-yaml", "zoobox-a-list", "data-not-a-mapping", "top-level-list"],
)
def test_item10_invalid_invoke_yaml_is_one_error_line(tmp_path, text, expected):
    """10. invalid `invoke.yaml`: 55-line traceback."""
    import shutil

    shutil.copy(REPO / "tasks.py", tmp_path / "tasks.py")
    (tmp_path / "invoke.yaml").write_text(text)
    proc = subprocess.run(
        [sys.executable, "-m", "invoke", "--list"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        timeout=60,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.splitlines() == [proc.stderr.splitlines()[0]], proc.stderr
    assert proc.stderr.startswith(f"error: {expected}"), proc.stderr


_LOCKED_OUT = """
import sys
from pathlib import Path
from tests.test_hostile import _toy_engine
from zoobox.core.errors import main_guard
main_guard(lambda: _toy_engine(Path(sys.argv[1])).run())
"""


def test_item10_read_only_artifacts_folder_is_one_error_line(tmp_path):
    """10. Read-only artifacts folder: OSError traceback at the lock."""
    proc = _on_a_2mb_disk(
        tmp_path / "art", sys.executable, "-c", _LOCKED_OUT, tmp_path, options="ro"
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    (line,) = [line for line in proc.stderr.splitlines() if line]
    assert line.startswith(f"error: cannot write to the artifact folder {tmp_path}/art/toy")
    assert "Read-only file system" in line and "--artifacts" in line


@pytest.mark.parametrize("content", ["[1, 2, 3]", '"ok"', "{not json", ""])
def test_item10_a_stage_json_that_is_not_a_record_reruns_the_stage(tmp_path, content):
    """10. `stage.json` that is a JSON list: AttributeError."""
    _toy_engine(tmp_path).run()
    (tmp_path / "art" / "toy" / "b" / "stage.json").write_text(content)
    plan = _plan(_toy_engine(tmp_path).run())
    assert plan["b"] == ("run", "no complete output") and plan["a"][0] == "skip"


# -- item 12: sharded counts -----------------------------------------------------------------
def test_item12_sharded_summary_counts_add_up(tmp_path):
    """12. Sharded `infer.json` reports the counts of one shard (images 2, detections 1500
    for 4 / 3000): add them."""
    shards = []
    for index in range(2):
        folder = tmp_path / f"shard-{index}"
        folder.mkdir()
        summary = {
            "backend": "torchscript",
            "input_hw": [1000, 1000],
            "images": 2,
            "detections": 1500,
            "shard": [index, 2],
            "postprocess": {"top_k": 5000},
        }
        (folder / "infer.json").write_text(json.dumps(summary))
        shards.append(str(folder))
    out = tmp_path / "merged"
    proc = run_stage("zoostage.shards", "--out", out, *shards)
    assert proc.returncode == 0, proc.stderr
    merged = json.loads((out / "infer.json").read_text())
    assert merged == {
        "backend": "torchscript",
        "input_hw": [1000, 1000],
        "images": 4,
        "detections": 3000,
        "postprocess": {"top_k": 5000},
        "shards": 2,
    }


# -- item 18: a colon in a mounted path ------------------------------------------------------
@pytest.mark.parametrize("where", ["artifacts", "data"])
def test_item18_odd_characters_in_a_mounted_path_are_mounted_or_refused(tmp_path, where):
    """18. A colon in a path reaches `docker run -v` unchecked (refuse it, or use --mount).

    Every bind is `--mount type=bind,source=...`: a ':' is taken as it is; a ',' (the
    field separator of --mount) is refused with one line naming the path."""
    from zoobox.core.envspec import get_env
    from zoobox.runners.base import StageCall
    from zoobox.runners.docker import DockerRunner, DockerSettings

    def argv_for(odd):
        paths = {"artifacts": tmp_path / "art", "data": tmp_path / "data", where: odd}
        runner = DockerRunner(DockerSettings(artifacts=paths["artifacts"], data=paths["data"]))
        call = StageCall(
            "toy", "b", "tests.toy.stage", [], paths["artifacts"] / "out", get_env("export")
        )
        return runner.argv(call)

    colon = tmp_path / "run:2024-01-01"
    mounts = [a for a in argv_for(colon) if a.startswith("type=bind,")]
    assert any(f"source={colon}," in m for m in mounts), mounts
    assert not any(a.startswith(f"{colon}:") for a in argv_for(colon))  # never as -v
    comma = tmp_path / "run,2024"
    with pytest.raises(UserError, match=f"cannot mount {comma}: .*splits on ','"):
        argv_for(comma)
