"""WIDER FACE: layout, generated samples, the data stage and the official evaluation.

The evaluator is checked three ways: hand-computed cases, and equality with a
straightforward port-like reference (below: per image, per prediction and per threshold
Python loops, as WiderFace-Evaluation's evaluation.py does them) on random predictions over
a subset of the real ground truth and over generated cases.
"""

import copy
import json
import os
import shutil

import numpy as np
import pytest

from data_scripts.widerface import evaluate as ev
from data_scripts.widerface import layout, prepare, sample
from data_scripts.widerface.predictions import write_image_predictions
from tests.conftest import input_args, run_stage
from zoostage.errors import UserError
from zoostage.store import Store

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(os.path.dirname(REPO), "shared", "fixtures")
WIDER_GT = os.path.join(FIXTURES, "widerface")
CORRUPT_JPEG = os.path.join(
    FIXTURES, "voc2007-mini", "VOCdevkit", "VOC2007", "JPEGImages", "000001.jpg"
)

needs_real_gt = pytest.mark.skipif(
    not all(os.path.isfile(os.path.join(WIDER_GT, f)) for f in layout.GT_FILES),
    reason="WIDER FACE ground-truth fixture absent (%s)" % WIDER_GT,
)


# --------------------------------------------------------------------------------------
# The reference: a port-like transcription of the official Python evaluation.


def ref_bbox_overlaps(boxes, query_boxes):
    boxes = np.asarray(boxes, dtype=np.float64).tolist()
    query_boxes = np.asarray(query_boxes, dtype=np.float64).tolist()
    overlaps = np.zeros((len(boxes), len(query_boxes)), dtype=np.float64)
    for k, q in enumerate(query_boxes):
        box_area = (q[2] - q[0] + 1) * (q[3] - q[1] + 1)
        for n, b in enumerate(boxes):
            iw = min(b[2], q[2]) - max(b[0], q[0]) + 1
            if iw > 0:
                ih = min(b[3], q[3]) - max(b[1], q[1]) + 1
                if ih > 0:
                    ua = float((b[2] - b[0] + 1) * (b[3] - b[1] + 1) + box_area - iw * ih)
                    overlaps[n, k] = iw * ih / ua
    return overlaps


def ref_norm_score(pred):
    max_score, min_score = 0, 1
    for event in pred.values():
        for v in event.values():
            if len(v) == 0:
                continue
            max_score = max(np.max(v[:, -1]), max_score)
            min_score = min(np.min(v[:, -1]), min_score)
    diff = max_score - min_score
    for event in pred.values():
        for v in event.values():
            if len(v) == 0:
                continue
            v[:, -1] = (v[:, -1] - min_score) / diff


def ref_image_eval(pred, gt, ignore, iou_thresh):
    _pred, _gt = pred.copy(), gt.copy()
    pred_recall = np.zeros(_pred.shape[0])
    recall_list = np.zeros(_gt.shape[0])
    proposal_list = np.ones(_pred.shape[0])
    _pred[:, 2] = _pred[:, 2] + _pred[:, 0]
    _pred[:, 3] = _pred[:, 3] + _pred[:, 1]
    _gt[:, 2] = _gt[:, 2] + _gt[:, 0]
    _gt[:, 3] = _gt[:, 3] + _gt[:, 1]
    overlaps = ref_bbox_overlaps(_pred[:, :4], _gt)
    for h in range(_pred.shape[0]):
        gt_overlap = overlaps[h]
        max_overlap, max_idx = gt_overlap.max(), gt_overlap.argmax()
        if max_overlap >= iou_thresh:
            if ignore[max_idx] == 0:
                recall_list[max_idx] = -1
                proposal_list[h] = -1
            elif recall_list[max_idx] == 0:
                recall_list[max_idx] = 1
        pred_recall[h] = len(np.where(recall_list == 1)[0])
    return pred_recall, proposal_list


def ref_img_pr_info(thresh_num, pred_info, proposal_list, pred_recall):
    pr_info = np.zeros((thresh_num, 2)).astype("float")
    for t in range(thresh_num):
        thresh = 1 - (t + 1) / thresh_num
        r_index = np.where(pred_info[:, 4] >= thresh)[0]
        if len(r_index) == 0:
            pr_info[t, 0] = 0
            pr_info[t, 1] = 0
        else:
            r_index = r_index[-1]
            p_index = np.where(proposal_list[: r_index + 1] == 1)[0]
            pr_info[t, 0] = len(p_index)
            pr_info[t, 1] = pred_recall[r_index]
    return pr_info


def ref_dataset_pr_info(thresh_num, pr_curve, count_face):
    _pr_curve = np.zeros((thresh_num, 2))
    with np.errstate(divide="ignore", invalid="ignore"):
        for i in range(thresh_num):
            _pr_curve[i, 0] = pr_curve[i, 1] / pr_curve[i, 0]
            _pr_curve[i, 1] = pr_curve[i, 1] / count_face
    return _pr_curve


def ref_voc_ap(rec, prec):
    mrec = np.concatenate(([0.0], rec, [1.0]))
    mpre = np.concatenate(([0.0], prec, [0.0]))
    for i in range(mpre.size - 1, 0, -1):
        mpre[i - 1] = np.maximum(mpre[i - 1], mpre[i])
    i = np.where(mrec[1:] != mrec[:-1])[0]
    return np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1])


def ref_evaluation(pred, gt_dir, iou_thresh=0.5):
    """pred {event: {name: (N, 5)}} for every image of the .mat files in gt_dir."""
    from scipy.io import loadmat

    pred = copy.deepcopy(pred)
    ref_norm_score(pred)
    gt_mat = loadmat(os.path.join(gt_dir, "wider_face_val.mat"))
    facebox_list, event_list = gt_mat["face_bbx_list"], gt_mat["event_list"]
    file_list = gt_mat["file_list"]
    setting_gts = [
        loadmat(os.path.join(gt_dir, "wider_%s_val.mat" % s))["gt_list"]
        for s in ("easy", "medium", "hard")
    ]
    thresh_num = 1000
    aps, curves = [], []
    for gt_list in setting_gts:
        count_face = 0
        pr_curve = np.zeros((thresh_num, 2)).astype("float")
        for i in range(len(event_list)):
            event_name = str(event_list[i][0][0])
            img_list = file_list[i][0]
            pred_list = pred[event_name]
            sub_gt_list = gt_list[i][0]
            gt_bbx_list = facebox_list[i][0]
            for j in range(len(img_list)):
                pred_info = pred_list[str(img_list[j][0][0])]
                gt_boxes = gt_bbx_list[j][0].astype("float")
                keep_index = sub_gt_list[j][0]
                count_face += len(keep_index)
                if len(gt_boxes) == 0 or len(pred_info) == 0:
                    continue
                ignore = np.zeros(gt_boxes.shape[0])
                if len(keep_index) != 0:
                    ignore[keep_index.astype(np.int64) - 1] = 1
                pred_recall, proposal_list = ref_image_eval(pred_info, gt_boxes, ignore, iou_thresh)
                pr_curve += ref_img_pr_info(thresh_num, pred_info, proposal_list, pred_recall)
        pr_curve = ref_dataset_pr_info(thresh_num, pr_curve, count_face)
        aps.append(ref_voc_ap(pr_curve[:, 1], pr_curve[:, 0]))
        curves.append(pr_curve)
    return aps, curves


# --------------------------------------------------------------------------------------
# Helpers


def error_lines(proc):
    return [line for line in proc.stderr.splitlines() if line.startswith("error:")]


def assert_one_line_error(proc, *needles):
    assert proc.returncode == 3, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = error_lines(proc)
    assert len(errors) == 1, proc.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


def make_dataset(boxes, keep, ids=None):
    """A WiderFaceVal from lists; keep: {setting: [0-based index lists]} (or one for all)."""
    ids = ids or ["0--E/img_%d" % i for i in range(len(boxes))]
    boxes = [np.asarray(b, dtype=np.float64).reshape(-1, 4) for b in boxes]
    if not isinstance(keep, dict):
        keep = {s: keep for s in layout.SETTINGS}
    keep = {s: [np.asarray(k, dtype=np.int64) for k in keep[s]] for s in layout.SETTINGS}
    return layout.WiderFaceVal(ids, boxes, keep, gt_dir=None)


def det(box, score):
    return [*box, score]


def random_predictions(dataset, seed, indices=None, shuffle_some=True, score_lo=0.02, score_hi=1.0):
    """Integer-coordinate predictions: jittered faces, duplicates, false positives."""
    rng = np.random.RandomState(seed)
    preds = {}
    for i in indices if indices is not None else range(len(dataset)):
        gt = dataset.boxes[i]
        rows = []
        if len(gt):
            chosen = rng.choice(len(gt), size=min(len(gt), rng.randint(0, 60)), replace=False)
            for g in gt[chosen]:
                x, y, w, h = g
                jitter = rng.normal(0.0, max(1.0, 0.15 * max(w, h)), size=4)
                rows.append([x + jitter[0], y + jitter[1], w + jitter[2], h + jitter[3]])
                if rng.uniform() < 0.15:  # a duplicate on the same face
                    rows.append([x + 1, y, w, h])
        for _ in range(rng.randint(0, 40)):
            rows.append(
                [rng.uniform(0, 1000), rng.uniform(0, 1000), rng.uniform(2, 80), rng.uniform(2, 80)]
            )
        boxes = np.floor(np.asarray(rows, dtype=np.float64).reshape(-1, 4))
        scores = np.round(rng.uniform(score_lo, score_hi, size=len(boxes)), 3)  # ties happen
        if rng.uniform() < 0.05:
            boxes, scores = boxes[:0], scores[:0]  # an image with no detections
        order = np.argsort(-scores, kind="stable")
        if shuffle_some and rng.uniform() < 0.2:
            order = rng.permutation(len(scores))  # unsorted file: the prefix rule matters
        preds[dataset.ids[i]] = np.column_stack([boxes, scores])[order]
    return preds


def nested(preds):
    out = {}
    for image_id, p in preds.items():
        event, name = image_id.split("/", 1)
        out.setdefault(event, {})[name] = np.array(p, dtype=np.float64)
    return out


def assert_same_as_reference(dataset, preds, gt_dir):
    mine = ev.evaluate(dataset, preds)
    aps, curves = ref_evaluation(nested(preds), gt_dir)
    for s, setting in enumerate(layout.SETTINGS):
        assert mine["ap"][setting] == aps[s], (setting, mine["ap"][setting], aps[s])
        np.testing.assert_array_equal(mine["precision"][setting], curves[s][:, 0])
        np.testing.assert_array_equal(mine["recall"][setting], curves[s][:, 1])
    return mine


def subset_gt(dataset, indices, gt_dir):
    """Write the ground truth of `indices` of `dataset` as .mat files in gt_dir."""
    ids = [dataset.ids[i] for i in indices]
    boxes = [dataset.boxes[i] for i in indices]
    keep = {s: [dataset.keep[s][i] for i in indices] for s in layout.SETTINGS}
    sample.write_ground_truth(gt_dir, ids, boxes, keep)
    return layout.read_ground_truth(gt_dir)


@pytest.fixture(scope="module")
def real_gt():
    if not all(os.path.isfile(os.path.join(WIDER_GT, f)) for f in layout.GT_FILES):
        pytest.skip("WIDER FACE ground-truth fixture absent (%s)" % WIDER_GT)
    return layout.load(WIDER_GT, images=False)


@pytest.fixture(scope="module")
def sample_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("widerface") / "root")
    sample.make_sample(root, events=3, per_event=4, seed=0)
    return root


# --------------------------------------------------------------------------------------
# Layout


@needs_real_gt
def test_layout_reads_the_real_ground_truth(real_gt):
    assert len(real_gt) == 3226
    assert real_gt.face_count() == 39708
    assert {s: real_gt.face_count(s) for s in layout.SETTINGS} == {
        "easy": 7211,
        "medium": 13319,
        "hard": 31958,
    }
    assert len({i.split("/")[0] for i in real_gt.ids}) == 61
    assert real_gt.ids[0] == "0--Parade/0_Parade_marchingband_1_465"
    assert real_gt.boxes[0].shape == (126, 4)
    np.testing.assert_array_equal(real_gt.boxes[0][0], [345, 211, 4, 4])
    for setting in layout.SETTINGS:
        for boxes, keep in zip(real_gt.boxes, real_gt.keep[setting]):
            assert keep.dtype == np.int64 and (keep.size == 0 or keep.max() < len(boxes))


def test_layout_finds_alternative_folders(tmp_path, sample_root):
    root = str(tmp_path / "alt")
    os.makedirs(os.path.join(root, "WIDER_val"))
    shutil.copytree(os.path.join(sample_root, "images"), os.path.join(root, "WIDER_val", "images"))
    gt_dir = os.path.join(root, "eval_tools", "ground_truth")
    os.makedirs(gt_dir)
    for name in layout.GT_FILES:
        shutil.copy(os.path.join(sample_root, name), gt_dir)
    dataset = layout.load(root)
    assert dataset.gt_dir == gt_dir
    assert dataset.images_dir == os.path.join(root, "WIDER_val", "images")
    assert os.path.isfile(dataset.image_path(0))
    assert dataset.ids == layout.load(sample_root).ids


def test_layout_missing_pieces_are_one_line_user_errors(tmp_path, sample_root):
    with pytest.raises(UserError) as missing_root:
        layout.load(str(tmp_path / "nowhere"))
    assert "does not exist" in str(missing_root.value)

    root = str(tmp_path / "partial")
    shutil.copytree(sample_root, root)
    os.remove(os.path.join(root, "wider_hard_val.mat"))
    with pytest.raises(UserError) as incomplete:
        layout.load(root)
    message = str(incomplete.value)
    assert "wider_hard_val.mat" in message and "evaluation tools" in message
    assert "\n" not in message

    shutil.rmtree(os.path.join(root, "images"))
    with pytest.raises(UserError) as no_images:
        layout.load(root)
    assert "WIDER_val.zip" in str(no_images.value) and "\n" not in str(no_images.value)

    empty = str(tmp_path / "empty")
    os.makedirs(os.path.join(empty, "images"))
    with pytest.raises(UserError) as no_gt:
        layout.load(empty)
    assert "wider_face_val.mat" in str(no_gt.value) and "\n" not in str(no_gt.value)

    with open(os.path.join(root, "wider_hard_val.mat"), "wb") as handle:
        handle.write(b"not a mat file")
    with pytest.raises(UserError) as damaged:
        layout.load(root, images=False)
    assert "wider_hard_val.mat" in str(damaged.value)


# --------------------------------------------------------------------------------------
# Generated samples


def test_sample_is_deterministic_and_reads_back(tmp_path):
    a, b, c = (str(tmp_path / n) for n in "abc")
    ids = sample.make_sample(a, events=2, per_event=3, seed=7)
    assert sample.make_sample(b, events=2, per_event=3, seed=7) == ids
    sample.make_sample(c, events=2, per_event=3, seed=8)
    for name in layout.GT_FILES:
        with open(os.path.join(a, name), "rb") as fa, open(os.path.join(b, name), "rb") as fb:
            assert fa.read()[128:] == fb.read()[128:]  # past the header's creation time
    for image_id in ids:
        path = os.path.join("images", image_id + ".jpg")
        with open(os.path.join(a, path), "rb") as fa, open(os.path.join(b, path), "rb") as fb:
            assert fa.read() == fb.read()

    da, dc = layout.load(a), layout.load(c)
    assert da.ids == ids and len(da) == 6
    assert not all(np.array_equal(x, y) for x, y in zip(da.boxes, dc.boxes))
    from zoostage.store import read_image

    for i in range(len(da)):
        image = read_image(da.image_path(i))
        h, w = image.shape[:2]
        assert 300 <= h <= 1200 and 300 <= w <= 1200
        boxes = da.boxes[i]
        assert len(boxes) >= 1
        assert np.all(boxes[:, 0] >= 0) and np.all(boxes[:, 0] + boxes[:, 2] <= w)
        assert np.all(boxes[:, 1] >= 0) and np.all(boxes[:, 1] + boxes[:, 3] <= h)
        easy, medium, hard = (set(da.keep[s][i].tolist()) for s in layout.SETTINGS)
        assert easy <= medium <= hard


@needs_real_gt
def test_written_ground_truth_round_trips_real_structure(tmp_path, real_gt):
    indices = list(range(0, len(real_gt), 97))
    copy_ = subset_gt(real_gt, indices, str(tmp_path / "gt"))
    assert copy_.ids == [real_gt.ids[i] for i in indices]
    for n, i in enumerate(indices):
        np.testing.assert_array_equal(copy_.boxes[n], real_gt.boxes[i])
        for s in layout.SETTINGS:
            np.testing.assert_array_equal(copy_.keep[s][n], real_gt.keep[s][i])


def test_sample_command_line(tmp_path):
    root = str(tmp_path / "cli")
    proc = run_stage(
        "data_scripts.widerface.sample", "--out", root, "--events", 2, "--per-event", 2
    )
    assert proc.returncode == 0, proc.stderr
    assert len(layout.load(root)) == 4


# --------------------------------------------------------------------------------------
# Evaluation: hand-checked cases

A = [10, 10, 40, 40]
B = [100, 10, 40, 40]
C = [10, 100, 40, 40]
D = [100, 100, 40, 40]
FAR = [500, 500, 30, 30]


def test_no_detections_give_ap_zero():
    dataset = make_dataset([[A, B], [C]], [[0, 1], [0]])
    result = ev.evaluate(dataset, {dataset.ids[0]: np.zeros((0, 5)), dataset.ids[1]: []})
    assert result["ap"] == {"easy": 0.0, "medium": 0.0, "hard": 0.0}
    assert result["images"] == 2 and result["faces"]["hard"] == 3


def test_perfect_detections_give_ap_one():
    dataset = make_dataset([[A, B], [C, D]], [[0, 1], [0, 1]])
    preds = {
        dataset.ids[0]: [det(A, 0.9), det(B, 0.3)],
        dataset.ids[1]: [det(C, 0.8), det(D, 0.05)],
    }
    result = ev.evaluate(dataset, preds)
    for setting in layout.SETTINGS:
        assert result["ap"][setting] == pytest.approx(1.0, abs=1e-12)
        assert np.nanmin(result["precision"][setting]) == 1.0
        assert result["recall"][setting][-1] == 1.0


def test_detections_on_ignored_faces_are_neither_true_nor_false():
    # Face B does not count: the detection on it (the highest score) must not lower precision.
    dataset = make_dataset([[A, B]], [[0]])
    result = ev.evaluate(dataset, {dataset.ids[0]: [det(B, 0.9), det(A, 0.5)]})
    assert result["ap"]["hard"] == pytest.approx(1.0, abs=1e-12)
    # A false positive instead of the ignored detection halves the precision at the end.
    result = ev.evaluate(dataset, {dataset.ids[0]: [det(FAR, 0.9), det(A, 0.5)]})
    assert result["ap"]["hard"] == pytest.approx(0.5, abs=1e-12)


def test_all_faces_ignored():
    dataset = make_dataset([[A, B], [C]], [[], []])
    result = ev.evaluate(dataset, {dataset.ids[0]: [det(A, 0.9)], dataset.ids[1]: [det(C, 0.4)]})
    assert result["faces"] == {"easy": 0, "medium": 0, "hard": 0}
    assert result["ap"] == {"easy": 0.0, "medium": 0.0, "hard": 0.0}
    # ... and an image whose faces are all ignored costs nothing beside a perfect one.
    dataset = make_dataset([[A, B], [C]], [[], [0]])
    result = ev.evaluate(
        dataset, {dataset.ids[0]: [det(A, 0.9), det(B, 0.7)], dataset.ids[1]: [det(C, 0.4)]}
    )
    assert result["ap"]["hard"] == pytest.approx(1.0, abs=1e-12)


def test_a_duplicate_detection_is_a_false_positive():
    # Scores 1.0 / 0.5 / 0.0: A (TP, recall 1/2), A again (FP), B (TP, recall 1).
    # Points (R, P): (1/2, 1), (1/2, 1/2), (1, 2/3) -> AP = 1/2 * 1 + 1/2 * 2/3 = 5/6.
    dataset = make_dataset([[A, B]], [[0, 1]])
    preds = {dataset.ids[0]: [det(A, 1.0), det([11, 10, 40, 40], 0.5), det(B, 0.0)]}
    result = ev.evaluate(dataset, preds)
    assert result["ap"]["hard"] == pytest.approx(5.0 / 6.0, abs=1e-12)
    assert result["precision"]["hard"][-1] == pytest.approx(2.0 / 3.0)
    assert result["recall"]["hard"][0] == 0.5


def test_known_two_image_case():
    # Image 1: faces A, B; image 2: faces C, D. Hard counts all four, medium A, C, D,
    # easy A, C (B is ignored in easy and medium). Predictions, by score: A 0.9 (TP),
    # a false positive 0.8, C 0.7 (TP), B 0.5, a false positive 0.2; D is missed.
    # hard:   (1/4, 1) (1/4, 1/2) (2/4, 2/3) (3/4, 3/4) (3/4, 3/5)
    #         AP = 1/4 * 1 + 1/4 * 3/4 + 1/4 * 3/4 = 5/8
    # medium: (1/3, 1) (1/3, 1/2) (2/3, 2/3) [B ignored] (2/3, 2/4)
    #         AP = 1/3 * 1 + 1/3 * 2/3 = 5/9
    # easy:   (1/2, 1) (1/2, 1/2) (1, 2/3) [B ignored] (1, 2/4)
    #         AP = 1/2 * 1 + 1/2 * 2/3 = 5/6
    keep = {"hard": [[0, 1], [0, 1]], "medium": [[0], [0, 1]], "easy": [[0], [0]]}
    dataset = make_dataset([[A, B], [C, D]], keep)
    preds = {
        dataset.ids[0]: [det(A, 0.9), det(FAR, 0.8), det(B, 0.5)],
        dataset.ids[1]: [det(C, 0.7), det([300, 300, 20, 20], 0.2)],
    }
    result = ev.evaluate(dataset, preds)
    assert result["ap"]["hard"] == pytest.approx(5.0 / 8.0, abs=1e-12)
    assert result["ap"]["medium"] == pytest.approx(5.0 / 9.0, abs=1e-12)
    assert result["ap"]["easy"] == pytest.approx(5.0 / 6.0, abs=1e-12)
    assert result["faces"] == {"easy": 2, "medium": 3, "hard": 4}
    assert result["detections"] == 5


def test_iou_threshold_uses_the_plus_one_convention():
    # gt 0..9 (w 10 -> 11 px with +1), prediction shifted: IoU just under / at 0.5.
    dataset = make_dataset([[[0, 0, 10, 10]]], [[0]])
    # x 4..14 vs 0..10: iw = 10 - 4 + 1 = 7, ih = 11, inter 77, union 121 + 121 - 77.
    just_under = ev.evaluate(dataset, {dataset.ids[0]: [det([4, 0, 10, 10], 0.9), det(FAR, 0.1)]})
    assert just_under["ap"]["hard"] == 0.0  # 77 / 165 < 0.5
    # x 3..13: iw = 8, inter 88, union 154 -> 0.571.
    above = ev.evaluate(dataset, {dataset.ids[0]: [det([3, 0, 10, 10], 0.9), det(FAR, 0.1)]})
    assert above["ap"]["hard"] == pytest.approx(1.0)


def test_partial_run_is_the_official_evaluation_of_the_subset(sample_root, tmp_path):
    dataset = layout.load(sample_root, images=False)
    indices = [0, 3, 4, 9]
    preds = random_predictions(dataset, seed=3, indices=indices)
    full = ev.evaluate(dataset, preds)  # the other images have no file
    assert full["images"] == len(indices)
    sub = subset_gt(dataset, indices, str(tmp_path / "sub"))
    alone = ev.evaluate(sub, preds)
    assert full["ap"] == alone["ap"] and full["faces"] == alone["faces"]
    ref_aps, _ = ref_evaluation(nested(preds), str(tmp_path / "sub"))
    assert [full["ap"][s] for s in layout.SETTINGS] == ref_aps


# --------------------------------------------------------------------------------------
# Evaluation: vectorized == reference


@needs_real_gt
def test_vectorized_equals_reference_on_real_ground_truth(real_gt, tmp_path):
    # Two images of every event, plus the most crowded one (1968 faces).
    indices, seen = [], {}
    for i, image_id in enumerate(real_gt.ids):
        event = image_id.split("/")[0]
        if seen.get(event, 0) < 2:
            indices.append(i)
            seen[event] = seen.get(event, 0) + 1
    crowded = int(np.argmax([len(b) for b in real_gt.boxes]))
    if crowded not in indices:
        indices.append(crowded)
    indices.sort()
    gt_dir = str(tmp_path / "gt")
    sub = subset_gt(real_gt, indices, gt_dir)
    preds = random_predictions(real_gt, seed=11, indices=indices)
    assert_same_as_reference(sub, preds, gt_dir)
    # The same predictions against the full ground truth: a partial run, same numbers.
    partial = ev.evaluate(real_gt, preds)
    assert partial["ap"] == ev.evaluate(sub, preds)["ap"]
    assert partial["images"] == len(indices)


# Score ranges: within [0, 1]; above 1; below 1; all above 1 (the port's minimum stays 1).
@pytest.mark.parametrize(
    "seed,score_lo,score_hi",
    [(0, 0.02, 1.0), (1, 0.02, 1.0), (2, 0.02, 3.5), (3, 0.02, 0.6), (4, 1.5, 3.0)],
)
def test_vectorized_equals_reference_on_generated_cases(tmp_path, seed, score_lo, score_hi):
    root = str(tmp_path / "gen")
    sample.make_sample(root, events=3, per_event=5, seed=100 + seed)
    dataset = layout.load(root, images=False)
    preds = random_predictions(dataset, seed=seed, score_lo=score_lo, score_hi=score_hi)
    result = assert_same_as_reference(dataset, preds, root)
    assert 0.0 <= min(result["ap"].values()) and max(result["ap"].values()) <= 1.0


# --------------------------------------------------------------------------------------
# The evaluate stage


def write_predictions(pred_root, preds):
    for image_id, p in preds.items():
        p = np.asarray(p, dtype=np.float64).reshape(-1, 5)
        corners = p.copy()
        corners[:, 2] = p[:, 0] + p[:, 2]
        corners[:, 3] = p[:, 1] + p[:, 3]
        write_image_predictions(pred_root, image_id, corners)


def test_evaluate_stage_end_to_end(sample_root, tmp_path):
    dataset = layout.load(sample_root, images=False)
    pred_root = str(tmp_path / "pred")
    rng = np.random.RandomState(0)
    perfect = {}
    for i, image_id in enumerate(dataset.ids):
        boxes = dataset.boxes[i]
        perfect[image_id] = np.column_stack([boxes, rng.uniform(0.1, 1.0, len(boxes))])
    write_predictions(pred_root, perfect)
    out = str(tmp_path / "eval")
    proc = run_stage(
        "data_scripts.widerface.evaluate",
        "--out",
        out,
        "--predictions",
        pred_root,
        "--root",
        sample_root,
    )
    assert proc.returncode == 0, proc.stderr
    with open(os.path.join(out, "metrics.json")) as handle:
        metrics = json.load(handle)
    assert metrics["metrics"] == {
        "easy": pytest.approx(100.0),
        "medium": pytest.approx(100.0),
        "hard": pytest.approx(100.0),
    }
    assert metrics["images"] == len(dataset)
    assert metrics["figures"] == ["pr_curves.png"]
    assert metrics["details"]["partial"] is False
    assert os.path.getsize(os.path.join(out, "pr_curves.png")) > 1000
    curves = np.load(os.path.join(out, "pr_curves.npz"))
    assert curves["hard_precision"].shape == (1000,)
    assert "easy 100.00" in proc.stdout

    # Partial run: only the first event's files.
    first_event = dataset.ids[0].split("/")[0]
    partial_root = str(tmp_path / "partial")
    shutil.copytree(os.path.join(pred_root, first_event), os.path.join(partial_root, first_event))
    os.makedirs(os.path.join(partial_root, "99--Stray"))
    with open(os.path.join(partial_root, "99--Stray", "nothing.txt"), "w") as handle:
        handle.write("nothing\n0\n")
    out2 = str(tmp_path / "eval2")
    proc = run_stage(
        "data_scripts.widerface.evaluate",
        "--out",
        out2,
        "--predictions",
        partial_root,
        "--root",
        sample_root,
    )
    assert proc.returncode == 0, proc.stderr
    with open(os.path.join(out2, "metrics.json")) as handle:
        metrics = json.load(handle)
    count = sum(1 for i in dataset.ids if i.startswith(first_event + "/"))
    assert metrics["images"] == count
    assert metrics["details"]["partial"] is True
    assert metrics["details"]["unmatched_prediction_files"] == 1
    assert "partial run" in proc.stderr


def test_evaluate_stage_user_errors(sample_root, tmp_path):
    empty = str(tmp_path / "empty")
    os.makedirs(empty)
    proc = run_stage(
        "data_scripts.widerface.evaluate",
        "--out",
        str(tmp_path / "o1"),
        "--predictions",
        empty,
        "--root",
        sample_root,
    )
    assert_one_line_error(proc, "no predictions")
    proc = run_stage(
        "data_scripts.widerface.evaluate",
        "--out",
        str(tmp_path / "o2"),
        "--predictions",
        str(tmp_path / "absent"),
        "--root",
        sample_root,
    )
    assert_one_line_error(proc, "does not exist")
    os.makedirs(os.path.join(empty, "0--Event0"))
    with open(os.path.join(empty, "0--Event0", "x.txt"), "w") as handle:
        handle.write("x\n1\n")
    proc = run_stage(
        "data_scripts.widerface.evaluate",
        "--out",
        str(tmp_path / "o3"),
        "--predictions",
        empty,
        "--root",
        str(tmp_path),
    )
    assert_one_line_error(proc, "wider_face_val.mat")


# --------------------------------------------------------------------------------------
# The data stage


def test_prepare_stage_end_to_end(sample_root, tmp_path):
    import cv2

    out = str(tmp_path / "prep")
    proc = run_stage(
        "data_scripts.widerface.prepare",
        *input_args("retinaface"),
        "--out",
        out,
        "--root",
        sample_root,
        "--input-size",
        640,
        "--workers",
        2,
    )
    assert proc.returncode == 0, proc.stderr
    dataset = layout.load(sample_root)
    store = Store(out)
    assert len(store) == len(dataset) and store.input_hw == (640, 640)
    assert [r["id"] for r in store.records] == dataset.ids  # gt order
    assert store.feed["mean_bgr"] == [104.0, 117.0, 123.0] and store.feed["pad"] == "before_norm"
    for i, record in enumerate(store.records):
        image = cv2.imread(dataset.image_path(i))
        h, w = image.shape[:2]
        scale = 640.0 / max(h, w)
        # The seed profile (the default): data_preprocess.py's INTER_NEAREST.
        expected = cv2.resize(
            image, None, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST
        )
        vh, vw = expected.shape[:2]
        assert (vh, vw) == (round(h * scale), round(w * scale))
        assert max(vh, vw) == 640
        assert record["orig_hw"] == [h, w] and record["scale"] == scale
        assert record["file"] == dataset.ids[i] + ".jpg" and record["valid_hw"] == [vh, vw]
        pixels = np.asarray(store.pixels[i])
        np.testing.assert_array_equal(pixels[:vh, :vw], expected)
        assert not pixels[vh:, :].any() and not pixels[:, vw:].any()
        fed = store.batch([i])[0]  # (3, H, W) float32, BGR - mean
        assert fed.dtype == np.float32
        np.testing.assert_allclose(
            fed[:, :vh, :vw],
            expected.transpose(2, 0, 1) - np.array([104.0, 117.0, 123.0])[:, None, None],
        )
        if vh < 640:
            np.testing.assert_array_equal(
                fed[:, vh:, :],
                np.broadcast_to(
                    -np.array([104.0, 117.0, 123.0], np.float32)[:, None, None],
                    fed[:, vh:, :].shape,
                ),
            )
        if vw < 640:
            np.testing.assert_array_equal(
                fed[:, :, vw:],
                np.broadcast_to(
                    -np.array([104.0, 117.0, 123.0], np.float32)[:, None, None],
                    fed[:, :, vw:].shape,
                ),
            )
    assert "preprocessed 12 of 12" in proc.stdout and "INTER_NEAREST" in proc.stdout

    limited = str(tmp_path / "limited")
    proc = run_stage(
        "data_scripts.widerface.prepare",
        *input_args("retinaface"),
        "--out",
        limited,
        "--root",
        sample_root,
        "--input-size",
        320,
        "--limit",
        5,
        "--workers",
        1,
        "--profile",
        "upstream",
    )
    assert proc.returncode == 0, proc.stderr
    store = Store(limited)
    # 5 of 12 spread over the ground-truth order: positions 0, 2, 4, 7, 9 (k * 12 // 5),
    # so all three events, not the first five images (two events).
    assert [r["id"] for r in store.records] == [dataset.ids[i] for i in (0, 2, 4, 7, 9)]
    assert store.index["interpolation"] == "INTER_LINEAR"
    image = cv2.imread(dataset.image_path(2))
    scale = 320.0 / max(image.shape[:2])
    linear = cv2.resize(image, None, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
    vh, vw = linear.shape[:2]
    np.testing.assert_array_equal(np.asarray(store.pixels[1])[:vh, :vw], linear)


@pytest.mark.skipif(
    not os.path.isfile(CORRUPT_JPEG), reason="truncated JPEG fixture absent (%s)" % CORRUPT_JPEG
)
def test_prepare_corrupt_image(sample_root, tmp_path):
    root = str(tmp_path / "bad")
    shutil.copytree(sample_root, root)
    dataset = layout.load(root)
    victim = dataset.image_path(5)
    shutil.copy(CORRUPT_JPEG, victim)
    proc = run_stage(
        "data_scripts.widerface.prepare",
        *input_args("retinaface"),
        "--out",
        str(tmp_path / "o1"),
        "--root",
        root,
        "--input-size",
        320,
        "--workers",
        2,
    )
    assert_one_line_error(proc, victim, "--skip-bad")

    out = str(tmp_path / "o2")
    proc = run_stage(
        "data_scripts.widerface.prepare",
        *input_args("retinaface"),
        "--out",
        out,
        "--root",
        root,
        "--input-size",
        320,
        "--workers",
        2,
        "--skip-bad",
    )
    assert proc.returncode == 0, proc.stderr
    assert "skipped 1" in proc.stdout
    store = Store(out)
    assert len(store) == len(dataset) - 1
    assert dataset.ids[5] not in [r["id"] for r in store.records]
    assert len(store.index["skipped"]) == 1 and victim in store.index["skipped"][0]


def test_prepare_missing_dataset_and_image(sample_root, tmp_path):
    proc = run_stage(
        "data_scripts.widerface.prepare",
        *input_args("retinaface"),
        "--out",
        str(tmp_path / "o1"),
        "--root",
        str(tmp_path / "nowhere"),
    )
    assert_one_line_error(proc, "does not exist", "WIDER_val.zip")

    root = str(tmp_path / "holes")
    shutil.copytree(sample_root, root)
    dataset = layout.load(root)
    os.remove(dataset.image_path(2))
    proc = run_stage(
        "data_scripts.widerface.prepare",
        *input_args("retinaface"),
        "--out",
        str(tmp_path / "o2"),
        "--root",
        root,
    )
    assert_one_line_error(proc, dataset.image_path(2), "missing")


def test_prepare_image_is_picklable_and_matches_the_resize(sample_root):
    import pickle

    dataset = layout.load(sample_root)
    assert pickle.loads(pickle.dumps(prepare.prepare_image)) is prepare.prepare_image
    items = prepare.items_for(dataset, 1000, [0, 1])
    pixels, meta = prepare.prepare_image(items[0])
    assert max(pixels.shape[:2]) == 1000 and pixels.dtype == np.uint8
    assert meta["id"] == dataset.ids[0] and meta["scale"] == 1000.0 / max(meta["orig_hw"])
