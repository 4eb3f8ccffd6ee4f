"""WIDER FACE data stage: the seed's resize bit for bit, and evaluating any subset of val.

The seed's preprocessing is Ascend ModelZoo-PyTorch
AscendIE/TorchAIE/built-in/cv/face/retinaface/data_preprocess.py (lines 42-68):

    img = cv2.imread(path, cv2.IMREAD_COLOR).astype(np.float32)
    resize = 1000 / max(h, w)
    img = cv2.resize(img, None, None, fx=resize, fy=resize, interpolation=cv2.INTER_NEAREST)
    img = cv2.copyMakeBorder(img, 0, 1000 - h', 0, 1000 - w', BORDER_CONSTANT, value=0)
    img = Normalize((104, 117, 123), (1, 1, 1))(ToTensor()(img))   # CHW, float input
                                                                   # not divided by 255
"""

import os
import shutil

import numpy as np
import pytest

from data_scripts.widerface import layout, prepare, sample, select
from tests.conftest import fixture_path, input_args, recipe_feed, run_stage
from zoostage.errors import UserError
from zoostage.store import Store, to_input

SEED_SIZE = 1000


def seed_preprocess(path, size=SEED_SIZE):
    """data_preprocess.py's steps (above) with numpy in place of torchvision: (3, S, S)."""
    import cv2

    img = cv2.imread(path, cv2.IMREAD_COLOR).astype(np.float32)
    resize = size / np.max(img.shape[0:2])
    img = cv2.resize(img, None, None, fx=resize, fy=resize, interpolation=cv2.INTER_NEAREST)
    img = cv2.copyMakeBorder(
        img, 0, size - img.shape[0], 0, size - img.shape[1], cv2.BORDER_CONSTANT, value=(0, 0, 0)
    )
    chw = img.transpose(2, 0, 1)  # ToTensor on a float32 array: a transpose, no scaling
    mean = np.array([104, 117, 123], dtype=np.float32)[:, None, None]
    return (chw - mean) / np.float32(1.0), resize


def zoobox_input(path, size=SEED_SIZE):
    """The store's way: the uint8 image resized (seed profile), padded, fed."""
    pixels, meta = prepare.prepare_image((path, "e/x", "e/x.jpg", size, "seed"))
    frame = np.zeros((1, size, size, 3), dtype=np.uint8)
    h, w = pixels.shape[:2]
    frame[0, :h, :w] = pixels
    return to_input(frame, [[h, w]], recipe_feed("retinaface"))[0], meta


def test_seed_resize_of_uint8_gives_the_seeds_float32_input_exactly(tmp_path):
    import cv2

    images = fixture_path("widerface-val-sample", "images")
    paths = sorted(str(p) for p in images.rglob("*.jpg"))[::40]  # 6 real photos, events apart
    # And a generated one whose long side is its height, with a non-integer factor.
    rng = np.random.RandomState(0)
    made = str(tmp_path / "tall.jpg")
    cv2.imwrite(made, rng.randint(0, 256, (777, 301, 3)).astype(np.uint8))
    for path in [*paths, made]:
        expected, resize = seed_preprocess(path)
        found, meta = zoobox_input(path)
        assert found.dtype == np.float32 and found.shape == expected.shape
        np.testing.assert_array_equal(found, expected)  # every value, padding included
        # The seed keeps resize as float32 for its postprocess; the record keeps float64.
        assert np.float32(meta["scale"]) == np.float32(resize)


# -- choosing the images --------------------------------------------------------------


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("wider") / "root")
    sample.make_sample(folder, events=3, per_event=4, seed=1)
    return folder


def test_spread_takes_evenly_spaced_images():
    assert select.spread(list(range(12)), 5) == [0, 2, 4, 7, 9]
    assert select.spread(list(range(10)), 3) == [0, 3, 6]
    assert select.spread([4, 8, 15], 0) == [4, 8, 15]
    assert select.spread([4, 8, 15], 7) == [4, 8, 15]
    assert select.spread(list(range(3226)), 202)[:3] == [0, 15, 31]


def test_present_subset_list_and_limit(root, tmp_path):
    dataset = layout.load(root)
    holes = str(tmp_path / "holes")
    shutil.copytree(root, holes)
    partial = layout.load(holes)
    for i in (1, 5, 6):
        os.remove(partial.image_path(i))
    with pytest.raises(UserError, match="--subset present"):
        select.select(partial, "all")
    chosen, facts = select.select(partial, "present")
    assert chosen == [0, 2, 3, 4, 7, 8, 9, 10, 11]
    assert facts["missing"] == 3 and facts["chosen"] == 9 and facts["images_in_ground_truth"] == 12

    listing = tmp_path / "list.txt"
    # Any order, ".jpg" optional, comments and blank lines ignored; gt order comes back.
    listing.write_text(
        "# a few\n%s.jpg\n\n%s\n%s  # twice\n%s\n"
        % (dataset.ids[9], dataset.ids[2], dataset.ids[5], dataset.ids[5])
    )
    chosen, _ = select.select(dataset, "all", str(listing))
    assert chosen == [2, 5, 9]
    chosen, facts = select.select(partial, "present", str(listing))
    assert chosen == [2, 9] and facts["missing"] == 1
    chosen, _ = select.select(dataset, "all", str(listing), limit=2)
    assert chosen == [2, 5]


def test_bad_lists_are_one_line_errors(root, tmp_path):
    dataset = layout.load(root)
    bad = tmp_path / "bad.txt"
    bad.write_text("%s\n../../etc/passwd\n" % dataset.ids[0])
    with pytest.raises(UserError, match=r"bad\.txt line 2 names '\.\./\.\./etc/passwd'"):
        select.select(dataset, "all", str(bad))
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n")
    with pytest.raises(UserError, match="names no image"):
        select.select(dataset, "all", str(empty))
    with pytest.raises(UserError, match="cannot read the image list"):
        select.select(dataset, "all", str(tmp_path / "absent.txt"))
    gone = str(tmp_path / "gone")
    shutil.copytree(root, gone)
    shutil.rmtree(os.path.join(gone, "images"))
    os.makedirs(os.path.join(gone, "images"))
    with pytest.raises(UserError, match="none of the 12 chosen"):
        select.select(layout.load(gone), "present")


def test_prepare_stage_present_subset_records_the_choice(root, tmp_path):
    holes = str(tmp_path / "holes")
    shutil.copytree(root, holes)
    dataset = layout.load(holes)
    os.remove(dataset.image_path(3))
    out = str(tmp_path / "prep")
    proc = run_stage(
        "data_scripts.widerface.prepare",
        *input_args("retinaface"),
        *("--out", out, "--root", holes, "--input-size", 64, "--workers", 1),
        *("--subset", "present"),
    )
    assert proc.returncode == 0, proc.stderr
    assert "preprocessed 11 of 12" in proc.stdout and "1 not in the image folder" in proc.stdout
    store = Store(out)
    assert [r["id"] for r in store.records] == [i for k, i in enumerate(dataset.ids) if k != 3]
    assert store.index["selection"]["missing"] == 1
    assert store.index["selection"]["subset"] == "present"


def test_a_subset_report_says_it_is_not_the_full_set_number():
    from zoostage.report import subset_note

    assert subset_note(16, 3226) == (
        "sample of 16 images: not the full-set number (published over 3226)"
    )
    assert subset_note(3226, 3226) is None and subset_note(5, None) is None
