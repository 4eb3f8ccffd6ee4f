"""COCO val2017: layout, detectron2 preprocessing into a store, COCOeval evaluation.

Real data: ../shared/fixtures/coco-val2017-mini (79 val2017 images, 624 annotations, 5
crowd); the tests that need it skip with a reason when it is absent. The generated
sample (data_scripts.coco.sample) covers the rest, including a grayscale image.
"""

import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from data_scripts.coco import evaluate, layout, prepare, sample
from tests.conftest import input_args, recipe_feed
from zoostage import store
from zoostage.errors import UserError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE = os.path.join(os.path.dirname(REPO), "shared", "fixtures", "coco-val2017-mini")
needs_fixture = pytest.mark.skipif(
    not os.path.isdir(FIXTURE), reason="fixture %s is absent" % FIXTURE
)

# The fixture subset the prepare / evaluate tests run on: the three smallest image ids,
# and two wide images where the 1333 cap of the detectron2 resize applies.
SUBSET = (139, 802, 11813, 460229, 549055)
# (h, w) -> detectron2 ResizeShortestEdge(800, 1333), worked by hand:
EXPECTED_HW = {
    # 426 x 640: scale 800 / 426; w 640 * 800 / 426 = 1201.88 -> int(1202.38) = 1202
    139: ((426, 640), (800, 1202)),
    # 640 x 424: h 640 * 800 / 424 = 1207.55 -> 1208
    802: ((640, 424), (1208, 800)),
    # 500 x 333: h 500 * 800 / 333 = 1201.20 -> 1201
    11813: ((500, 333), (1201, 800)),
    # 640 x 383: h 640 * 800 / 383 = 1336.81 > 1333, so both scale by 1333 / 1336.81:
    # h 1333, w 800 * 0.99715 = 797.72 -> 798
    460229: ((640, 383), (1333, 798)),
    # 304 x 640: w 640 * 800 / 304 = 1684.21 > 1333: w 1333, h 800 * 1333 / 1684.21
    # = 633.17 -> 633
    549055: ((304, 640), (633, 1333)),
}
# The seed's rule (Retinanet_preprocess.py resize(): the long side int(np.floor(...)), then
# the 1333 cap, then int(x + 0.5)), worked by hand on the same images:
SEED_HW = {
    139: (800, 1201),  # floor(1201.88) = 1201, where detectron2 rounds to 1202
    802: (1207, 800),  # floor(1207.55) = 1207 (detectron2: 1208)
    11813: (1201, 800),  # floor(1201.20) = 1201: the same
    # floor(1336.81) = 1336 > 1333: x 1333 / 1336: h int(1333.5) = 1333,
    # w 800 * 0.99775 = 798.20 -> int(798.70) = 798
    460229: (1333, 798),
    # floor(1684.21) = 1684 > 1333: h 800 * 1333 / 1684 = 633.25 -> 633, w 1333
    549055: (633, 1333),
}


def run_module(module, *args):
    """Run `python -m module args` from the repo root; (returncode, stdout, stderr)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(
        [sys.executable, "-m", module] + [str(a) for a in args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        universal_newlines=True,
        timeout=120,
    )
    return proc.returncode, proc.stdout, proc.stderr


def assert_one_error_line(rc, err, *words):
    assert rc == 3, err
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1, err
    assert "Traceback" not in err
    for word in words:
        assert word in errors[0], errors[0]


def fixture_annotations():
    with open(os.path.join(FIXTURE, layout.ANNOTATION_FILE)) as handle:
        return json.load(handle)


def make_root(root, annotations, image_names):
    """A COCO root at `root` with `annotations` and symlinks to fixture images."""
    os.makedirs(os.path.join(root, "annotations"))
    os.makedirs(os.path.join(root, layout.IMAGES_DIR))
    with open(os.path.join(root, layout.ANNOTATION_FILE), "w") as handle:
        json.dump(annotations, handle)
    for name in image_names:
        os.symlink(
            os.path.join(FIXTURE, layout.IMAGES_DIR, name),
            os.path.join(root, layout.IMAGES_DIR, name),
        )
    return str(root)


def subset_annotations(ids):
    data = fixture_annotations()
    keep = set(ids)
    data["images"] = [im for im in data["images"] if im["id"] in keep]
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] in keep]
    return data


def gt_detections(annotations, shift=0.0):
    """The non-crowd ground truth boxes as score-1 detections, moved right by shift * w."""
    result = []
    for ann in annotations["annotations"]:
        if ann["iscrowd"]:
            continue
        x, y, w, h = ann["bbox"]
        result.append(
            {
                "image_id": ann["image_id"],
                "category_id": ann["category_id"],
                "bbox": [x + shift * w, y, w, h],
                "score": 1.0,
            }
        )
    return result


def write_json(path, data):
    with open(str(path), "w") as handle:
        json.dump(data, handle)
    return str(path)


# ---------------------------------------------------------------- layout


def test_label_mapping_is_the_sorted_category_ids():
    assert len(layout.CATEGORY_IDS) == 80
    assert list(layout.CATEGORY_IDS) == sorted(layout.CATEGORY_IDS)
    assert layout.label_to_category(0) == 1  # person
    assert layout.label_to_category(11) == 13  # stop sign: id 12 is unused
    assert layout.label_to_category(79) == 90  # toothbrush
    for label in range(80):
        assert layout.category_to_label(layout.label_to_category(label)) == label
    assert layout.CATEGORY_NAMES[90] == "toothbrush"


@needs_fixture
def test_layout_reads_the_fixture():
    data = layout.load_annotations(FIXTURE)
    assert len(data["images"]) == 79
    assert len(data["annotations"]) == 624
    assert sum(a["iscrowd"] for a in data["annotations"]) == 5
    note = io.StringIO()
    images = layout.list_images(FIXTURE, data, stream=note)
    assert [im["id"] for im in images] == sorted(im["id"] for im in data["images"])
    assert images[0] == {"id": 139, "file_name": "000000000139.jpg", "height": 426, "width": 640}
    assert note.getvalue() == ""
    assert [im["id"] for im in layout.list_images(FIXTURE, data, limit=3)] == [139, 802, 11813]


def test_layout_missing_pieces_say_what_and_how(tmp_path):
    with pytest.raises(UserError, match=r"does not exist.*val2017.zip"):
        layout.load_annotations(str(tmp_path / "nowhere"))
    with pytest.raises(UserError, match=r"instances_val2017.json.*annotations_trainval2017.zip"):
        layout.load_annotations(str(tmp_path))
    os.makedirs(str(tmp_path / "annotations"))
    write_json(tmp_path / layout.ANNOTATION_FILE, {"images": []})
    with pytest.raises(UserError, match=r"no annotations / categories"):
        layout.load_annotations(str(tmp_path))
    (tmp_path / layout.ANNOTATION_FILE).write_text("{not json")
    with pytest.raises(UserError, match=r"not valid JSON"):
        layout.load_annotations(str(tmp_path))
    with pytest.raises(UserError, match=r"no val2017/ image folder.*val2017.zip"):
        layout.images_dir(str(tmp_path))


def test_layout_rejects_other_categories(tmp_path):
    data = sample.make_sample(str(tmp_path), images=1)
    data["categories"] = data["categories"][:79]  # toothbrush lost
    write_json(tmp_path / layout.ANNOTATION_FILE, data)
    with pytest.raises(UserError, match=r"80 COCO categories.*toothbrush"):
        layout.load_annotations(str(tmp_path))


@needs_fixture
def test_listed_images_missing_on_disk_are_one_error(tmp_path):
    data = fixture_annotations()
    names = [im["file_name"] for im in layout.sorted_images(data)]
    root = make_root(tmp_path / "coco", data, names[:-2])  # the two largest ids are absent
    with pytest.raises(UserError) as info:
        layout.list_images(root)
    message = str(info.value)
    assert "2 of the 79 images" in message
    assert names[-2] in message and names[-1] in message
    assert "val2017.zip" in message
    # --limit chooses the images first: only the chosen ones must be on disk.
    assert [im["file_name"] for im in layout.list_images(root, limit=5)] == names[:5]
    rc, _, err = run_module(
        "data_scripts.coco.prepare",
        *input_args("retinanet"),
        "--out",
        tmp_path / "out",
        "--root",
        root,
    )
    assert_one_error_line(rc, err, "2 of the 79 images", names[-1])


@needs_fixture
def test_unlisted_files_are_ignored_with_a_note(tmp_path):
    data = subset_annotations(SUBSET[:2])
    names = [im["file_name"] for im in data["images"]]
    root = make_root(tmp_path / "coco", data, [*names, "000000397133.jpg"])
    note = io.StringIO()
    images = layout.list_images(root, stream=note)
    assert [im["id"] for im in images] == list(SUBSET[:2])
    assert "note: 1 .jpg files" in note.getvalue() and "000000397133.jpg" in note.getvalue()


# ---------------------------------------------------------------- prepare


def test_resize_rule_matches_detectron2_by_hand():
    for hw, expected in EXPECTED_HW.values():
        assert prepare.resized_hw(*hw) == expected
    # 480 x 640: 640 * 800 / 480 = 1066.67 -> 1067 (the seed script floors: 1066)
    assert prepare.resized_hw(480, 640) == (800, 1067)
    assert prepare.resized_hw(800, 1333) == (800, 1333)
    assert prepare.resized_hw(1600, 1200) == (1067, 800)  # downscaling, same rule


def test_seed_resize_rule_floors_the_long_side_by_hand():
    for image_id, (hw, _) in EXPECTED_HW.items():
        assert prepare.seed_resized_hw(*hw) == SEED_HW[image_id], image_id
    assert prepare.seed_resized_hw(480, 640) == (800, 1066)  # 1066.67 floored
    assert prepare.seed_resized_hw(640, 480) == (1066, 800)
    assert prepare.seed_resized_hw(612, 612) == (800, 800)
    assert prepare.size_rule("seed") is prepare.seed_resized_hw
    assert prepare.size_rule("upstream") is prepare.resized_hw
    with pytest.raises(UserError, match="seed or upstream"):
        prepare.size_rule("mmdet")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """The fixture subset prepared by the stage's command line, 2 workers."""
    if not os.path.isdir(FIXTURE):
        pytest.skip("fixture %s is absent" % FIXTURE)
    base = tmp_path_factory.mktemp("coco")
    data = subset_annotations(SUBSET)
    root = make_root(base / "coco", data, [im["file_name"] for im in data["images"]])
    out = str(base / "data")
    rc, stdout, err = run_module(
        "data_scripts.coco.prepare",
        *input_args("retinanet"),
        "--out",
        out,
        "--root",
        root,
        "--workers",
        2,
        "--profile",
        "upstream",
    )
    assert rc == 0, err
    assert "prepared 5 COCO val2017 images" in stdout
    return root, out, data


@pytest.mark.slow
def test_seed_profile_prepares_the_seed_scripts_pixels(prepared, tmp_path):
    """--profile seed (the default): Retinanet_preprocess.py's size rule and
    cv2.resize(INTER_LINEAR) on the uint8 image (cv2.imread's), then the same feed."""
    root, _, _ = prepared
    out = str(tmp_path / "seed")
    rc, _, err = run_module(
        "data_scripts.coco.prepare", *input_args("retinanet"), "--out", out, "--root", root,
        "--workers", 1,
    )  # fmt: skip
    assert rc == 0, err
    import cv2

    data = store.Store(out)
    assert data.index["profile"] == "seed" and data.index["resize"]["method"] == "cv2"
    for i, record in enumerate(data.records):
        assert record["resized_hw"] == list(SEED_HW[record["id"]]) == record["valid_hw"]
        h, w = record["resized_hw"]
        image = cv2.imread(os.path.join(root, record["file"]), cv2.IMREAD_COLOR)
        expected = cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)
        np.testing.assert_array_equal(data.pixels[i, :h, :w], expected)
        # The seed subtracts the mean from the float32 image, then pads with 0.
        seed_input = expected.astype(np.float32) - np.float32([103.53, 116.28, 123.675])
        np.testing.assert_array_equal(data.batch([i])[0, :, :h, :w], seed_input.transpose(2, 0, 1))


def test_prepare_store_shape_records_and_sizes(prepared):
    _, out, _ = prepared
    pixels = np.load(os.path.join(out, store.IMAGES_FILE), mmap_mode="r")
    assert pixels.shape == (5, 1344, 1344, 3) and pixels.dtype == np.uint8
    with open(os.path.join(out, store.INDEX_FILE)) as handle:
        index = json.load(handle)
    assert [r["id"] for r in index["records"]] == sorted(SUBSET)
    for record in index["records"]:
        orig, resized = EXPECTED_HW[record["id"]]
        assert record["orig_hw"] == list(orig)
        assert record["resized_hw"] == list(resized) == record["valid_hw"]
        assert record["file"] == "val2017/%012d.jpg" % record["id"]
    assert index["feed"] == store.feed_spec(
        (103.53, 116.28, 123.675), (1.0, 1.0, 1.0), pad="after_norm"
    )
    assert index["category_ids"] == list(layout.CATEGORY_IDS)
    assert index["input_hw"] == [1344, 1344]


def test_prepare_pixels_are_detectron2_resize(prepared):
    root, out, _ = prepared
    pil = pytest.importorskip("PIL.Image")
    data = store.Store(out)
    assert data.index["resize"]["method"] == "pil"
    for i in (0, 3):  # an upscaled image and one under the 1333 cap
        record = data.records[i]
        image = store.read_image(os.path.join(root, record["file"]))
        h, w = record["resized_hw"]
        bilinear = getattr(pil, "Resampling", pil).BILINEAR
        expected = np.asarray(pil.fromarray(image).resize((w, h), bilinear))
        np.testing.assert_array_equal(data.pixels[i, :h, :w], expected)
        assert not data.pixels[i, h:].any() and not data.pixels[i, :, w:].any()
        # cv2 INTER_LINEAR (the --resize cv2 fallback) stays within one grey level.
        fallback = prepare.resize(image, (h, w), "cv2")
        assert np.abs(fallback.astype(int) - expected.astype(int)).max() <= 1


def test_feed_pads_with_zero_after_normalization(prepared):
    _, out, _ = prepared
    data = store.Store(out)
    mean = np.array([103.53, 116.28, 123.675], dtype=np.float32)
    for i in (0, 4):
        h, w = data.records[i]["resized_hw"]
        batch = data.batch([i])
        assert batch.shape == (1, 3, 1344, 1344) and batch.dtype == np.float32
        valid = data.pixels[i, :h, :w].astype(np.float32) - mean
        np.testing.assert_array_equal(batch[0, :, :h, :w], valid.transpose(2, 0, 1))
        assert not batch[0, :, h:, :].any() and not batch[0, :, :, w:].any()


# ---------------------------------------------------------------- evaluate


def test_ground_truth_as_detections_scores_100(prepared, tmp_path, capsys):
    root, data_dir, data = prepared
    dets = write_json(tmp_path / "dets.json", gt_detections(data))
    out = str(tmp_path / "eval")
    os.makedirs(out)
    result = evaluate.evaluate(out, dets, root, data_dir=data_dir)
    metrics = result["metrics"]
    assert metrics["AP"] == metrics["AP50"] == metrics["AP75"] == 100.0
    assert all(metrics[k] in (100.0, None) for k in ("APs", "APm", "APl"))
    assert result["images"] == 5
    with open(os.path.join(out, "metrics.json")) as handle:
        assert json.load(handle)["metrics"] == metrics
    assert result["figures"] == ["detections.png"]
    assert os.path.getsize(os.path.join(out, "detections.png")) > 0
    with open(os.path.join(out, "cocoeval.txt")) as handle:
        log = handle.read()
    assert "Accumulating evaluation results" in log and "Average Precision" in log
    printed = capsys.readouterr().out
    assert printed.count("IoU=0.50:0.95 | area=   all | maxDets=100") == 2  # AP and AR, once
    assert "Accumulating" not in printed


def test_shifted_boxes_score_what_the_iou_says(prepared, tmp_path):
    # Every box moved right by 0.2 of its width: IoU = (1 - 0.2) / (1 + 0.2) = 0.667.
    # That is a match at IoU thresholds 0.50, 0.55, 0.60, 0.65 (AP 1 each) and a miss at
    # 0.70 .. 0.95 (AP 0): AP = 4 / 10 = 40, AP50 = 100, AP75 = 0.
    root, data_dir, data = prepared
    dets = write_json(tmp_path / "dets.json", gt_detections(data, shift=0.2))
    out = str(tmp_path / "eval")
    os.makedirs(out)
    metrics = evaluate.evaluate(out, dets, root, data_dir=data_dir, figure_images=0)["metrics"]
    assert metrics["AP"] == pytest.approx(40.0)
    assert metrics["AP50"] == pytest.approx(100.0)
    assert metrics["AP75"] == pytest.approx(0.0)


def test_images_without_detections_count_with_data(prepared, tmp_path):
    root, data_dir, data = prepared
    only_first = [d for d in gt_detections(data) if d["image_id"] == SUBSET[0]]
    dets = write_json(tmp_path / "dets.json", only_first)
    out = str(tmp_path / "eval")
    os.makedirs(out)
    with_data = evaluate.evaluate(out, dets, root, data_dir=data_dir, figure_images=0)
    assert with_data["images"] == 5 and with_data["metrics"]["AP"] < 100.0
    alone = evaluate.evaluate(out, dets, root, figure_images=0)
    assert alone["images"] == 1 and alone["metrics"]["AP"] == 100.0


def test_no_detections_scores_ap_0_with_data(prepared, tmp_path):
    """An under-trained model finds nothing: with the data stage's images that is AP 0
    (every object missed), not an error; sizes without objects stay null."""
    root, data_dir, data = prepared
    dets = write_json(tmp_path / "dets.json", [])
    out = str(tmp_path / "eval")
    os.makedirs(out)
    result = evaluate.evaluate(out, dets, root, data_dir=data_dir, figure_images=0)
    assert result["images"] == 5 and result["detections"] == 0
    assert result["metrics"]["AP"] == 0.0 and result["metrics"]["AP50"] == 0.0
    written = json.loads(open(os.path.join(out, evaluate.METRICS_FILE)).read())
    assert written["metrics"] == result["metrics"]
    # The same through the stage's command line: exit 0.
    rc, stdout, err = run_module(
        "data_scripts.coco.evaluate", "--out", tmp_path / "cli", "--detections", dets,
        "--root", root, "--data", data_dir, "--figure-images", 0,
    )  # fmt: skip
    assert rc == 0, err
    assert json.loads((tmp_path / "cli" / "metrics.json").read_text())["metrics"]["AP"] == 0.0


def test_detections_must_match_the_data_stage(prepared, tmp_path):
    root, data_dir, _ = prepared
    other = [{"image_id": 397133, "category_id": 1, "bbox": [0, 0, 10, 10], "score": 0.9}]
    dets = write_json(tmp_path / "dets.json", other)
    with pytest.raises(UserError, match=r"did not prepare"):
        evaluate.evaluate(str(tmp_path), dets, FIXTURE, data_dir=data_dir)
    bad_cat = [{"image_id": 139, "category_id": 12, "bbox": [0, 0, 10, 10], "score": 0.9}]
    dets = write_json(tmp_path / "dets.json", bad_cat)
    with pytest.raises(UserError, match=r"not COCO categories"):
        evaluate.evaluate(str(tmp_path), dets, root, data_dir=data_dir)


@needs_fixture
@pytest.mark.parametrize(
    "content, words",
    [
        ("[]", ["no detections:", "--data", "AP 0"]),  # without --data: nothing to score
        ("[{", ["not valid COCO results", "not JSON"]),
        ('{"detections": []}', ["not valid COCO results", "not a list"]),
        ('[{"image_id": 139, "category_id": 1, "score": 0.5}]', ["entry 0", "no bbox"]),
        ('[{"image_id": 139, "category_id": 1, "bbox": [1, 2, 3], "score": 1}]', ["bbox"]),
    ],
)
def test_empty_or_garbled_results_are_one_error_line(tmp_path, content, words):
    dets = tmp_path / "dets.json"
    dets.write_text(content)
    rc, _, err = run_module(
        "data_scripts.coco.evaluate",
        "--out",
        tmp_path / "eval",
        "--detections",
        dets,
        "--root",
        FIXTURE,
    )
    assert_one_error_line(rc, err, *words)
    assert not os.path.exists(str(tmp_path / "eval" / "metrics.json"))


# ---------------------------------------------------------------- generated sample


def test_sample_is_deterministic_and_coco_shaped(tmp_path):
    data = sample.make_sample(str(tmp_path / "a"), images=6, seed=0)
    rc, stdout, err = run_module("data_scripts.coco.sample", "--out", tmp_path / "b")
    assert rc == 0, err
    assert "wrote a sample (images 6)" in stdout
    for rel in [layout.ANNOTATION_FILE] + [
        layout.IMAGES_DIR + "/" + im["file_name"] for im in data["images"]
    ]:
        with open(str(tmp_path / "a" / rel), "rb") as a, open(str(tmp_path / "b" / rel), "rb") as b:
            assert a.read() == b.read(), rel
    assert set(data) >= {"info", "licenses", "images", "annotations", "categories"}
    assert [c["id"] for c in data["categories"]] == list(layout.CATEGORY_IDS)
    crowd = [a for a in data["annotations"] if a["iscrowd"]]
    assert len(crowd) == 1
    mask_api = pytest.importorskip("pycocotools.mask")
    h, w = crowd[0]["segmentation"]["size"]
    rle = mask_api.frPyObjects(crowd[0]["segmentation"], h, w)
    assert float(mask_api.area(rle)) == crowd[0]["area"]
    assert list(mask_api.toBbox(rle)) == crowd[0]["bbox"]
    import cv2

    gray = [
        im
        for im in data["images"]
        if cv2.imread(str(tmp_path / "a" / "val2017" / im["file_name"]), cv2.IMREAD_UNCHANGED).ndim
        == 2
    ]
    assert len(gray) == 1


def test_sample_round_trip_prepare_and_evaluate(tmp_path):
    root = str(tmp_path / "coco")
    data = sample.make_sample(root, images=6, seed=3)
    out = str(tmp_path / "data")
    os.makedirs(out)
    assert prepare.prepare(out, root, recipe_feed("retinanet"), workers=1) == (6, 0)
    stored = store.Store(out)
    assert [r["id"] for r in stored.records] == sorted(im["id"] for im in data["images"])
    by_id = dict((im["id"], im) for im in data["images"])
    for record in stored.records:
        image = by_id[record["id"]]
        assert record["orig_hw"] == [image["height"], image["width"]]
        # the default profile is the seed's
        hw = prepare.seed_resized_hw(image["height"], image["width"])
        assert tuple(record["resized_hw"]) == hw
    # 360 x 640: floor(640 * 800 / 360) = 1422 > 1333 -> w 1333, h 800 * 1333 / 1422 = 749.9
    # -> 750
    assert [750, 1333] in [r["resized_hw"] for r in stored.records]
    # The grayscale JPEG (the last generated image) is stored as three equal channels.
    gray = [r["id"] for r in stored.records].index(data["images"][-1]["id"])
    h, w = stored.records[gray]["resized_hw"]
    pixels = np.asarray(stored.pixels[gray, :h, :w])
    assert (pixels[..., 0] == pixels[..., 1]).all() and (pixels[..., 1] == pixels[..., 2]).all()
    dets = write_json(tmp_path / "dets.json", gt_detections(data))
    result = evaluate.evaluate(out, dets, root, data_dir=out)
    assert result["metrics"]["AP"] == 100.0 and result["images"] == 6
    assert result["figures"] == ["detections.png"]


def test_prepare_bad_images(tmp_path):
    root = str(tmp_path / "coco")
    data = sample.make_sample(root, images=4, seed=1)
    name = sorted(data["images"], key=lambda im: im["id"])[1]["file_name"]
    path = os.path.join(root, "val2017", name)
    with open(path, "rb") as handle:
        raw = handle.read()
    with open(path, "wb") as handle:
        handle.write(raw[: len(raw) // 2])  # truncated: no JPEG end marker
    out = str(tmp_path / "data")
    os.makedirs(out)
    with pytest.raises(UserError, match=r"truncated JPEG.*--skip-bad"):
        prepare.prepare(out, root, recipe_feed("retinanet"), workers=1)
    assert prepare.prepare(out, root, recipe_feed("retinanet"), workers=1, skip_bad=True) == (3, 1)
    assert len(store.Store(out)) == 3
    # An image whose size disagrees with the annotation file (replaced or rotated).
    data["images"][0]["height"] += 1
    write_json(os.path.join(root, layout.ANNOTATION_FILE), data)
    with pytest.raises(UserError, match=r"but annotations/instances_val2017.json says"):
        prepare.prepare(out, root, recipe_feed("retinanet"), workers=1, limit=1)


def test_prepare_checks_the_input_size(tmp_path):
    with pytest.raises(UserError, match=r"smaller than --max-size 1333"):
        prepare.prepare(str(tmp_path), str(tmp_path), recipe_feed("retinanet"), input_size=1024)
    with pytest.raises(UserError, match=r"multiple of 32.*1344"):
        prepare.prepare(str(tmp_path), str(tmp_path), recipe_feed("retinanet"), input_size=1340)


def test_resize_method_without_pillow(monkeypatch, capsys):
    assert prepare.resize_method("auto", "seed") == "cv2"  # the seed's own, Pillow or not
    monkeypatch.setattr(prepare, "_have_pil", lambda: False)
    assert prepare.resize_method("auto") == "cv2"
    assert "note: Pillow is not installed" in capsys.readouterr().err
    assert prepare.resize_method("cv2") == "cv2"
    with pytest.raises(UserError, match=r"pip install pillow.*--resize cv2"):
        prepare.resize_method("pil")
