"""RetinaNet's seed profile against the seed's own steps, written out here from the scripts.

References (copies in ../shared/reference/modelzoo/):
- ACL_PyTorch/contrib/cv/detection/Retinanet/Retinanet.diff: detectron2's
  RetinaNet.inference_single_image patched into a graph (sigmoid; per class the 200 best
  anchors of each level, torch.topk dim 0; apply_deltas; cat; .half(); BatchMultiClassNMS
  score 0.05, IoU 0.5, 200 per class, 100 in all; no detector_postprocess);
- AscendIE/TorchAIE/built-in/cv/detection/Retinanet/Retina_aie.diff: the same graph,
  the operator bound to torch.ops.aie.batch_nms;
- ACL_PyTorch/contrib/cv/detection/Retinanet/Retinanet_postprocess.py and get_info.py:
  boxes divided by one scale, scores < 0.05 skipped.
What the scripts leave open (the order of equal scores) is fixed the way
models/retinanet/seed_postprocess.py documents, and the reference below does the same.
"""

import json
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from models.common.boxes import batched_nms, multiclass_nms  # noqa: E402
from models.retinanet import PIXEL_MEAN_BGR, PIXEL_STD_BGR, export, net, seed_graph  # noqa: E402
from models.retinanet import anchors as anchor_lib  # noqa: E402
from models.retinanet.seed_postprocess import (  # noqa: E402
    SeedPostprocessor,
    class_topk,
    keep_scored,
    seed_nms,
    seed_rescale,
)
from tests.conftest import run_stage  # noqa: E402
from zoostage.errors import USER_ERROR_EXIT, UserError  # noqa: E402
from zoostage.store import feed_spec, write_store  # noqa: E402

SMALL = 64  # levels of 576, 144, 36, 9, 9 anchors: only P3 has more than 200


# -- the seed's steps, written out ---------------------------------------------------------
def stable_topk(logits, k):
    """torch.topk(sigmoid(logits), k, dim=0), with the order the seed leaves open fixed:
    equal scores by logit, then by anchor index."""
    _, indices = torch.sort(logits, dim=0, descending=True, stable=True)
    return torch.gather(logits.sigmoid(), 0, indices[:k]), indices[:k]


SCALE_CLAMP = float(np.log(1000.0 / 16))


def apply_deltas(deltas, boxes, scale_clamp=SCALE_CLAMP):
    """Retinanet.diff, modeling/box_regression.py Box2BoxTransform.apply_deltas (weights 1)."""
    boxes_prof = boxes.permute(1, 0)
    widths = boxes_prof[2, :] - boxes_prof[0, :]
    heights = boxes_prof[3, :] - boxes_prof[1, :]
    ctr_x = boxes_prof[0, :] + 0.5 * widths
    ctr_y = boxes_prof[1, :] + 0.5 * heights
    dx, dy = deltas[:, 0:1] / 1.0, deltas[:, 1:2] / 1.0
    dw = torch.clamp(deltas[:, 2:3] / 1.0, min=-float("inf"), max=float(scale_clamp))
    dh = torch.clamp(deltas[:, 3:4] / 1.0, min=-float("inf"), max=float(scale_clamp))
    pred_ctr_x = dx * widths[:, None] + ctr_x[:, None]
    pred_ctr_y = dy * heights[:, None] + ctr_y[:, None]
    pred_w = torch.exp(dw) * widths[:, None]
    pred_h = torch.exp(dh) * heights[:, None]
    x1 = pred_ctr_x - 0.5 * pred_w
    y1 = pred_ctr_y - 0.5 * pred_h
    x2 = pred_ctr_x + 0.5 * pred_w
    y2 = pred_ctr_y + 0.5 * pred_h
    return torch.stack((x1, y1, x2, y2), dim=-1).reshape(deltas.shape)


def batch_multiclass_nms(boxes16, scores16, score_thresh, iou_thresh, per_class, total):
    """BatchMultiClassNMS on (M, K, 4) / (M, K) float16, one class at a time, by hand:
    scores above the threshold, best first (equal: lower row), greedy, IoU > 0.5 drops."""
    found = []
    rows, classes = scores16.shape
    for c in range(classes):
        candidates = [(float(scores16[r, c]), r) for r in range(rows)]
        candidates = [(s, r) for s, r in candidates if s > score_thresh]
        candidates.sort(key=lambda sr: (-sr[0], sr[1]))
        kept = []
        for score, r in candidates:
            box = [float(v) for v in boxes16[r, c]]
            if all(iou(box, other) <= iou_thresh for _, _, other in kept):
                kept.append((score, r, box))
            if len(kept) == per_class:
                break
        found.extend((score, r, c, box) for score, r, box in kept)
    found.sort(key=lambda f: (-f[0], f[1], f[2]))
    return found[:total]


def iou(a, b):
    inter_w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    inter_h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = inter_w * inter_h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def seed_graph_reference(cls_logits, box_deltas, level_anchors, num_classes):
    """Retinanet.diff's inference_single_image + batch_nms_op, step by step, in torch."""
    boxes_all, scores_all, start = [], [], 0
    for anchors_i in level_anchors:
        n = len(anchors_i)
        box_cls_i = torch.from_numpy(cls_logits[start : start + n].copy())
        box_reg_i = torch.from_numpy(box_deltas[start : start + n].copy())
        start += n
        # predicted_prob = box_cls_i.sigmoid_(); torch.topk(predicted_prob, 200, dim=0)
        predicted_prob, indices = stable_topk(box_cls_i, min(200, n))  # [top, K]
        indices = indices.flatten()
        box_reg_i = box_reg_i[indices]
        anchors = torch.from_numpy(anchors_i)[indices]
        predicted_boxes = apply_deltas(box_reg_i, anchors).reshape(-1, num_classes, 4)
        boxes_all.append(predicted_boxes)
        scores_all.append(predicted_prob)
    boxes_all, scores_all = torch.cat(boxes_all), torch.cat(scores_all)
    found = batch_multiclass_nms(boxes_all.half(), scores_all.half(), 0.05, 0.5, 200, 100)
    boxes = np.array([f[3] for f in found], np.float32).reshape(-1, 4)
    scores = np.array([f[0] for f in found], np.float32)
    labels = np.array([f[2] for f in found], np.int64)
    return boxes, scores, labels


# -- tests ---------------------------------------------------------------------------------
def hand_made_outputs(num_classes=3, seed=0):
    """Dense outputs at 64 x 64 with exact ties, float16 ties, saturated scores and many
    overlapping boxes."""
    rng = np.random.RandomState(seed)
    total = anchor_lib.num_anchors((SMALL, SMALL))
    logits = rng.normal(-2.0, 1.5, (total, num_classes)).astype(np.float32)
    logits[10:40, 0] = 1.25  # exact ties inside one class, on P3 (more than 200 rows)
    logits[40:60, 1] = np.float32(0.5) + np.arange(20, dtype=np.float32) * 1e-5  # float16 ties
    logits[600:620, 2] = 3.0  # ties on P4
    logits[100:110, 2] = 21.0 + np.arange(10, dtype=np.float32)  # all scores 1.0: by logit
    assert (1.0 / (1.0 + np.exp(-logits[100:110, 2])) == 1.0).all()
    deltas = rng.normal(0.0, 0.3, (total, 4)).astype(np.float32)
    return logits, deltas


def test_host_postprocess_is_the_seed_graph_step_by_step():
    logits, deltas = hand_made_outputs()
    post = SeedPostprocessor((SMALL, SMALL), num_classes=3)
    want = seed_graph_reference(logits, deltas, post.level_anchors, 3)
    got = post.detect(logits, deltas)
    assert len(want[1]) == 100  # enough candidates to reach max_total_size
    for a, b in zip(want, got):
        np.testing.assert_array_equal(a, b)
    assert got[1].dtype == np.float32 and np.array_equal(got[1].astype(np.float16), got[1])


def tamed_model():
    """A random network whose scores spread around 0.27 instead of saturating at 0 or 1
    (a random head on random features does): ties stay the exception, as with real weights,
    and the boxes stay near their anchors."""
    model = net.build_model(seed=0)
    torch.nn.init.constant_(model.head.cls_score.bias, -1.0)
    torch.nn.init.normal_(model.head.cls_score.weight, std=0.0002)
    torch.nn.init.normal_(model.head.bbox_pred.weight, std=0.0002)
    return model


def test_class_topk_graph_gives_the_host_detections():
    """seed_graph.ClassTopK (steps 1-3 in the graph, traced) -> the same detections."""
    model = tamed_model()
    graph = seed_graph.ClassTopK(model, (SMALL, SMALL))
    x = torch.rand(1, 3, SMALL, SMALL) * 255.0 - 120.0
    with torch.no_grad():
        cls_logits, box_deltas = model(x)
        traced = torch.jit.trace(graph, x, check_trace=False)
        boxes, scores = traced(x)
    post = SeedPostprocessor((SMALL, SMALL))
    assert tuple(boxes.shape) == (1, post.num_rows, 80, 4) == (1, 200 + 144 + 36 + 9 + 9, 80, 4)
    dense = post.detect(cls_logits[0].numpy(), box_deltas[0].numpy())
    found = post.detect_nms_inputs(boxes[0].numpy(), scores[0].numpy())
    assert len(dense[1]) == 100
    matched, total = export.match_detections(dense, found, 2.0**-11)
    assert (matched, total) == (100, 100)
    with pytest.raises(UserError, match="another input size"):
        post.detect_nms_inputs(boxes[0, :-1].numpy(), scores[0, :-1].numpy())


def test_float16_rounding_decides_near_equal_boxes():
    """Two boxes of one class at IoU 0.50038 in float32: detectron2's float NMS drops the
    second; rounded to float16 (steps 4-5) they overlap 0.49813 and both stay."""
    boxes = np.array([[600.0, 0.0, 700.0, 100.0], [633.3, 0.0, 733.3, 100.0]], np.float32)
    scores = np.array([0.9, 0.8], np.float32)
    # float32: intersection 66.7 x 100 over 20000 - 6670
    assert 6670.0 / 13330.0 > 0.5
    assert batched_nms(boxes, scores, [0, 0], 0.5).tolist() == [0]
    # float16: 633.3 -> 633.5 and 733.3 -> 733.5 (a step of 0.5 there): 6650 / 13350
    got_boxes, got_scores, labels = seed_nms(boxes, scores, [0, 0])
    np.testing.assert_array_equal(got_boxes, [[600, 0, 700, 100], [633.5, 0, 733.5, 100]])
    np.testing.assert_array_equal(got_scores, np.float16([0.9, 0.8]).astype(np.float32))
    assert labels.tolist() == [0, 0]


def test_float16_ties_keep_the_first_row_and_the_threshold_is_above_0_05():
    # Three overlapping boxes whose float32 scores differ but round to one float16
    # (0.70019531): the first row wins, where float32 would keep the third.
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [0, 1, 10, 11]], np.float32)
    scores = np.array([0.7001, 0.7002, 0.7003], np.float32)
    assert len(set(scores.astype(np.float16).tolist())) == 1
    got_boxes, got_scores, _ = seed_nms(boxes, scores, [1, 1, 1])
    np.testing.assert_array_equal(got_boxes, [[0, 0, 10, 10]])
    assert got_scores.tolist() == [float(np.float16(0.7002))]
    # Near the threshold: 0.04999 rounds to 0.049988 (dropped), 0.05002 to 0.050018 (kept).
    far = np.array([[0, 0, 10, 10], [50, 50, 60, 60]], np.float32)
    kept_boxes, kept, _ = seed_nms(far, np.array([0.04999, 0.05002], np.float32), [0, 0])
    assert kept.tolist() == [float(np.float16(0.05002))] and kept_boxes[0, 0] == 50
    # Step 7 drops a float16 score of 0.049988 anyway: the operator's own test (> or >=,
    # float16 or float32) cannot change the detections.
    dropped = keep_scored(far, np.float16([0.04999, 0.05002]).astype(np.float32), np.zeros(2))
    assert dropped[1].tolist() == [float(np.float16(0.05002))]


def test_multiclass_nms_caps_per_class_then_in_all():
    # class 0: b0, b1 (IoU 0.818 with b0: dropped), b2, b3; class 1: b4 (b0's box, another
    # class: kept), b5 (b2's box, score tied with b2: input order puts b2 first).
    boxes = [[0, 0, 10, 10], [1, 0, 11, 10], [20, 0, 30, 10], [40, 0, 50, 10]]
    boxes += [[0, 0, 10, 10], [20, 0, 30, 10]]
    scores = [0.9, 0.8, 0.7, 0.6, 0.85, 0.7]
    labels = [0, 0, 0, 0, 1, 1]
    assert multiclass_nms(boxes, scores, labels, 0.5, 10, 10).tolist() == [0, 4, 2, 5, 3]
    assert multiclass_nms(boxes, scores, labels, 0.5, 2, 10).tolist() == [0, 4, 2, 5]
    assert multiclass_nms(boxes, scores, labels, 0.5, 2, 3).tolist() == [0, 4, 2]
    assert multiclass_nms(np.zeros((0, 4)), [], [], 0.5, 2, 3).tolist() == []


def test_class_topk_ranks_per_class_with_ties_by_row():
    scores = np.array([[0.1, 0.9], [0.5, 0.9], [0.5, 0.2], [0.7, 0.1]], np.float32)
    rows, classes, ranks = class_topk(scores, 2)
    # class 0: row 3 (0.7), then rows 1 and 2 tie at 0.5: row 1; class 1: rows 0 and 1 tie
    # at 0.9: row 0, then row 1. Listed by rank, then class.
    assert list(zip(rows, classes, ranks)) == [(3, 0, 0), (0, 1, 0), (1, 0, 1), (1, 1, 1)]


def test_seed_rescale_divides_by_the_vertical_scale():
    """get_info.py writes "width height"; Retinanet_postprocess.py reads them as (h, w), so
    its scale new_w / old_w is the resized height over the original height."""
    box = np.array([[100.0, 200.0, 300.0, 400.0]], np.float32)
    # landscape 480 x 640 -> 800 x 1066: scale 800 / 480, for x and y alike
    np.testing.assert_allclose(seed_rescale(box, (800, 1066), (480, 640)), [[60, 120, 180, 240]])
    # portrait 640 x 480 -> 1066 x 800: scale 1066 / 640 = 1.665625, not 800 / 480
    right_edge = seed_rescale([[0, 0, 800, 1066]], (1066, 800), (640, 480))
    np.testing.assert_allclose(right_edge, [[0, 0, 800 / 1.665625, 640]], rtol=1e-6)
    assert right_edge[0, 2] > 480  # not clipped to the image either
    assert seed_rescale(box, (800, 1066), (480, 640)).dtype == np.float32


# -- the stages ----------------------------------------------------------------------------
def _prepare_synthetic(item):
    image_id, orig_h, orig_w = item
    scale = min(SMALL / float(orig_h), SMALL / float(orig_w))
    h, w = round(orig_h * scale), round(orig_w * scale)
    pixels = np.random.RandomState(image_id).randint(0, 256, (h, w, 3)).astype(np.uint8)
    meta = {"id": image_id, "orig_hw": [orig_h, orig_w], "resized_hw": [h, w]}
    return pixels, meta


@pytest.fixture(scope="module")
def stages(tmp_path_factory):
    """An export of each kind at 64 x 64 (tamed_model's weights) and a 3-image store."""
    root = tmp_path_factory.mktemp("seed")
    weights = root / "weights"
    weights.mkdir()
    torch.save(tamed_model().state_dict(), str(weights / "tamed.pth"))
    (weights / "weights.json").write_text(json.dumps({"source": "given", "file": "tamed.pth"}))
    data = root / "data"
    data.mkdir()
    write_store(
        str(data), [(139, 426, 640), (802, 640, 424), (11813, 500, 500)], (SMALL, SMALL),
        _prepare_synthetic, feed_spec(PIXEL_MEAN_BGR, PIXEL_STD_BGR, pad="after_norm"),
        workers=1,
    )  # fmt: skip
    exports = {}
    for kind in ("class_topk", "dense"):
        exports[kind] = root / ("export-" + kind)
        result = run_stage(
            "models.retinanet.export", "--out", exports[kind], "--weights", weights,
            "--input-size", SMALL, "--outputs", kind,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
    return {"root": root, "data": data, "exports": exports}


def _infer(stages, kind, profile, name):
    out = stages["root"] / name
    result = run_stage(
        "models.retinanet.infer", "--out", out, "--model", stages["exports"][kind],
        "--data", stages["data"], "--profile", profile, "--warmup", 0,
    )  # fmt: skip
    return result, out


@pytest.mark.slow
def test_seed_infer_from_the_seed_graph_equals_from_dense_outputs(stages):
    facts = json.loads((stages["exports"]["class_topk"] / "export.json").read_text())
    assert facts["output_kind"] == "class_topk" and facts["profile"] == "seed"
    assert facts["outputs"]["boxes"] == [1, 398, 80, 4] and facts["outputs"]["scores"] == [
        1,
        398,
        80,
    ]
    found = {}
    for kind in ("class_topk", "dense"):
        result, out = _infer(stages, kind, "seed", "infer-" + kind)
        assert result.returncode == 0, result.stderr
        found[kind] = json.loads((out / "detections.json").read_text())
        summary = json.loads((out / "infer.json").read_text())
        assert summary["postprocess"]["profile"] == "seed"
        assert summary["postprocess"]["outputs"] == kind
    assert found["class_topk"] == found["dense"]
    for d in found["dense"]:
        assert d["score"] >= 0.05 and float(np.float16(d["score"])) == d["score"]


def test_a_profile_refuses_the_other_profiles_outputs(stages, tmp_path):
    result, _ = _infer(stages, "class_topk", "upstream", "infer-wrong")
    assert result.returncode == USER_ERROR_EXIT
    assert "--outputs class_topk" in result.stderr and "upstream" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    with pytest.raises(UserError, match="cannot serve the upstream profile"):
        export.resolve_outputs("class_topk", "upstream")
    assert export.resolve_outputs("auto", "seed") == "class_topk"
    assert export.resolve_outputs("auto", "upstream") == "topk"
    assert not os.path.exists(str(stages["root"] / "infer-wrong" / "detections.json"))
