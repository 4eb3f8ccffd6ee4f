"""RetinaNet training profiles: what the seed's executed mmdetection does that its config
does not (the first 40 boxes of an image, the fixed 1344 x 800 / 800 x 1344 frames, the
static loss scale 64), and the published 1-device row, on generated data.

The seed's files: Ascend ModelZoo RetinaNet_for_PyTorch `mmdet/datasets/pipelines/
transforms.py` (Pad), `mmdet/models/dense_heads/anchor_head.py` (get_anchors_ones),
`mmdet/apis/train.py` (amp.initialize) and Ascend apex's LossScaler; docs/fidelity.md.
"""

import contextlib
import json
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from data_scripts.coco import layout  # noqa: E402
from models.retinanet.train import data as data_lib  # noqa: E402
from models.retinanet.train import device as device_lib  # noqa: E402
from models.retinanet.train import losses as losses_lib  # noqa: E402
from models.retinanet.train import summary as summary_lib  # noqa: E402
from models.retinanet.train import targets as target_lib  # noqa: E402
from models.retinanet.train.profiles import training_profile  # noqa: E402
from models.retinanet.train.trainer import Step  # noqa: E402
from tests.conftest import REPO  # noqa: E402
from zoostage.errors import UserError  # noqa: E402

PORTRAIT, LANDSCAPE = 1, 2  # image ids: 640 x 480 and 480 x 640 (h x w)


def _write_root(root, boxes_on_portrait=45):
    """A COCO root: the portrait image holds a crowd box, a box under a pixel wide, then
    `boxes_on_portrait` valid boxes; box k (0-based) sits at x = 10 k, with category
    k % 80 (label k % 80), so a kept box and its label can be told apart."""
    import cv2

    categories = [c[0] for c in layout.COCO_CATEGORIES]
    (root / "val2017").mkdir(parents=True)
    (root / "annotations").mkdir()
    images, annotations = [], []
    for image_id, (h, w) in ((PORTRAIT, (640, 480)), (LANDSCAPE, (480, 640))):
        name = "%012d.jpg" % image_id
        cv2.imwrite(str(root / "val2017" / name), np.full((h, w, 3), 128, np.uint8))
        images.append({"id": image_id, "file_name": name, "height": h, "width": w})

    def add(image_id, bbox, category, crowd=0):
        annotations.append(
            {
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": category,
                "bbox": [float(v) for v in bbox],
                "area": float(bbox[2] * bbox[3]),
                "iscrowd": crowd,
            }
        )

    add(PORTRAIT, [0, 0, 100, 100], categories[5], crowd=1)  # left out (crowd)
    add(PORTRAIT, [0, 0, 0.5, 50], categories[6])  # left out (under a pixel wide)
    for k in range(boxes_on_portrait):
        add(PORTRAIT, [10 * k, 20, 30, 40], categories[k % 80])
    add(LANDSCAPE, [100, 100, 200, 150], categories[0])
    document = {"images": images, "annotations": annotations, "categories": [
        {"id": c[0], "name": c[1]} for c in layout.COCO_CATEGORIES
    ]}  # fmt: skip
    (root / "annotations" / "instances_val2017.json").write_text(json.dumps(document))
    return root


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return _write_root(tmp_path_factory.mktemp("coco"))


# -- 1. the first 40 boxes ---------------------------------------------------------------
def test_seed_profile_keeps_an_images_first_40_boxes_upstream_all_45(root):
    records, stats = data_lib.load_split(str(root), "val2017")
    assert stats["crowd"] == 1 and stats["dropped_boxes"] == 1
    portrait = next(r for r in records if r["id"] == PORTRAIT)
    index = records.index(portrait)
    assert len(portrait["labels"]) == 45  # the filter comes first: 45 valid boxes
    for profile, kept in (("seed", 40), ("upstream", 45)):
        settings = training_profile(profile)
        dataset = data_lib.TrainDataset(records, max_boxes=settings.max_boxes)
        item = dataset[(index, False)]
        assert len(item["boxes"]) == len(item["labels"]) == kept, profile
        # The first ones in annotation order, each box with its own label.
        assert item["labels"].tolist() == [k % 80 for k in range(kept)]
        scale = 800.0 / 480  # 640 x 480 -> 1067 x 800
        np.testing.assert_allclose(
            item["boxes"][:, 0], [10 * k * scale for k in range(kept)], rtol=1e-6
        )
    # Fewer than 40: all of them, in order.
    boxes, labels = data_lib.first_boxes(np.zeros((3, 4)), np.arange(3), 40)
    assert boxes.shape == (3, 4) and labels.tolist() == [0, 1, 2]


# -- 2. the fixed frames -----------------------------------------------------------------
def test_seed_frames_are_1344_by_800_when_h_at_least_w_else_800_by_1344():
    # Pad._pad_img: size [1344, 800, 3] when img_shape[0] >= img_shape[1], else [800, 1344].
    assert data_lib.seed_frame(1067, 800) == (1344, 800)  # portrait 640 x 480, resized
    assert data_lib.seed_frame(800, 1067) == (800, 1344)  # landscape 480 x 640
    assert data_lib.seed_frame(800, 800) == (1344, 800)  # square: h >= w
    assert data_lib.seed_frame(1333, 750) == (1344, 800)  # the longest a 1333 cap allows
    assert data_lib.seed_frame(90, 128, min_size=96, max_size=128) == (96, 128)


def test_a_portrait_and_a_landscape_image_pad_to_the_two_frames(root):
    records, _ = data_lib.load_split(str(root), "val2017")
    dataset = data_lib.TrainDataset(records, max_boxes=40)
    by_id = dict((r["id"], i) for i, r in enumerate(records))
    seed = data_lib.Collate(frames=(data_lib.MIN_SIZE, data_lib.MAX_SIZE))
    for image_id, resized, frame in (
        (PORTRAIT, (1067, 800), (1344, 800)),
        (LANDSCAPE, (800, 1067), (800, 1344)),
    ):
        item = dataset[(by_id[image_id], False)]
        assert item["pixels"].shape[:2] == resized
        batch = seed([item])
        assert tuple(batch["pixels"].shape) == (1, *frame, 3)
        assert batch["cls_targets"].shape == (1, data_lib.target_lib.all_anchors(frame).shape[0])
        # Every anchor of the frame is valid (get_anchors_ones' flags over the frame) ...
        assert target_lib.valid_flags(frame, seed.own_padding(*resized)).all()
        # ... and the padding is zero, the image where it was.
        pixels = batch["pixels"][0].numpy()
        assert (pixels[: resized[0], : resized[1]] > 0).all()
        assert not pixels[resized[0] :].any() and not pixels[:, resized[1] :].any()
    # The upstream profile: the image rounded up to 32 (Pad size_divisor=32).
    upstream = data_lib.Collate()([dataset[(by_id[PORTRAIT], False)]])
    assert tuple(upstream["pixels"].shape) == (1, 1088, 800, 3)


def test_frames_of_a_mixed_batch_union_and_each_image_keeps_its_own_valid_anchors():
    """Near-square images can round into the other orientation than their group's; the
    seed's head knows only the two frames, zoobox pads such a batch to both."""
    collate = data_lib.Collate(frames=(96, 128))
    items = [
        {"id": i, "pixels": np.zeros((*hw, 3), np.uint8), "boxes": np.array([[0, 0, 40, 40.0]]),
         "labels": np.array([0]), "flip": False}
        for i, hw in enumerate(((128, 90), (90, 128)))
    ]  # fmt: skip
    batch = collate(items)
    assert tuple(batch["pixels"].shape) == (2, 128, 128, 3)
    landscape = target_lib.valid_flags((128, 128), collate.own_padding(90, 128))
    assert 0 < landscape.sum() < landscape.size
    assert (batch["cls_targets"][1].numpy()[~landscape] == target_lib.IGNORE).all()


# -- 3. the static loss scale ------------------------------------------------------------
class _Linear(torch.nn.Module):
    """cls_logits = w * x: the gradient of sum(w * x) is x, by hand."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(2))

    def forward(self, x):
        return self.w * x, None


class _CountingSGD(torch.optim.SGD):
    steps = 0

    def step(self, closure=None):
        _CountingSGD.steps += 1
        return super().step(closure)


def _step(monkeypatch, scaler, inputs, clip=10.0):
    monkeypatch.setattr(losses_lib, "retinanet_losses", lambda c, d, t, b, k: {"loss": c.sum()})
    model = _Linear()
    optimizer = _CountingSGD(model.parameters(), lr=1.0)
    step = Step(
        model, optimizer, list(model.parameters()), iter(inputs), lambda x: (x, None, None),
        contextlib.nullcontext, scaler, clip,
    )  # fmt: skip
    return model, step


def test_seed_scaler_is_static_64_unscales_before_clipping_and_skips_nothing(monkeypatch):
    scaler = device_lib.grad_scaler("cpu", torch.float16, training_profile("seed").loss_scale)
    assert scaler.get_scale() == 64.0
    clean = torch.tensor([1.0, 2.0])  # gradient norm 2.24 < 10: not clipped
    steep = torch.tensor([30.0, 40.0])  # norm 50: clipped to 10
    overflow = torch.tensor([float("inf"), 1.0])
    model, step = _step(monkeypatch, scaler, [clean, steep, overflow])
    before = _CountingSGD.steps
    step.run()
    # w = 1 - x: the gradient 64 x is divided by 64 before clipping and the step.
    np.testing.assert_allclose(model.w.detach().numpy(), [0.0, -1.0])
    assert scaler.get_scale() == 64.0
    step.run()
    # Clipped on the unscaled gradient: (30, 40) * 10 / 50 = (6, 8). Clipping the scaled
    # one (norm 3200) and then unscaling would move w by (0.09375, 0.125) only.
    np.testing.assert_allclose(model.w.detach().numpy(), [-6.0, -9.0], rtol=1e-6)
    step.run()
    # An overflow: no check, no skip (apex's static LossScaler), the scale stays 64.
    assert _CountingSGD.steps - before == 3
    assert math.isnan(float(model.w[0].detach())) and scaler.get_scale() == 64.0
    # torch's dynamic scaler (the upstream profile) would skip it and halve its scale.
    dynamic = device_lib.grad_scaler("cpu", torch.float16, training_profile("upstream").loss_scale)
    if dynamic is not None and hasattr(dynamic, "get_scale"):
        model, step = _step(monkeypatch, dynamic, [overflow])
        start = dynamic.get_scale()
        step.run()
        assert dynamic.get_scale() == start / 2 and float(model.w[1].detach()) == 1.0


def test_seed_scaler_never_grows_and_resumes_its_state(monkeypatch):
    scaler = device_lib.StaticLossScaler(64.0)
    # 2001 clean steps: torch's GradScaler doubles its scale after 2000 (growth_interval).
    model, step = _step(monkeypatch, scaler, [torch.tensor([1e-3, 0.0])] * 2001, clip=0)
    for _ in range(2001):
        step.run()
    assert scaler.get_scale() == 64.0
    resumed = device_lib.StaticLossScaler(64.0)
    resumed.load_state_dict(scaler.state_dict())
    assert resumed.get_scale() == 64.0
    with pytest.raises(UserError, match="dynamic"):
        resumed.load_state_dict({"scale": 65536.0, "growth_factor": 2.0})
    assert device_lib.grad_scaler("cpu", None, 64.0) is None  # float32: no scaler


# -- 4. the published 1-device row --------------------------------------------------------
def test_the_one_device_row_is_36_6_after_12_epochs_and_17_images_per_s():
    published = summary_lib.published_numbers(str(REPO / "models" / "retinanet" / "recipe.yaml"))
    row = published["runs"][1]
    assert row["AP"] == 36.6 and row["epochs"] == 12 and row["images_per_s"] == 17
    evaluation = {"metrics": {"AP": 36.5}, "images": 5000}
    run = {"world_size": 1, "eval": evaluation, "iterations": 1, "total_iterations": 1,
           "device_type": "npu", "device_name": "Ascend910", "images_per_s": 17.0,
           "profile": "seed"}  # fmt: skip
    rows = summary_lib.compare(dict(run, epochs=12), published)
    assert rows[0]["published"] == 36.6 and rows[0]["status"] == "pass"  # 36.5 >= 36.1
    assert rows[1]["published"] == 17 and rows[1]["ratio"] == pytest.approx(1.0)
    rows = summary_lib.compare(dict(run, epochs=1), published)
    assert rows[0]["status"] == "published after 12 epochs, this run has 1: not compared"
    assert rows[1]["status"] == "measured"  # a speed: the length of the run does not matter
    # The ModelZoo's numbers are the seed profile's: an upstream run gets no verdict.
    rows = summary_lib.compare(dict(run, epochs=12, profile="upstream"), published)
    assert rows[0]["published"] is None and rows[1]["published"] is None
    assert all("seed profile only" in r["status"] for r in rows)


# -- the stage, end to end -----------------------------------------------------------------
def _launch(root, out, work, *extra):
    import subprocess
    import sys

    from tests.conftest import stage_env

    argv = [
        sys.executable, "-m", "models.retinanet.train.launch", "--out", out, "--data", root,
        "--split", "val2017", "--work-dir", work, "--device-type", "cpu", "--threads", "1",
        "--batch-size", "1", "--max-iters", "1", "--min-size", "64", "--max-size", "96",
        "--warmup-iters", "1", "--checkpoint-epochs", "0", "--workers", "0",
        "--recipe", REPO / "models" / "retinanet" / "recipe.yaml", *extra,
    ]  # fmt: skip
    return subprocess.run(
        [str(a) for a in argv], cwd=str(REPO), env=stage_env(), capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip


@pytest.mark.slow
def test_the_train_stage_runs_each_profile_and_records_it(root, tmp_path):
    done = _launch(root, tmp_path / "seed", tmp_path / "w1")
    assert done.returncode == 0, done.stderr
    summary = json.loads((tmp_path / "seed" / "train.json").read_text())
    assert summary["profile"] == "seed" and summary["padding"].startswith("fixed frames 96 x 64")
    assert summary["boxes_cap"] == {"max_boxes": 40, "images_capped": 1, "boxes_left_out": 5}
    assert math.isfinite(summary["final_loss"]["loss"])
    assert summary["comparison"][0]["status"].startswith("not evaluated")
    done = _launch(root, tmp_path / "up", tmp_path / "w2", "--profile", "upstream")
    assert done.returncode == 0, done.stderr
    summary = json.loads((tmp_path / "up" / "train.json").read_text())
    assert summary["profile"] == "upstream" and summary["boxes_cap"] is None
    assert summary["padding"] == "multiple of 32"
    assert all("seed profile only" in row["status"] for row in summary["comparison"])
    # A checkpoint of one profile does not resume the other; --pad-size is upstream's.
    done = _launch(root, tmp_path / "x", tmp_path / "w2", "--resume", "yes", "--max-iters", 2)
    assert done.returncode != 0 and "profile upstream -> seed" in done.stderr
    done = _launch(root, tmp_path / "y", tmp_path / "w3", "--pad-size", 96)
    assert done.returncode != 0 and "--profile upstream" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
