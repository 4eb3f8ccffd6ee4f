"""RetinaNet training: matching, losses, schedule, data and checkpoints (hand-checked), then
on a generated COCO-layout sample: two gloo processes through the recipe's train stage,
an exact resume, the COCO evaluation, and the trained checkpoint through retinanet.all.

The real network (ResNet-50 + FPN) on tiny inputs (128 pixels), one thread per process.
The backbone the runs start from is a "calibrated" random ResNet: its FrozenBN statistics
are set from one forward pass over the sample so activations stay normalized, as an
ImageNet backbone's do (a plain random ResNet without BN gives losses in the thousands).
It also exercises --weights with a detectron2-layout backbone file.
"""

import json
import math
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from data_scripts.coco import prepare  # noqa: E402
from data_scripts.coco.sample import make_sample  # noqa: E402
from models.common.boxes import encode_deltas  # noqa: E402
from models.retinanet import PIXEL_MEAN_BGR, PIXEL_STD_BGR, checkpoint, net  # noqa: E402  # noqa: E402
from models.retinanet import anchors as anchor_lib  # noqa: E402
from models.retinanet.train import backbone as backbone_lib  # noqa: E402
from models.retinanet.train import (  # noqa: E402
    checkpoints,
    evaluation,
    launch,
    losses,
    schedule,
    targets,
)
from models.retinanet.train import data as data_lib  # noqa: E402
from models.retinanet.train import summary as summary_lib  # noqa: E402
from tests.conftest import REPO, stage_env  # noqa: E402
from zoostage.errors import USER_ERROR_EXIT, UserError  # noqa: E402

SIZE = 128  # training min and max side: images become 96 x 128 / 128 x 96


# -- matching ------------------------------------------------------------------------------
def test_match_thresholds_ignore_band_and_invalid_anchors():
    gt = [[0, 0, 10, 10]]  # area 100
    anchors = [
        [0, 0, 10, 10],  # IoU 1
        [0, 0, 10, 20],  # 100 / 200 = 0.5: positive (>= 0.5)
        [0, 0, 10, 22],  # 100 / 220 = 0.4545: ignored
        [0, 0, 10, 24],  # 100 / 240 = 0.4167: ignored
        [0, 0, 10, 30],  # 100 / 300 = 0.3333: negative
        [50, 50, 60, 60],  # 0: negative
        [0, 0, 10, 10],  # IoU 1 but outside the image's padded extent: ignored
    ]
    valid = [True] * 6 + [False]
    got = targets.match(anchors, gt, valid)
    assert got.tolist() == [0, 0, -2, -2, -1, -1, -2]
    np.testing.assert_allclose(
        targets.pairwise_iou(anchors[:5], gt)[:, 0], [1, 0.5, 100 / 220, 100 / 240, 1 / 3], 1e-6
    )
    # No boxes: every valid anchor is background.
    assert targets.match(anchors, np.zeros((0, 4)), valid).tolist() == [-1] * 6 + [-2]


def test_low_quality_matches_keep_each_boxes_best_anchors_and_later_boxes_win():
    boxes = [
        [100, 100, 130, 130],  # box 0 (area 900): best IoU 400 / 900 = 0.444 < 0.5
        [200, 200, 210, 212],  # box 1
        [200, 200, 210, 210],  # box 2
    ]
    anchors = [
        [100, 100, 120, 120],  # 0.444 with box 0: its best (tie) -> positive, box 0
        [110, 110, 130, 130],  # 0.444 with box 0: the other best (tie) -> box 0
        [100, 100, 110, 110],  # 100 / 900 = 0.111 -> negative
        # box 1: 110 / 120 = 0.917, box 2: 100 / 110 = 0.909. The argmax is box 1, but both
        # boxes have their best IoU here and box 2 comes later: mmdet gives it to box 2.
        [200, 200, 210, 211],
    ]
    assert targets.match(anchors, boxes).tolist() == [0, 0, -1, 2]
    assert targets.match(anchors, boxes, low_quality=False).tolist() == [-2, -2, -1, 1]


def test_a_box_overlapping_no_anchor_takes_none():
    got = targets.match([[0, 0, 10, 10], [20, 20, 30, 30]], [[50, 50, 60, 60]])
    assert got.tolist() == [-1, -1]


def test_image_targets_labels_background_and_deltas():
    anchors = np.array([[0, 0, 10, 10], [0, 0, 10, 30], [0, 0, 10, 22]], np.float32)
    boxes = np.array([[1, 1, 11, 12]], np.float32)
    cls, box, count = targets.image_targets(anchors, boxes, [7], num_classes=80)
    assert count == 1 and cls.tolist() == [7, 80, targets.IGNORE]
    np.testing.assert_allclose(box[0], encode_deltas(boxes, anchors[:1])[0], rtol=1e-6)
    assert not box[1:].any()


def test_valid_flags_follow_each_images_own_padding():
    flags = targets.valid_flags((128, 128), (64, 96))
    sizes = anchor_lib.feature_sizes((128, 128))
    assert flags.size == anchor_lib.num_anchors((128, 128))
    level0 = flags[: sizes[0][0] * sizes[0][1] * 9].reshape(16, 16, 9)
    assert level0[:8, :12].all() and not level0[8:].any() and not level0[:, 12:].any()
    # P7 (1 x 1 here): ceil(64 / 128) = 1 row, so it stays valid.
    assert flags[-9:].all()


# -- losses --------------------------------------------------------------------------------
def test_sigmoid_focal_loss_by_hand():
    logits = torch.tensor([0.0, 0.0, math.log(3.0)])
    target = torch.tensor([1.0, 0.0, 1.0])
    got = losses.sigmoid_focal_loss(logits, target).tolist()
    ln2 = math.log(2.0)
    # alpha_t * (1 - p_t)^2 * BCE: p = 0.5, 0.5, 0.75
    want = [0.25 * 0.25 * ln2, 0.75 * 0.25 * ln2, 0.25 * 0.0625 * -math.log(0.75)]
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_retinanet_losses_by_hand():
    # 2 images x 3 anchors x 2 classes, all logits 0 (p = 0.5).
    cls_targets = torch.tensor([[0, 2, -1], [2, 2, 2]])  # class 0 / background / ignored
    logits = torch.zeros(2, 3, 2)
    deltas = torch.zeros(2, 3, 4)
    deltas[0, 0] = torch.tensor([1.0, -1.0, 0.5, 0.0])  # the one positive: L1 = 2.5
    deltas[0, 1] = 9.0  # not positive: no box loss
    deltas[1] = -3.0
    box_targets = torch.zeros(2, 3, 4)
    out = losses.retinanet_losses(logits, deltas, cls_targets, box_targets, num_classes=2)
    positive = 0.25 * 0.25 * math.log(2.0)
    negative = 0.75 * 0.25 * math.log(2.0)
    # image 0: anchor 0 (class 0 = 1, class 1 = 0), anchor 1 (2 zeros), anchor 2 ignored;
    # image 1: 3 background anchors (6 zeros). N = max(1, 1) + max(0, 1) = 2.
    np.testing.assert_allclose(float(out["loss_cls"]), (positive + 9 * negative) / 2, rtol=1e-6)
    np.testing.assert_allclose(float(out["loss_box"]), 2.5 / 2, rtol=1e-6)
    assert float(out["num_pos"]) == 1.0
    assert float(losses.normalizer(cls_targets, 2)) == 2.0


# -- schedule ------------------------------------------------------------------------------
def test_warmup_steps_and_linear_scaling():
    assert schedule.scaled_lr(16) == pytest.approx(0.01)
    assert schedule.scaled_lr(8) == pytest.approx(0.005)
    assert schedule.scaled_lr(64) == pytest.approx(0.04)
    sched = schedule.StepSchedule(0.02)
    assert sched.lr(0, 0) == pytest.approx(0.02 * 0.001)
    assert sched.lr(250, 0) == pytest.approx(0.02 * (1 - 0.5 * 0.999))
    assert sched.lr(500, 0) == pytest.approx(0.02)
    assert sched.lr(9000, 7) == pytest.approx(0.02)
    assert sched.lr(9000, 8) == pytest.approx(0.002)
    assert sched.lr(9000, 11) == pytest.approx(0.0002)
    assert sched.lr(100, 8) == pytest.approx(0.002 * (1 - 0.8 * 0.999))  # warm-up of the step lr
    model = torch.nn.Linear(2, 2)
    optimizer = schedule.build_optimizer(model, 0.02)
    group = optimizer.param_groups[0]
    assert group["momentum"] == 0.9 and group["weight_decay"] == 1e-4
    assert sched.apply(optimizer, 0, 0) == group["lr"] == pytest.approx(2e-5)
    restored = schedule.StepSchedule(1.0)
    restored.load_state_dict(sched.state_dict())
    assert restored.lr(250, 9) == sched.lr(250, 9)


# -- data ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    """Two generated landscape images (one grayscale, one with a crowd box)."""
    root = tmp_path_factory.mktemp("coco")
    make_sample(str(root), images=2, seed=0)
    return root


def test_resize_rule_flip_and_boxes():
    assert data_lib.rescaled_hw(480, 640) == (800, 1067)
    assert data_lib.rescaled_hw(360, 640) == (750, 1333)
    for hw in ((480, 640), (640, 427), (500, 375), (360, 640), (1000, 100)):
        assert data_lib.rescaled_hw(*hw) == prepare.resized_hw(*hw)  # the inference rule
    flipped = data_lib.flip_boxes([[10, 20, 30, 40]], 100)
    assert flipped.tolist() == [[70, 20, 90, 40]]
    boxes = data_lib.resize_boxes([[0, 0, 64, 48], [600, 400, 700, 500]], (480, 640), (96, 128))
    np.testing.assert_allclose(boxes, [[0, 0, 12.8, 9.6], [120, 80, 128, 96]], rtol=1e-6)


def test_load_split_drops_crowd_tiny_boxes_and_empty_images(sample, tmp_path):
    records, stats = data_lib.load_split(str(sample), "val2017")
    assert stats["crowd"] == 1 and len(records) == 2
    assert all(r["boxes"].shape[1] == 4 and len(r["labels"]) == len(r["boxes"]) for r in records)
    # An image whose only box is a crowd, and a box thinner than a pixel, are dropped.
    data = json.loads((sample / "annotations" / "instances_val2017.json").read_text())
    first = data["images"][0]["id"]
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] != first or a["iscrowd"]]
    data["annotations"].append(dict(data["annotations"][-1], id=999, bbox=[5, 5, 0.5, 20]))
    root = tmp_path / "coco"
    (root / "annotations").mkdir(parents=True)
    (root / "annotations" / "instances_val2017.json").write_text(json.dumps(data))
    os.symlink(str(sample / "val2017"), str(root / "val2017"))
    records, stats = data_lib.load_split(str(root), "val2017")
    assert [r["id"] for r in records] == [data["images"][1]["id"]]
    assert stats["skipped_without_boxes"] == 1 and stats["dropped_boxes"] == 1
    with pytest.raises(UserError, match="train2017"):
        data_lib.load_split(str(root), "train2017")


def test_batch_plan_groups_pads_and_is_deterministic():
    groups = [0, 0, 0, 1, 1]
    plan = data_lib.batch_plan(groups, batch_size=2, world_size=2, seed=3, epoch=0)
    assert len(plan) == data_lib.steps_per_epoch(groups, 2, 2) == 2
    for step in plan:
        assert len(step) == 2 and all(len(batch) == 2 for batch in step)
        members = [i for batch in step for i, _ in batch]
        assert len({groups[i] for i in members}) == 1  # one orientation per step
    seen = sorted({i for step in plan for batch in step for i, _ in batch})
    assert seen == [0, 1, 2, 3, 4]
    assert plan == data_lib.batch_plan(groups, 2, 2, seed=3, epoch=0)
    assert plan != data_lib.batch_plan(groups, 2, 2, seed=3, epoch=1)
    # One rank's batches over a run: the epochs' plans back to back, from any iteration.
    epochs = [data_lib.batch_plan(groups, 2, 2, seed=3, epoch=e) for e in range(3)]
    rank1 = [step[1] for plan in epochs for step in plan]
    run = data_lib.RunBatches(groups, 2, 2, rank=1, seed=3, start=1, stop=5)
    assert len(run) == 4 and list(run) == rank1[1:5]


def test_collate_pads_to_32_and_to_input_matches_the_inference_feed(sample):
    records, _ = data_lib.load_split(str(sample), "val2017")
    dataset = data_lib.TrainDataset(records, 100, 130)
    items = [dataset[(0, False)], dataset[(1, True)]]
    assert items[0]["pixels"].shape[:2] == data_lib.rescaled_hw(480, 640, 100, 130)
    batch = data_lib.Collate()(items)
    assert tuple(batch["pixels"].shape) == (2, 128, 160, 3)  # 98 x 130 -> 128 x 160
    assert batch["cls_targets"].shape == (2, anchor_lib.num_anchors((128, 160)))
    assert all(n > 0 for n in batch["num_pos"])
    x = data_lib.to_input(batch["pixels"], batch["valid_hw"], "cpu")
    h, w = batch["valid_hw"][0].tolist()
    from zoostage.store import feed_spec, to_input

    want = to_input(
        batch["pixels"][:1].numpy(),
        [[h, w]],
        feed_spec(PIXEL_MEAN_BGR, PIXEL_STD_BGR, pad="after_norm"),
    )
    np.testing.assert_array_equal(x[:1].numpy(), want)
    # The flipped image is the mirror of the unflipped one.
    plain = dataset[(1, False)]
    np.testing.assert_array_equal(items[1]["pixels"], plain["pixels"][:, ::-1])


# -- checkpoints and backbone weights ------------------------------------------------------
def test_checkpoints_are_atomic_and_a_damaged_newest_falls_back(tmp_path):
    work = str(tmp_path)
    for iteration in (2, 4, 6):
        state = {"model": {"w": torch.full((2,), float(iteration))}, "iteration": iteration}
        checkpoints.save_checkpoint(work, state)
    assert sorted(os.listdir(work)) == ["iter_0000004.pth", "iter_0000006.pth", "last_checkpoint"]
    path, state = checkpoints.load_latest(work)
    assert state["iteration"] == 6 and path.endswith("iter_0000006.pth")
    (tmp_path / ".iter_0000008.pth.tmp-1").write_bytes(b"half a file")  # a killed writer
    with open(path, "r+b") as handle:  # and the newest damaged
        handle.truncate(100)
    path, state = checkpoints.load_latest(work)
    assert state["iteration"] == 4
    assert checkpoints.load_latest(str(tmp_path / "none")) == (None, None)
    assert "last_checkpoint" in checkpoints.clear(work) and not os.listdir(work)


_BRANCH = {"conv1": "2a", "conv2": "2b", "conv3": "2c", "shortcut": "1"}
_SUFFIX = {"weight": "w", "norm.weight": "bn_s", "norm.bias": "bn_b"}
_STEM = {"conv1.weight": "conv1_w", "conv1.norm.weight": "res_conv1_bn_s"}
_STEM["conv1.norm.bias"] = "res_conv1_bn_b"


def _caffe2_name(key):
    """detectron2 ResNet key -> the Caffe2 blob name (the MSRA R-50.pkl naming)."""
    head, rest = key.split(".", 1)
    if head == "stem":
        return _STEM[rest]
    block, conv, tail = rest.split(".", 2)
    return "%s_%s_branch%s_%s" % (head, block, _BRANCH[conv], _SUFFIX[tail])


def test_msra_caffe2_backbone_names_load_and_torchvision_is_refused(tmp_path):
    assert backbone_lib.caffe2_to_detectron2("conv1_w") == "stem.conv1.weight"
    assert backbone_lib.caffe2_to_detectron2("res_conv1_bn_b") == "stem.conv1.norm.bias"
    assert backbone_lib.caffe2_to_detectron2("res2_0_branch2a_bn_s") == "res2.0.conv1.norm.weight"
    assert backbone_lib.caffe2_to_detectron2("res5_2_branch2c_w") == "res5.2.conv3.weight"
    assert backbone_lib.caffe2_to_detectron2("res4_0_branch1_w") == "res4.0.shortcut.weight"
    assert backbone_lib.caffe2_to_detectron2("fc1000_w") is None
    source = net.build_model(seed=5)
    inverse = {}
    for key, value in source.backbone.bottom_up.state_dict().items():
        if not key.endswith(("running_mean", "running_var")):  # MSRA: BN folded, s and b only
            inverse[_caffe2_name(key)] = value.numpy()
    inverse["fc1000_w"] = np.zeros((1000, 2048), np.float32)
    inverse["res2_0_branch2a_w_momentum"] = np.zeros((64, 64, 1, 1), np.float32)
    path = tmp_path / "R-50.pkl"
    with open(str(path), "wb") as handle:
        pickle.dump(inverse, handle)  # ImageNet .pkl files are flat (detection ones: "blobs")
    target = net.build_model(seed=6)
    notes = backbone_lib.load_backbone(target, str(path))
    assert notes["format"] == "caffe2 (MSRA)" and "fc1000_w" in notes["ignored"]
    mine, theirs = target.state_dict(), source.state_dict()
    assert all(torch.equal(mine[k], theirs[k]) for k in mine if k.startswith("backbone.bottom_up."))
    assert not torch.equal(mine["head.cls_score.weight"], theirs["head.cls_score.weight"])
    frozen = backbone_lib.freeze(target)
    trainable = {n for n, p in target.named_parameters() if p.requires_grad}
    assert frozen > 0 and "backbone.bottom_up.res3.0.conv1.weight" in trainable
    assert not any(
        n.startswith(("backbone.bottom_up.stem", "backbone.bottom_up.res2")) for n in trainable
    )
    with pytest.raises(UserError, match="torchvision"):
        backbone_lib.backbone_state(
            {"conv1.weight": 0, "bn1.weight": 0, "layer1.0.conv1.weight": 0}
        )


def test_calibrated_random_init_starts_at_the_prior(sample):
    """A random ResNet's identity FrozenBN lets features grow through 50 layers on
    mean-subtracted input, so the head's sigmoid starts far above its prior of 0.01;
    calibrated on real images (what the worker does without --weights) it starts there."""
    records, _ = data_lib.load_split(str(sample), "val2017")
    dataset = data_lib.TrainDataset(records, SIZE, SIZE)
    batch = data_lib.Collate()([dataset[(i, False)] for i in range(len(records))])
    x = data_lib.to_input(batch["pixels"], batch["valid_hw"], "cpu")
    model = net.build_model(seed=0)
    with torch.no_grad():
        before = torch.sigmoid(model(x)[0]).mean().item()
        layers = backbone_lib.calibrate(model.backbone.bottom_up, x)
        after = torch.sigmoid(model(x)[0]).mean().item()
    assert layers == 53  # the stem's and every block's convolutions (and shortcuts)
    assert before > 0.1 and after < 0.03, (before, after)


def test_the_loop_calls_its_hooks_in_order_around_each_step():
    """trainer.Trainer is the whole loop: hooks see each iteration before and after its
    step, in the order registered; an epoch ends every per_epoch iterations."""
    from models.retinanet.train.trainer import HookBase, Trainer

    calls = []

    class FakeStep(object):
        def run(self):
            calls.append("step")
            return {"loss": 1.0}

    class Recorder(HookBase):
        def __init__(self, name):
            self.name = name

        def before_train(self):
            calls.append(self.name + ".before_train")

        def before_step(self):
            calls.append("%s.before %d" % (self.name, self.trainer.iteration))

        def after_step(self):
            trainer = self.trainer
            calls.append("%s.after %d %d" % (self.name, trainer.iteration, trainer.epoch_ended()))

        def after_train(self):
            calls.append(self.name + ".after_train")

    trainer = Trainer(FakeStep(), start_iter=3, stop_at=5, per_epoch=2)  # resumed at 3
    trainer.register([Recorder("a"), Recorder("b")])
    trainer.train()
    assert calls == [
        "a.before_train", "b.before_train",
        "a.before 3", "b.before 3", "step", "a.after 4 2", "b.after 4 2",
        "a.before 4", "b.before 4", "step", "a.after 5 0", "b.after 5 0",
        "a.after_train", "b.after_train",
    ]  # fmt: skip
    assert trainer.epoch == 2 and trainer.losses == {"loss": 1.0}


def test_old_pickled_training_checkpoint_gives_its_model_without_running_code(tmp_path):
    """An iter_*.pth of an older version (numpy RNG state pickled as numpy objects) is
    read by the restricted unpickler (numpy arrays and plain containers are allowed) and
    its model part taken; nothing in it is called."""
    path = tmp_path / "iter_0000010.pth"
    model = net.build_model(seed=0)
    torch.save({"model": model.state_dict(), "rng": np.random.get_state()}, str(path))
    other = net.build_model(seed=1)
    checkpoint.load_weights(other, str(path))
    for key, value in model.state_dict().items():
        assert torch.equal(other.state_dict()[key], value), key


# -- end to end on the generated sample ----------------------------------------------------
def calibrated_backbone(path, root):
    """The sample's calibrated random backbone, saved with detectron2 backbone keys."""
    records, _ = data_lib.load_split(str(root), "val2017")
    dataset = data_lib.TrainDataset(records, SIZE, SIZE)
    batch = data_lib.Collate()([dataset[(i, False)] for i in range(len(records))])
    x = data_lib.to_input(batch["pixels"], batch["valid_hw"], "cpu")
    torch.save(backbone_lib.calibrated_backbone(x), str(path))  # keys stem.*, res2.* ...
    return path


@pytest.fixture(scope="module")
def backbone(sample, tmp_path_factory):
    return calibrated_backbone(tmp_path_factory.mktemp("backbone") / "backbone.pth", sample)


def small_input_recipe(folder):
    """The retinanet recipe: its data stage takes min_size / max_size as parameters, so the
    test can run at 128 instead of the seed's 1344 (minutes on a loaded 2-core machine)."""
    from zoobox.core.recipe import load_recipe

    recipe = load_recipe("retinanet")
    assert "min_size" in recipe.params and "max_size" in recipe.params
    return recipe


def _engine(root, artifacts, devices, target_params, recipe=None):
    from zoobox.core.recipe import load_recipe
    from zoobox.pipeline.choice import Choice
    from zoobox.pipeline.pipeline import Options, Pipeline
    from zoobox.runners.host import HostRunner

    options = Options(
        artifacts=artifacts, cache=artifacts / "cache", data=root, params=target_params, echo=False
    )
    return Pipeline(
        recipe or load_recipe("retinanet"),
        Choice("host", "torchscript", list(devices), "test"),
        HostRunner(),
        options,
    )


TRAIN_PARAMS = {
    "train_split": "val2017",
    "epochs": 24,  # 2 images, 1 per process and step: 24 steps
    "train_batch_size": 1,
    "lr": 0.0025,
    "warmup_iters": 2,
    "steps": "100",
    "train_min_size": SIZE,
    "train_max_size": SIZE,
    "train_workers": 1,
    "train_device": "cpu",
    "train_threads": 1,
    "log_every": 1,
    "checkpoint_epochs": 0,
    "checkpoint_every": 12,
}


@pytest.fixture(scope="module")
def trained(sample, backbone, tmp_path_factory):
    """`invoke retinanet.train --devices 0,1` on the sample: two gloo processes."""
    artifacts = tmp_path_factory.mktemp("artifacts")
    params = dict(TRAIN_PARAMS, backbone=str(backbone))
    result = _engine(sample, artifacts, [0, 1], params).run("train")
    assert [(p.name, p.action) for p in result.plans] == [("train", "run")]
    out = result.stage_dir("train")
    return {
        "out": out,
        "artifacts": artifacts,
        "summary": json.loads((out / "train.json").read_text()),
    }


@pytest.mark.slow
def test_two_processes_loss_falls_and_ranks_agree(trained):
    summary = trained["summary"]
    assert summary["world_size"] == 2 and summary["global_batch"] == 2
    assert summary["status"] == "complete" and summary["iterations"] == 24
    assert summary["ranks_identical"] and len(summary["rank_weight_digests"]) == 2
    curve = [entry["loss"] for entry in summary["loss_curve"]]
    assert len(curve) == 24 and all(math.isfinite(v) for v in curve)
    first, last = np.mean(curve[:4]), np.mean(curve[-4:])
    assert last < 0.9 * first, (first, last)
    assert summary["loss_curve"][0]["lr"] == pytest.approx(0.0025 * 0.001)
    assert {"loss_cls", "loss_box", "images_per_s"} <= set(summary["loss_curve"][-1])
    assert summary["weights"]["format"] == "detectron2 (backbone)"
    assert summary["images_per_s"] > 0
    rows = {row["metric"]: row for row in summary["comparison"]}
    assert rows["AP"]["status"] == "no published number for 2 devices"
    assert summary["published"]["runs"]["8"]["images_per_s"] == 112
    work = trained["artifacts"] / "retinanet" / "work" / "train"
    assert "iter_0000024.pth" in os.listdir(str(work))  # checkpoint_every 12: 12, 24
    # The checkpoint is a plain detectron2-keyed state dict: the inference loader takes it.
    model = net.build_model(seed=0)
    notes = checkpoint.load_weights(model, str(trained["out"] / "model_final.pth"))
    assert notes["keys"] == len(model.state_dict())


@pytest.mark.slow
def test_iteration_checkpoints_load_as_weights(trained):
    """work/train/iter_*.pth hold the optimizer and RNG state too: --weights takes their
    model part (the checkpoint at the last iteration is model_final.pth's weights)."""
    work = trained["artifacts"] / "retinanet" / "work" / "train"
    from_iter, from_final = net.build_model(seed=1), net.build_model(seed=2)
    checkpoint.load_weights(from_iter, str(work / "iter_0000024.pth"))
    checkpoint.load_weights(from_final, str(trained["out"] / "model_final.pth"))
    a, b = from_iter.state_dict(), from_final.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    state = torch.load(str(work / "iter_0000024.pth"), weights_only=True)  # no code run
    assert {"optimizer", "rng", "iteration"} <= set(state) and state["iteration"] == 24


@pytest.mark.slow
def test_trained_checkpoint_runs_through_retinanet_all(trained, sample, tmp_path):
    """retinanet.all on the checkpoint, the seed profile by default, then
    --param profile=upstream: the stages whose behaviour differs rerun, and the report
    compares with that profile's published number (38.3, then 38.6)."""
    recipe = small_input_recipe(tmp_path)
    params = {
        "weights": str(trained["out"] / "model_final.pth"),
        "input_size": SIZE,
        "min_size": SIZE,
        "max_size": SIZE,
    }
    result = _engine(sample, trained["artifacts"], [0], params, recipe).run()
    assert [p.name for p in result.plans] == recipe.default_stages  # train is not in all
    assert all(p.action == "run" for p in result.plans)
    export = json.loads((result.stage_dir("export") / "export.json").read_text())
    assert export["weights"] == "given" and export["output_kind"] == "class_topk"
    metrics = json.loads((result.stage_dir("evaluate") / "metrics.json").read_text())
    assert metrics["images"] == 2 and metrics["metrics"]["AP"] is not None
    report = json.loads((result.stage_dir("report") / "summary.json").read_text())
    assert report["profile"] == "seed" and report["rows"][0]["published"] == 38.3
    upstream = dict(params, profile="upstream")
    result = _engine(sample, trained["artifacts"], [0], upstream, recipe).run()
    actions = dict((p.name, p.action) for p in result.plans)
    for name in ("data", "export", "infer", "evaluate", "report"):
        assert actions[name] == "run", (name, actions)
    assert actions["weights"] != "run"
    export = json.loads((result.stage_dir("export") / "export.json").read_text())
    assert export["output_kind"] == "topk" and export["profile"] == "upstream"
    report = json.loads((result.stage_dir("report") / "summary.json").read_text())
    assert report["profile"] == "upstream" and report["rows"][0]["published"] == 38.6


def _launch_argv(root, out, work, *extra):
    args = [
        sys.executable, "-m", "models.retinanet.train.launch",
        "--out", out, "--data", root, "--split", "val2017", "--work-dir", work,
        "--device-type", "cpu", "--threads", "1", "--batch-size", "1", "--epochs", "3",
        "--lr", "0.005", "--warmup-iters", "2", "--min-size", SIZE, "--max-size", SIZE,
        "--log-every", "1", "--checkpoint-epochs", "0", "--workers", "0", *extra,
    ]  # fmt: skip
    return [str(a) for a in args]


def _launch(root, out, work, *extra):
    return subprocess.run(
        _launch_argv(root, out, work, *extra),
        cwd=str(REPO),
        env=stage_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        universal_newlines=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def uninterrupted(sample, backbone, tmp_path_factory):
    """5 iterations of one process (2 steps an epoch), never stopped."""
    folder = tmp_path_factory.mktemp("uninterrupted")
    done = _launch(sample, folder / "out", folder / "work", "--max-iters", 5, "--weights", backbone)
    assert done.returncode == 0, done.stderr
    return {
        "weights": torch.load(str(folder / "out" / "model_final.pth")),
        "summary": json.loads((folder / "out" / "train.json").read_text()),
    }


def _same_run(uninterrupted, out):
    weights = torch.load(str(out / "model_final.pth"))
    want = uninterrupted["weights"]
    assert weights.keys() == want.keys() and all(torch.equal(weights[k], want[k]) for k in want)
    summary = json.loads((out / "train.json").read_text())
    curve = [e["loss"] for e in summary["loss_curve"]]
    assert curve == [e["loss"] for e in uninterrupted["summary"]["loss_curve"]]
    return summary


@pytest.mark.slow
def test_resume_equals_an_uninterrupted_run(sample, backbone, uninterrupted, tmp_path):
    weights = ["--weights", backbone]
    # Stopped mid-epoch 2, then resumed with other loader settings (workers do not
    # change the data: the flips come from the plan).
    first = _launch(sample, tmp_path / "b1", tmp_path / "wb", "--max-iters", 3, *weights)
    assert first.returncode == 0, first.stderr
    second = _launch(
        sample, tmp_path / "b2", tmp_path / "wb", "--max-iters", 5, "--resume", "auto",
        "--workers", 2, *weights,
    )  # fmt: skip
    assert second.returncode == 0, second.stderr
    summary = _same_run(uninterrupted, tmp_path / "b2")
    assert summary["resumed_from"]["iteration"] == 3 and summary["this_run_iterations"] == 2
    # A checkpoint from other settings is refused, in one line.
    other = _launch(sample, tmp_path / "c", tmp_path / "wb", "--resume", "yes", "--seed", 1)
    assert other.returncode == USER_ERROR_EXIT and "seed 0 -> 1" in other.stderr
    assert len(other.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_a_killed_run_resumes_from_its_last_complete_checkpoint(
    sample, backbone, uninterrupted, tmp_path
):
    import signal
    import time

    work = tmp_path / "work"
    argv = _launch_argv(
        sample, tmp_path / "killed", work, "--max-iters", 5, "--checkpoint-every", 3,
        "--weights", backbone,
    )  # fmt: skip
    process = subprocess.Popen(
        argv,
        cwd=str(REPO),
        env=stage_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 240
    while not (work / "last_checkpoint").exists() and process.poll() is None:
        assert time.time() < deadline, "no checkpoint in 240 s"
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)  # the launcher and its worker, mid-run
    process.wait()
    resumed = _launch(
        sample, tmp_path / "b", work, "--max-iters", 5, "--resume", "auto", "--weights", backbone
    )
    assert resumed.returncode == 0, resumed.stderr
    summary = _same_run(uninterrupted, tmp_path / "b")
    assert summary["resumed_from"]["iteration"] == 3


def test_user_errors_are_one_line(tmp_path, sample):
    result = _launch(tmp_path / "nothing", tmp_path / "o", tmp_path / "w")
    assert result.returncode == USER_ERROR_EXIT
    assert result.stderr.startswith("error: COCO folder") and len(result.stderr.splitlines()) == 1
    result = _launch(sample, tmp_path / "o2", tmp_path / "w2", "--pad-size", 100)
    assert result.returncode == USER_ERROR_EXIT and "multiple of 32" in result.stderr
    assert launch.parse_resume("true") == "yes" and launch.parse_lr("auto") is None
    with pytest.raises(UserError):
        launch.parse_devices("0,x")


@pytest.mark.slow
def test_evaluation_scores_the_trained_model(trained, sample):
    """The training's evaluation is the inference recipe's data -> infer -> evaluate."""
    model = net.build_model(seed=0)
    checkpoint.load_weights(model, str(trained["out"] / "model_final.pth"))
    settings = {
        "root": str(sample),
        "out": str(trained["out"]),
        "input_size": SIZE,
        "min_size": SIZE,
        "max_size": SIZE,
        "profile": "seed",
    }
    result = evaluation.evaluate(model, settings, torch.device("cpu"))
    assert result["images"] == 2 and set(result["metrics"]) >= {"AP", "AP50"}
    assert result["profile"] == "seed"
    written = json.loads((trained["out"] / "eval" / "metrics.json").read_text())
    assert written["metrics"] == result["metrics"]
    published = summary_lib.published_numbers(str(REPO / "models" / "retinanet" / "recipe.yaml"))
    run = {"world_size": 1, "eval": result, "iterations": 1, "total_iterations": 1,
           "device_type": "cpu", "device_name": "cpu", "images_per_s": 3.4}  # fmt: skip
    # The seed's 1-device AP comes from its 12-epoch script: a 12-epoch run is compared ...
    rows = summary_lib.compare(dict(run, epochs=12), published)
    assert rows[0]["published"] == 36.6 and rows[0]["status"] == "subset (2 images)"
    assert rows[1]["published"] == 17 and rows[1]["ratio"] == pytest.approx(0.2)
    # ... a 1-epoch run is not.
    rows = summary_lib.compare(dict(run, epochs=1), published)
    assert rows[0]["status"] == "published after 12 epochs, this run has 1: not compared"
