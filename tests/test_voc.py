"""VOC2007 test side of the RefineDet recipe: layout, sample, data stage, VOC07 mAP.

The VOC07 evaluation is checked three ways: hand-made cases with known APs, equality
with `reference_voc_eval` below (a straight port of RefineDet.PyTorch's eval_refinedet.py
voc_eval + voc_ap, results files included) on random detections, and the stage's
command line on generated and real (fixture) data.
"""

import json
import os
import shutil

import numpy as np
import pytest

from data_scripts.voc import evaluate as voc_eval_mod
from data_scripts.voc import voc07
from data_scripts.voc.evaluate import summarize
from data_scripts.voc.layout import VOC_CLASSES, VOCLayout, locate, parse_annotation
from data_scripts.voc.sample import make_sample
from data_scripts.voc.voc07 import match_class, results_file_round_trip, voc07_ap, voc07_eval
from tests.conftest import input_args, run_stage
from zoostage.errors import UserError
from zoostage.store import Store

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE = os.path.join(os.path.dirname(REPO), "shared", "fixtures", "voc2007-mini")
needs_fixture = pytest.mark.skipif(
    not os.path.isdir(os.path.join(FIXTURE, "VOCdevkit", "VOC2007")),
    reason="fixture ../shared/fixtures/voc2007-mini is absent",
)


# ---------------------------------------------------------------------------------------
# The reference: RefineDet.PyTorch eval_refinedet.py (write_voc_results_file, voc_eval,
# voc_ap with use_07_metric=True), ported loop for loop. Differences, all mechanical:
# results "files" are lists of lines in memory, the annotations come parsed (parse_rec's
# values), np.bool is bool (gone from numpy), 0/0 warnings are silenced, the sort is
# stable (the reference's quicksort leaves the order of tied scores to the numpy build),
# and `dets[k, 0] + 1` is spelled float(dets[k, 0]) + 1: numpy 1.20 (the reference's)
# adds a Python int to a float32 scalar in float64, numpy >= 2 in float32.


def reference_results_lines(detections, image_ids, classname):
    """write_voc_results_file for one class: '{id} {score:.3f} {x1+1:.1f} ...' lines."""
    lines = []
    for image_id in image_ids:
        dets = detections[image_id].get(classname)
        if dets is None or len(dets) == 0:
            continue
        dets = np.asarray(dets, dtype=np.float32).reshape(-1, 5)
        for k in range(dets.shape[0]):
            lines.append(
                "{:s} {:.3f} {:.1f} {:.1f} {:.1f} {:.1f}\n".format(
                    image_id,
                    dets[k, -1],
                    float(dets[k, 0]) + 1,
                    float(dets[k, 1]) + 1,
                    float(dets[k, 2]) + 1,
                    float(dets[k, 3]) + 1,
                )
            )
    return lines


def reference_voc_ap(rec, prec):
    ap = 0.0
    for t in np.arange(0.0, 1.1, 0.1):
        if np.sum(rec >= t) == 0:
            p = 0
        else:
            p = np.max(prec[rec >= t])
        ap = ap + p / 11.0
    return ap


def reference_voc_eval(lines, recs, imagenames, classname, ovthresh=0.5):
    class_recs = {}
    npos = 0
    for imagename in imagenames:
        R = [obj for obj in recs[imagename] if obj["name"] == classname]
        bbox = np.array([x["bbox"] for x in R])
        difficult = np.array([x["difficult"] for x in R]).astype(bool)
        det = [False] * len(R)
        npos = npos + sum(~difficult)
        class_recs[imagename] = {"bbox": bbox, "difficult": difficult, "det": det}

    if any(lines) == 1:
        splitlines = [x.strip().split(" ") for x in lines]
        image_ids = [x[0] for x in splitlines]
        confidence = np.array([float(x[1]) for x in splitlines])
        BB = np.array([[float(z) for z in x[2:]] for x in splitlines])

        sorted_ind = np.argsort(-confidence, kind="stable")
        BB = BB[sorted_ind, :]
        image_ids = [image_ids[x] for x in sorted_ind]

        nd = len(image_ids)
        tp = np.zeros(nd)
        fp = np.zeros(nd)
        with np.errstate(divide="ignore", invalid="ignore"):
            for d in range(nd):
                R = class_recs[image_ids[d]]
                bb = BB[d, :].astype(float)
                ovmax = -np.inf
                BBGT = R["bbox"].astype(float)
                if BBGT.size > 0:
                    ixmin = np.maximum(BBGT[:, 0], bb[0])
                    iymin = np.maximum(BBGT[:, 1], bb[1])
                    ixmax = np.minimum(BBGT[:, 2], bb[2])
                    iymax = np.minimum(BBGT[:, 3], bb[3])
                    iw = np.maximum(ixmax - ixmin, 0.0)
                    ih = np.maximum(iymax - iymin, 0.0)
                    inters = iw * ih
                    uni = (
                        (bb[2] - bb[0]) * (bb[3] - bb[1])
                        + (BBGT[:, 2] - BBGT[:, 0]) * (BBGT[:, 3] - BBGT[:, 1])
                        - inters
                    )
                    overlaps = inters / uni
                    ovmax = np.max(overlaps)
                    jmax = np.argmax(overlaps)

                if ovmax > ovthresh:
                    if not R["difficult"][jmax]:
                        if not R["det"][jmax]:
                            tp[d] = 1.0
                            R["det"][jmax] = 1
                        else:
                            fp[d] = 1.0
                else:
                    fp[d] = 1.0

            fp = np.cumsum(fp)
            tp = np.cumsum(tp)
            rec = tp / float(npos)
            prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
            ap = reference_voc_ap(rec, prec)
    else:
        rec = -1.0
        prec = -1.0
        ap = -1.0
    return rec, prec, ap


def reference_aps(annotations, detections, image_ids, classes=VOC_CLASSES):
    return {
        c: reference_voc_eval(
            reference_results_lines(detections, image_ids, c), annotations, image_ids, c
        )[2]
        for c in classes
    }


# ---------------------------------------------------------------------------------------
# Helpers.


def obj(name, xml_box, difficult=0):
    """An annotation object as parse_annotation returns it (corners = XML - 1)."""
    return {"name": name, "difficult": difficult, "truncated": 0, "bbox": [v - 1 for v in xml_box]}


def det_on(xml_box, score):
    """A detection that the evaluation's +1 maps exactly onto parse_rec's box of xml_box."""
    return [v - 2.0 for v in xml_box] + [score]


def aps(annotations, detections, classes=("dog",)):
    result = voc07_eval(annotations, detections, classes=classes)
    return dict((c, result[c]["ap"]) for c in classes)


def random_detections(annotations, image_ids, rng, per_image=12, classes=VOC_CLASSES):
    """Detections near the objects (hits, duplicates, near misses) and anywhere, with ties."""
    detections = {}
    for image_id in image_ids:
        per_class = {}
        for o in annotations[image_id]:
            x1, y1, x2, y2 = o["bbox"]
            w, h = x2 - x1 + 1.0, y2 - y1 + 1.0
            for _ in range(rng.randint(0, 4)):
                jitter = rng.normal(0, 0.15, 4) * [w, h, w, h]
                box = np.array([x1, y1, x2, y2], float) - 1 + jitter
                name = o["name"] if rng.rand() < 0.85 else classes[rng.randint(len(classes))]
                per_class.setdefault(name, []).append([*box, rng.rand()])
        for _ in range(rng.randint(0, per_image)):
            x1, y1 = rng.uniform(0, 400, 2)
            box = [x1, y1, x1 + rng.uniform(1, 200), y1 + rng.uniform(1, 200)]
            name = classes[rng.randint(len(classes))]
            per_class.setdefault(name, []).append([*box, rng.rand()])
        for rows in per_class.values():
            for row in rows:
                if rng.rand() < 0.3:  # coarse scores: ties after the 0.001 rounding
                    row[4] = round(row[4], 2)
                if rng.rand() < 0.03:  # inverted corners: negative areas and IoUs
                    row[0], row[2] = row[2], row[0]
                elif rng.rand() < 0.03:  # zero width: 0 / 0 against a degenerate box
                    row[2] = row[0]
        detections[image_id] = per_class
    return detections


def random_annotations(n_images, rng, classes=VOC_CLASSES):
    annotations = {}
    for i in range(n_images):
        objects = []
        for _ in range(rng.randint(0, 8)):
            x1, y1 = rng.randint(1, 400, 2)
            w, h = rng.randint(1, 150, 2)
            if rng.rand() < 0.05:
                w = 0  # a degenerate box: IoU 0 / 0 = nan with a zero-width detection
            name = classes[rng.randint(3)] if rng.rand() < 0.7 else classes[rng.randint(20)]
            objects.append(obj(name, [x1, y1, x1 + w, y1 + h], int(rng.rand() < 0.15)))
        annotations["%06d" % (i + 1)] = objects
    return annotations


def assert_one_error_line(proc, *needles, **kwargs):
    """Exit 3, one 'error: ' line (the last; progress lines may come before), no traceback."""
    assert proc.returncode == 3, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], proc.stderr
    if kwargs.get("alone", True):
        assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    root = tmp_path_factory.mktemp("voc-sample")
    return make_sample(str(root), images=6, seed=0)


# ---------------------------------------------------------------------------------------
# Hand-made VOC07 AP cases (class "dog"; boxes are XML corners).

BOX_A = [11, 11, 110, 110]
BOX_B = [201, 11, 300, 110]
BOX_C = [11, 201, 110, 300]
BOX_D = [201, 201, 300, 300]
NOWHERE = [501, 501, 560, 560]


def test_classes_in_reference_order():
    assert len(VOC_CLASSES) == 20
    assert VOC_CLASSES[0] == "aeroplane" and VOC_CLASSES[-1] == "tvmonitor"
    assert VOC_CLASSES.index("person") == 14 and VOC_CLASSES.index("chair") == 8


def test_perfect_detection_is_100():
    annotations = {"a": [obj("dog", BOX_A)]}
    dets = {"a": {"dog": [det_on(BOX_A, 0.9)]}}
    # 11 * (1 / 11.) sums to 1.0000000000000002, in the reference as here.
    assert aps(annotations, dets)["dog"] == reference_aps(annotations, dets, ["a"])["dog"]
    assert aps(annotations, dets)["dog"] == pytest.approx(1.0, abs=1e-15)
    mean, percent, excluded = summarize(voc07_eval(annotations, dets))
    assert percent["dog"] == pytest.approx(100.0) and mean == pytest.approx(100.0)
    assert len(excluded) == 19 and percent["cat"] is None


def test_one_fp_above_a_tp_halves_precision():
    # tp = [0, 1], fp = [1, 0]: recall [0, 1], precision [0, 0.5]: 0.5 at every t.
    annotations = {"a": [obj("dog", BOX_A)]}
    dets = {"a": {"dog": [det_on(NOWHERE, 0.9), det_on(BOX_A, 0.8)]}}
    assert aps(annotations, dets)["dog"] == pytest.approx(0.5, abs=1e-15)


def test_difficult_object_is_neither_tp_nor_fp():
    annotations = {"a": [obj("dog", BOX_A), obj("dog", BOX_B, difficult=1)]}
    dets = {"a": {"dog": [det_on(BOX_B, 0.9), det_on(BOX_A, 0.8)]}}
    result = voc07_eval(annotations, dets, classes=("dog",))["dog"]
    assert result["npos"] == 1
    assert result["ap"] == pytest.approx(1.0, abs=1e-15)
    gt_boxes = np.array([o["bbox"] for o in annotations["a"]], float)
    boxes, scores = results_file_round_trip(dets["a"]["dog"])
    tp, fp = match_class(
        gt_boxes, np.array([False, True]), np.array([0, 0]), np.array([0, 0]), boxes, scores, 0.5
    )
    assert tp.tolist() == [0.0, 1.0] and fp.tolist() == [0.0, 0.0]


def test_second_detection_of_a_matched_object_is_fp():
    # tp = [1, 0, 1], fp = [0, 1, 0]: recall [.5, .5, 1], precision [1, .5, 2/3]:
    # t = 0 .. 0.5 -> 1 (6 points), t = 0.6 .. 1 -> 2/3 (5 points): AP = 28/33.
    annotations = {"a": [obj("dog", BOX_A), obj("dog", BOX_B)]}
    dets = {"a": {"dog": [det_on(BOX_A, 0.9), det_on(BOX_A, 0.8), det_on(BOX_B, 0.7)]}}
    assert aps(annotations, dets)["dog"] == pytest.approx(28.0 / 33.0, abs=1e-12)


def test_eleven_point_interpolation_by_hand():
    # Four dogs, one never found. Sorted: TP .9, FP .8, TP .7, FP .6, TP .5.
    # recall    .25  .25  .50  .50  .75
    # precision 1    1/2  2/3  1/2  3/5
    # t = 0, .1, .2 -> 1; t = .3, .4, .5 -> 2/3; t = .6, .7 -> 3/5; t = .8, .9, 1 -> 0.
    annotations = {"a": [obj("dog", b) for b in (BOX_A, BOX_B, BOX_C, BOX_D)]}
    dets = {
        "a": {
            "dog": [
                det_on(BOX_A, 0.9),
                det_on(NOWHERE, 0.8),
                det_on(BOX_B, 0.7),
                det_on(NOWHERE, 0.6),
                det_on(BOX_C, 0.5),
            ]
        }
    }
    expected = (3 * 1.0 + 3 * 2.0 / 3.0 + 2 * 0.6) / 11.0
    assert aps(annotations, dets)["dog"] == pytest.approx(expected, abs=1e-12)
    rec = np.array([0.25, 0.25, 0.5, 0.5, 0.75])
    prec = np.array([1.0, 0.5, 2.0 / 3.0, 0.5, 0.6])
    assert voc07_ap(rec, prec) == reference_voc_ap(rec, prec)
    assert voc07_ap(rec, prec) == pytest.approx(expected, abs=1e-12)


def test_iou_must_exceed_half_with_continuous_areas():
    # parse_rec box [0, 0, 10, 10] (XML 1..11), area 100 without the +1 widths.
    annotations = {"a": [obj("dog", [1, 1, 11, 11])]}
    # After the +1: [0, 0, 10, 5] -> IoU 50 / 100 = 0.5 exactly: not > 0.5, a FP.
    assert aps(annotations, {"a": {"dog": [[-1, -1, 9, 4, 0.9]]}})["dog"] == 0.0
    # [0, 0, 10, 4.9]: IoU 0.49 here (0.536 with py-faster-rcnn's +1 widths): a FP.
    assert aps(annotations, {"a": {"dog": [[-1, -1, 9, 3.9, 0.9]]}})["dog"] == 0.0
    # [0, 0, 10, 5.1]: IoU 0.51: a TP.
    assert aps(annotations, {"a": {"dog": [[-1, -1, 9, 4.1, 0.9]]}})["dog"] == pytest.approx(1.0)


def test_detection_in_image_without_objects_of_its_class_is_fp():
    annotations = {"a": [obj("dog", BOX_A)], "b": [obj("cat", BOX_A)]}
    dets = {"a": {"dog": [det_on(BOX_A, 0.5)]}, "b": {"dog": [det_on(BOX_A, 0.9)]}}
    # FP first (score .9), then the TP: precision [0, .5] -> 0.5 everywhere.
    assert aps(annotations, dets)["dog"] == pytest.approx(0.5, abs=1e-15)


def test_classes_without_objects_or_detections_as_the_reference():
    # The reference: detections but npos = 0 -> recall 0/0 = nan, no t reached: AP 0;
    # no detections at all -> the sentinel -1. Both went into its mean. summarize()
    # excludes classes without objects and counts "objects, no detections" as 0.
    annotations = {"a": [obj("dog", BOX_A), obj("cat", BOX_B, difficult=1)], "b": []}
    dets = {"a": {"dog": [det_on(BOX_A, 0.9)], "cat": [det_on(BOX_B, 0.8)]}, "b": {}}
    annotations["a"].append(obj("cow", BOX_C))
    per_class = voc07_eval(annotations, dets, classes=("dog", "cat", "bird", "cow"))
    ref = reference_aps(annotations, dets, ["a", "b"], ("dog", "cat", "bird", "cow"))
    assert dict((c, per_class[c]["ap"]) for c in ref) == ref
    assert ref == {"dog": pytest.approx(1.0), "cat": 0.0, "bird": -1.0, "cow": -1.0}
    mean, percent, excluded = summarize(per_class)
    assert percent == {"dog": pytest.approx(100.0), "cat": None, "bird": None, "cow": 0.0}
    assert excluded == ["cat", "bird"]
    assert mean == pytest.approx(50.0)


def test_nothing_measurable_is_a_user_error():
    per_class = voc07_eval({"a": []}, {"a": {"dog": [det_on(BOX_A, 0.9)]}}, classes=("dog",))
    with pytest.raises(UserError):
        summarize(per_class)


# ---------------------------------------------------------------------------------------
# The vectorized evaluation equals the loop reference.


def test_results_file_round_trip_is_the_text_round_trip():
    rng = np.random.RandomState(3)
    dets = np.concatenate(
        [
            rng.uniform(-5, 600, (4000, 5)),
            np.round(rng.uniform(0, 500, (2000, 5)), 2) + 0.05,  # near ties of .x5
            np.round(rng.uniform(0, 1, (2000, 5)), 3) + 0.0005,
        ]
    ).astype(np.float32)
    dets[:, 4] = np.abs(dets[:, 4]) % 1
    boxes, scores = results_file_round_trip(dets)
    lines = reference_results_lines({"x": {"dog": dets}}, ["x"], "dog")
    parsed = np.array([[float(v) for v in line.split()[1:]] for line in lines])
    assert np.array_equal(scores, parsed[:, 0])
    assert np.array_equal(boxes, parsed[:, 1:])


def test_equals_reference_on_random_annotations():
    rng = np.random.RandomState(0)
    for trial in range(3):
        annotations = random_annotations(60, rng)
        ids = sorted(annotations)
        dets = random_detections(annotations, ids, rng)
        mine = voc07_eval(annotations, dets, ids)
        ref = reference_aps(annotations, dets, ids)
        assert dict((c, mine[c]["ap"]) for c in VOC_CLASSES) == ref, trial


def test_equals_reference_with_small_chunks(monkeypatch):
    monkeypatch.setattr(voc07, "CHUNK_PAIRS", 7)
    rng = np.random.RandomState(1)
    annotations = random_annotations(30, rng)
    ids = sorted(annotations)
    dets = random_detections(annotations, ids, rng)
    mine = voc07_eval(annotations, dets, ids)
    assert dict((c, mine[c]["ap"]) for c in VOC_CLASSES) == reference_aps(annotations, dets, ids)


def test_equals_reference_on_generated_sample(sample):
    layout = VOCLayout(sample)
    annotations = layout.annotations()
    rng = np.random.RandomState(5)
    for _ in range(5):
        dets = random_detections(annotations, layout.ids, rng, per_image=30)
        mine = voc07_eval(annotations, dets, layout.ids)
        ref = reference_aps(annotations, dets, layout.ids)
        assert dict((c, mine[c]["ap"]) for c in VOC_CLASSES) == ref


@needs_fixture
def test_equals_reference_on_fixture_annotations():
    layout = VOCLayout(FIXTURE)
    annotations = layout.annotations()
    rng = np.random.RandomState(7)
    for _ in range(5):
        dets = random_detections(annotations, layout.ids, rng, per_image=40)
        mine = voc07_eval(annotations, dets, layout.ids)
        ref = reference_aps(annotations, dets, layout.ids)
        assert dict((c, mine[c]["ap"]) for c in VOC_CLASSES) == ref


# ---------------------------------------------------------------------------------------
# Layout and sample.


def test_sample_layout_and_determinism(tmp_path, sample):
    import cv2

    layout = VOCLayout(sample)
    assert layout.ids == ["%06d" % i for i in range(1, 7)]
    objects = layout.annotations()
    assert any(o["difficult"] for o in objects["000001"])
    for image_id, items in objects.items():
        assert items and all(o["name"] in VOC_CLASSES for o in items)
        h, w = cv2.imread(layout.image_path(image_id)).shape[:2]
        for o in items:  # parse_rec corners: 0-based, inside the image
            x1, y1, x2, y2 = o["bbox"]
            assert 0 <= x1 < x2 < w and 0 <= y1 < y2 < h
    again = make_sample(str(tmp_path), images=6, seed=0)
    for sub in ("JPEGImages/000003.jpg", "Annotations/000001.xml", "ImageSets/Main/test.txt"):
        with open(os.path.join(sample, "VOC2007", sub), "rb") as a:
            with open(os.path.join(again, "VOC2007", sub), "rb") as b:
                assert a.read() == b.read(), sub


def test_locate_accepts_devkit_voc2007_and_parent(sample):
    voc_dir = os.path.join(sample, "VOC2007")
    assert locate(sample) == voc_dir
    assert locate(voc_dir) == voc_dir
    assert locate(os.path.dirname(sample)) == voc_dir


def test_sample_command(tmp_path):
    proc = run_stage("data_scripts.voc.sample", "--out", tmp_path, "--images", "2", "--seed", "3")
    assert proc.returncode == 0, proc.stderr
    assert VOCLayout(str(tmp_path)).ids == ["000001", "000002"]


@needs_fixture
def test_fixture_layout_parses_five_records_with_difficult():
    layout = VOCLayout(os.path.join(FIXTURE, "VOCdevkit"))
    assert layout.ids == ["000001", "000002", "000003", "000004", "000005"]
    annotations = layout.annotations()
    assert len(annotations) == 5
    chairs = annotations["000005"]
    assert [o["name"] for o in chairs] == ["chair"] * 5
    assert [o["difficult"] for o in chairs] == [0, 0, 1, 0, 1]
    assert chairs[2]["bbox"] == [4, 243, 66, 373]  # XML 5 244 67 374, minus 1
    assert VOCLayout(os.path.join(FIXTURE, "VOCdevkit", "VOC2007")).ids == layout.ids


def test_missing_image_list_is_one_line(tmp_path):
    devkit = make_sample(str(tmp_path), images=2, seed=1)
    os.remove(os.path.join(devkit, "VOC2007", "ImageSets", "Main", "test.txt"))
    proc = run_stage(
        "data_scripts.voc.prepare",
        *input_args("refinedet"),
        "--out",
        tmp_path / "out",
        "--root",
        devkit,
    )
    expected = os.path.join(devkit, "VOC2007", "ImageSets", "Main", "test.txt")
    assert_one_error_line(proc, expected, "VOCtest_06-Nov-2007.tar")
    proc = run_stage(
        "data_scripts.voc.prepare",
        *input_args("refinedet"),
        "--out",
        tmp_path / "out",
        "--root",
        tmp_path / "x",
    )
    assert_one_error_line(proc, "does not exist", "VOCtest_06-Nov-2007.tar")


def test_unparsable_annotation_is_one_line_naming_it(tmp_path):
    devkit = make_sample(str(tmp_path), images=3, seed=2)
    bad = os.path.join(devkit, "VOC2007", "Annotations", "000002.xml")
    with open(bad, "w") as handle:
        handle.write("<annotation><object><name>dog</name>")
    with pytest.raises(UserError) as caught:
        parse_annotation(bad)
    assert bad in str(caught.value)
    proc = run_stage(
        "data_scripts.voc.prepare",
        *input_args("refinedet"),
        "--out",
        tmp_path / "out",
        "--root",
        devkit,
    )
    assert_one_error_line(proc, bad, "does not parse")


def test_missing_image_is_one_line_naming_it(tmp_path):
    devkit = make_sample(str(tmp_path), images=3, seed=2)
    gone = os.path.join(devkit, "VOC2007", "JPEGImages", "000003.jpg")
    os.remove(gone)
    proc = run_stage(
        "data_scripts.voc.prepare",
        *input_args("refinedet"),
        "--out",
        tmp_path / "out",
        "--root",
        devkit,
    )
    assert_one_error_line(proc, gone, "missing")


# ---------------------------------------------------------------------------------------
# The data stage.


def test_prepare_feeds_what_the_reference_base_transform_gives(tmp_path, sample):
    import cv2

    out = tmp_path / "data"
    proc = run_stage(
        "data_scripts.voc.prepare",
        *input_args("refinedet"),
        "--out",
        out,
        "--root",
        sample,
        "--limit",
        "4",
        "--workers",
        "2",
    )
    assert proc.returncode == 0, proc.stderr
    assert "prepared 4 of 6" in proc.stdout
    store = Store(str(out))
    assert len(store) == 4 and store.input_hw == (320, 320)
    layout = VOCLayout(sample)
    for i, record in enumerate(store.records):
        image_id = layout.ids[i]
        assert record["id"] == image_id and record["file"] == "JPEGImages/%s.jpg" % image_id
        image = cv2.imread(layout.image_path(image_id))
        assert record["orig_hw"] == list(image.shape[:2])
        # BaseTransform: resize (INTER_LINEAR), float32, minus (104, 117, 123) in BGR;
        # pull_item: [:, :, (2, 1, 0)] to RGB; then HWC -> CHW.
        x = cv2.resize(image, (320, 320)).astype(np.float32)
        x -= np.array((104, 117, 123), dtype=np.float32)
        x = x[:, :, (2, 1, 0)]
        expected = x.transpose(2, 0, 1)
        fed = store.batch([i])[0]
        assert fed.dtype == np.float32
        assert np.array_equal(fed, expected)
        # channel 0 is red: the image's red plane minus 123
        red = cv2.resize(image, (320, 320))[:, :, 2].astype(np.float32) - 123
        assert np.array_equal(fed[0], red)


@needs_fixture
def test_prepare_on_fixture_stops_on_truncated_jpeg(tmp_path):
    proc = run_stage(
        "data_scripts.voc.prepare",
        *input_args("refinedet"),
        "--out",
        tmp_path / "data",
        "--root",
        FIXTURE,
        "--workers",
        "2",
    )
    # The progress line of the image read before the failure may precede it.
    assert_one_error_line(proc, "000001.jpg", "--skip-bad", alone=False)


@needs_fixture
def test_prepare_on_fixture_skip_bad_keeps_four(tmp_path):
    out = tmp_path / "data"
    proc = run_stage(
        "data_scripts.voc.prepare",
        *input_args("refinedet"),
        "--out",
        out,
        "--root",
        FIXTURE,
        "--workers",
        "2",
        "--skip-bad",
    )
    assert proc.returncode == 0, proc.stderr
    assert "prepared 4 of 5" in proc.stdout and "skipped 1 unreadable image" in proc.stdout
    assert "000001.jpg" in proc.stdout
    store = Store(str(out))
    assert [r["id"] for r in store.records] == ["000002", "000003", "000004", "000005"]
    assert len(store.index["skipped"]) == 1
    assert store.pixels.shape == (4, 320, 320, 3)


# ---------------------------------------------------------------------------------------
# The evaluate stage.


def perfect_detections(annotations, image_ids):
    detections = {}
    for image_id in image_ids:
        per_class = {}
        for o in annotations[image_id]:
            if not o["difficult"]:
                box = [v - 1.0 for v in o["bbox"]]  # the stage adds the reference's +1
                per_class.setdefault(o["name"], []).append([*box, 0.9])
        detections[image_id] = per_class
    return detections


def write_detections(path, images):
    with open(str(path), "w") as handle:
        json.dump({"classes": list(VOC_CLASSES), "images": images}, handle)


def test_evaluate_stage_on_sample_partial_run(tmp_path, sample):
    layout = VOCLayout(sample)
    annotations = layout.annotations()
    chosen = layout.ids[:3]
    dets = perfect_detections(annotations, chosen)
    write_detections(tmp_path / "dets.json", dets)
    out = tmp_path / "eval"
    proc = run_stage(
        "data_scripts.voc.evaluate",
        "--out",
        out,
        "--detections",
        tmp_path / "dets.json",
        "--root",
        sample,
    )
    assert proc.returncode == 0, proc.stderr
    assert "over 3 of 6" in proc.stdout and "mAP" in proc.stdout
    with open(str(out / "metrics.json")) as handle:
        metrics = json.load(handle)
    assert metrics["images"] == 3 and metrics["figures"] == []
    assert metrics["metrics"]["mAP"] == pytest.approx(100.0)
    present = set(o["name"] for i in chosen for o in annotations[i] if not o["difficult"])
    assert set(c for c, ap in metrics["per_class"].items() if ap is not None) == present
    assert set(metrics["per_class"]) == set(VOC_CLASSES)


def test_evaluate_stage_matches_reference_mean(tmp_path, sample):
    layout = VOCLayout(sample)
    annotations = layout.annotations()
    dets = random_detections(annotations, layout.ids, np.random.RandomState(11), per_image=30)
    write_detections(tmp_path / "dets.json", dets)
    args = voc_eval_mod.build_parser().parse_args(
        ["--out", str(tmp_path), "--detections", str(tmp_path / "dets.json"), "--root", sample]
    )
    voc_eval_mod.main(args)
    with open(str(tmp_path / "metrics.json")) as handle:
        metrics = json.load(handle)
    ref = reference_aps(
        annotations, json.load(open(str(tmp_path / "dets.json")))["images"], layout.ids
    )
    kept = [ap for c, ap in ref.items() if metrics["per_class"][c] is not None]
    assert metrics["metrics"]["mAP"] == pytest.approx(
        np.mean([max(a, 0) for a in kept]) * 100, abs=1e-12
    )
    for c, ap in ref.items():
        if metrics["per_class"][c] is not None:
            assert metrics["per_class"][c] == pytest.approx(max(ap, 0) * 100, abs=1e-12)


def test_evaluate_stage_without_detections_is_one_line(tmp_path, sample):
    write_detections(tmp_path / "dets.json", {})
    proc = run_stage(
        "data_scripts.voc.evaluate",
        "--out",
        tmp_path / "eval",
        "--detections",
        tmp_path / "dets.json",
        "--root",
        sample,
    )
    assert_one_error_line(proc, "no images")


def test_evaluate_rejects_images_outside_the_set(tmp_path, sample):
    write_detections(tmp_path / "dets.json", {"009999": {}})
    args = voc_eval_mod.build_parser().parse_args(
        ["--out", str(tmp_path), "--detections", str(tmp_path / "dets.json"), "--root", sample]
    )
    with pytest.raises(UserError) as caught:
        voc_eval_mod.main(args)
    assert "009999" in str(caught.value)


@needs_fixture
def test_evaluate_stage_on_fixture(tmp_path):
    layout = VOCLayout(FIXTURE)
    annotations = layout.annotations()
    dets = perfect_detections(annotations, layout.ids)
    dets["000005"]["chair"].append([3.0, 242.0, 65.0, 372.0, 0.95])  # on a difficult chair
    write_detections(tmp_path / "dets.json", dets)
    out = tmp_path / "eval"
    proc = run_stage(
        "data_scripts.voc.evaluate",
        "--out",
        out,
        "--detections",
        tmp_path / "dets.json",
        "--root",
        FIXTURE,
    )
    assert proc.returncode == 0, proc.stderr
    with open(str(out / "metrics.json")) as handle:
        metrics = json.load(handle)
    assert metrics["images"] == 5 and metrics["metrics"]["mAP"] == pytest.approx(100.0)
    assert metrics["per_class"]["chair"] == pytest.approx(100.0)
    shutil.rmtree(str(out))


@pytest.mark.parametrize(
    "rows",
    [[[1, 2, 3, 4]], [[1, 2, 3, 4, 0.5, 6]], [[1, 2, 3, 4, "x"]], 7, [[1, 2, 3, 4, 0.5], [1]]],
)
def test_malformed_detection_rows_are_a_user_error(rows):
    annotations = {"a": [obj("dog", BOX_A)], "b": [obj("dog", BOX_A)]}
    dets = {"a": {"dog": [det_on(BOX_A, 0.9)]}, "b": {"cat": [det_on(BOX_A, 0.9)], "dog": rows}}
    with pytest.raises(UserError) as caught:
        voc07_eval(annotations, dets)
    assert "dog" in str(caught.value) and "image b" in str(caught.value)
