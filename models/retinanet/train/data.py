"""COCO training data for RetinaNet: reading, augmentation, batches, anchor targets.

Layout (the official download; `--split val2017` reads the val layout, e.g. for tests):

    ROOT/train2017/000000000009.jpg ...
    ROOT/annotations/instances_train2017.json

What mmdetection v2.9's coco_detection.py train pipeline does, and so does this module:
- annotations: boxes [x, y, x + w, y + h]; crowd boxes (iscrowd 1) are left out (mmdet
  keeps them as gt_bboxes_ignore, which RetinaNet's ignore_iof_thr -1 never uses); boxes
  with area <= 0, w < 1, h < 1 or no overlap with the image are dropped; images left
  without a box, or smaller than 32 pixels, are skipped (filter_empty_gt, min_size 32);
- Resize(img_scale=(1333, 800), keep_ratio=True): scale = min(1333 / long side,
  800 / short side), new size int(x * scale + 0.5), OpenCV bilinear, boxes scaled and
  clipped to the image (the rule of detectron2's ResizeShortestEdge at test time too);
- RandomFlip(0.5), horizontal: x1' = w - x2, x2' = w - x1. Flips are drawn from the seed
  and the epoch by the batch plan, not by the loader workers, so a run is reproducible for
  any number of workers and a resumed run draws the same flips;
- normalization as the inference recipe's data stage feeds detectron2's network: BGR
  uint8, minus PIXEL_MEAN_BGR (103.53, 116.28, 123.675), std 1, padding 0 after the
  normalization. It runs on the device (`to_input`): batches travel as uint8;
- batches padded at the bottom / right to a multiple of 32 (Pad size_divisor=32, then
  collation to the largest image), or to a fixed square `pad_size` (static shapes for
  graph-compiled devices): the upstream profile. The seed profile pads as the seed's
  modified Pad does (profiles.py): each image to its orientation's fixed frame
  (`seed_frame`: 1344 x 800 when h >= w, else 800 x 1344), every anchor of the frame
  valid, and keeps an image's first 40 boxes (`TrainDataset` max_boxes);
- GroupSampler: images are grouped by orientation (w / h > 1 or not) so a batch holds one
  kind; every group is padded to whole steps by repeating its own images.

Anchor targets (targets.py) are computed in the loader workers (collate), in parallel with
the device's work, from the padded batch size and each image's own padded size.
"""

import json
import os

import numpy as np

from data_scripts.coco import layout
from models.retinanet import NUM_CLASSES, PIXEL_MEAN_BGR
from models.retinanet.train import targets as target_lib
from zoostage.errors import UserError

MIN_SIZE = 800
MAX_SIZE = 1333
SIZE_DIVISOR = 32
MIN_IMAGE_SIDE = 32
FLIP_RATIO = 0.5
DEFAULT_SPLIT = "train2017"


def annotation_file(root, split):
    return os.path.join(root, "annotations", "instances_%s.json" % split)


def _missing(root, split, what):
    return UserError(
        "COCO %s at %s has no %s; download %s.zip from http://images.cocodataset.org/zips/ "
        "and annotations_trainval2017.zip from http://images.cocodataset.org/annotations/ "
        "and unzip both into %s (or pass --split val2017 to train on the val layout)"
        % (split, root, what, split, root)
    )


def load_split(root, split=DEFAULT_SPLIT, limit=0):
    """(records, stats): the training images of ROOT/<split>, sorted by image id.

    A record: {"id", "path", "height", "width", "boxes" (G, 4) float32 xyxy,
    "labels" (G,) int64 contiguous 0..79}. `limit` > 0 keeps the first `limit` images
    (after the filters). Missing folders or files are UserErrors.
    """
    if not os.path.isdir(root):
        raise UserError(
            "COCO folder %s does not exist; pass the folder that holds %s/" % (root, split)
        )
    path = annotation_file(root, split)
    if not os.path.isfile(path):
        raise _missing(root, split, "annotations/instances_%s.json" % split)
    folder = os.path.join(root, split)
    if not os.path.isdir(folder):
        raise _missing(root, split, "%s/ image folder" % split)
    try:
        with open(path) as handle:
            data = json.load(handle)
    except ValueError as error:
        raise UserError("%s is not valid JSON (%s); download it again" % (path, error)) from None
    if not isinstance(data, dict) or not all(k in data for k in ("images", "annotations")):
        raise UserError("%s is not a COCO instances file (no images / annotations)" % path)
    layout.check_categories(data.get("categories") or [], path)
    by_image = {}
    stats = {"annotations": 0, "crowd": 0, "dropped_boxes": 0}
    for ann in data["annotations"]:
        stats["annotations"] += 1
        by_image.setdefault(int(ann["image_id"]), []).append(ann)
    records = []
    skipped_empty = skipped_small = 0
    for image in sorted(data["images"], key=lambda im: int(im["id"])):
        height, width = int(image["height"]), int(image["width"])
        boxes, labels = [], []
        for ann in by_image.get(int(image["id"]), ()):
            if ann.get("iscrowd", 0):
                stats["crowd"] += 1
                continue
            x, y, w, h = [float(v) for v in ann["bbox"]]
            inter_w = max(0.0, min(x + w, width) - max(x, 0.0))
            inter_h = max(0.0, min(y + h, height) - max(y, 0.0))
            category = int(ann["category_id"])
            if (
                inter_w * inter_h == 0
                or ann.get("area", w * h) <= 0
                or w < 1
                or h < 1
                or category not in layout.LABEL_OF_CATEGORY
            ):
                stats["dropped_boxes"] += 1
                continue
            boxes.append([x, y, x + w, y + h])
            labels.append(layout.category_to_label(category))
        if not boxes:
            skipped_empty += 1
            continue
        if min(height, width) < MIN_IMAGE_SIDE:
            skipped_small += 1
            continue
        records.append(
            {
                "id": int(image["id"]),
                "path": layout.image_file(folder, image["file_name"]),
                "height": height,
                "width": width,
                "boxes": np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
                "labels": np.asarray(labels, dtype=np.int64),
            }
        )
    if limit and limit > 0:
        records = records[: int(limit)]
    stats.update(
        images=len(records),
        listed_images=len(data["images"]),
        skipped_without_boxes=skipped_empty,
        skipped_small=skipped_small,
        split=split,
    )
    if not records:
        raise UserError("%s lists no image with a usable box: nothing to train on" % path)
    absent = [r["path"] for r in records[:50] if not os.path.isfile(r["path"])]
    if absent:
        raise _missing(root, split, "image %s (and maybe more)" % os.path.basename(absent[0]))
    return records, stats


def rescaled_hw(height, width, min_size=MIN_SIZE, max_size=MAX_SIZE):
    """(new_h, new_w) of mmcv.imrescale(img, (max_size, min_size)) (keep_ratio)."""
    scale = min(float(max_size) / max(height, width), float(min_size) / min(height, width))
    return int(height * scale + 0.5), int(width * scale + 0.5)


def resize_boxes(boxes, orig_hw, new_hw):
    """Boxes scaled by (new_w / w, new_h / h) and clipped to the new image."""
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4).copy()
    w_scale = np.float32(float(new_hw[1]) / orig_hw[1])
    h_scale = np.float32(float(new_hw[0]) / orig_hw[0])
    boxes[:, 0::2] *= w_scale
    boxes[:, 1::2] *= h_scale
    np.clip(boxes[:, 0::2], 0, new_hw[1], out=boxes[:, 0::2])
    np.clip(boxes[:, 1::2], 0, new_hw[0], out=boxes[:, 1::2])
    return boxes


def flip_boxes(boxes, width):
    """Horizontal flip of xyxy boxes in an image `width` wide."""
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    flipped = boxes.copy()
    flipped[:, 0] = width - boxes[:, 2]
    flipped[:, 2] = width - boxes[:, 0]
    return flipped


def first_boxes(boxes, labels, max_boxes):
    """An image's first `max_boxes` boxes and their labels, together (0: all of them).

    The seed's Pad._pad_bboxes / _pad_labels cut both arrays at 40 rows, in annotation
    order after the crowd and invalid-box filter (what load_split keeps, in file order).
    """
    if max_boxes and len(labels) > max_boxes:
        return boxes[:max_boxes], labels[:max_boxes]
    return boxes, labels


class TrainDataset(object):
    """Map-style dataset; an item is (record index, flip) as the batch plan hands it out.

    `max_boxes` > 0 keeps each image's first `max_boxes` boxes (the seed profile: 40).
    """

    def __init__(self, records, min_size=MIN_SIZE, max_size=MAX_SIZE, max_boxes=0):
        self.records = records
        self.min_size = int(min_size)
        self.max_size = int(max_size)
        self.max_boxes = int(max_boxes or 0)

    def __len__(self):
        return len(self.records)

    def __getitem__(self, item):
        import cv2

        from zoostage.store import read_image

        index, flip = item
        record = self.records[index]
        image = read_image(record["path"], reference="pil")  # detectron2 reads with PIL
        height, width = image.shape[:2]
        if (height, width) != (record["height"], record["width"]):
            raise UserError(
                "image %s is %dx%d (h x w) but its annotation file says %dx%d: a replaced or "
                "rotated file" % (record["path"], height, width, record["height"], record["width"])
            )
        new_h, new_w = rescaled_hw(height, width, self.min_size, self.max_size)
        pixels = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        boxes, labels = first_boxes(record["boxes"], record["labels"], self.max_boxes)
        boxes = resize_boxes(boxes, (height, width), (new_h, new_w))
        if flip:
            pixels = np.ascontiguousarray(pixels[:, ::-1])
            boxes = flip_boxes(boxes, new_w)
        return {
            "id": record["id"],
            "pixels": pixels,
            "boxes": boxes,
            "labels": labels,
            "flip": bool(flip),
        }

    def aspect_groups(self):
        """0 / 1 per image: mmdet's group flag, 1 when w / h > 1."""
        return np.asarray([1 if r["width"] > r["height"] else 0 for r in self.records], np.int64)


def batch_plan(groups, batch_size, world_size, seed, epoch, shuffle=True):
    """One epoch's steps: a list of `world_size` batches of (index, flip) per step.

    Every step takes batch_size * world_size images of one orientation group; a group is
    padded to whole steps with its own (shuffled) images, as mmdet's DistributedGroupSampler
    does. Same seed and epoch, same plan, on every rank.
    """
    rng = np.random.RandomState((int(seed) * 1000003 + int(epoch)) % (2**32))
    groups = np.asarray(groups)
    per_step = int(batch_size) * int(world_size)
    steps = []
    for group in np.unique(groups):
        members = np.flatnonzero(groups == group)
        if shuffle:
            members = members[rng.permutation(members.size)]
        need = -(-members.size // per_step) * per_step
        reps = -(-need // members.size)
        members = np.tile(members, reps)[:need]
        steps.extend(members.reshape(-1, per_step))
    order = rng.permutation(len(steps)) if shuffle else np.arange(len(steps))
    flips = rng.rand(len(steps), per_step) < FLIP_RATIO
    plan = []
    for step in order:
        images = steps[step]
        pairs = [(int(i), bool(f)) for i, f in zip(images, flips[step])]
        plan.append([pairs[r * batch_size : (r + 1) * batch_size] for r in range(world_size)])
    return plan


class RunBatches(object):
    """One rank's batches from iteration `start` to `stop`, across epochs (a batch sampler).

    One DataLoader then serves the whole run: its workers are not restarted every epoch,
    and they prefetch across epoch boundaries. Each epoch's plan is made when reached.
    """

    def __init__(self, groups, batch_size, world_size, rank, seed, start, stop):
        self.groups = np.asarray(groups)
        self.batch_size = int(batch_size)
        self.world_size = int(world_size)
        self.rank = int(rank)
        self.seed = int(seed)
        self.start = int(start)
        self.stop = int(stop)
        self.per_epoch = steps_per_epoch(self.groups, self.batch_size, self.world_size)

    def __len__(self):
        return max(0, self.stop - self.start)

    def __iter__(self):
        iteration = self.start
        while iteration < self.stop:
            epoch = iteration // self.per_epoch
            plan = batch_plan(self.groups, self.batch_size, self.world_size, self.seed, epoch)
            first = iteration - epoch * self.per_epoch
            for step in plan[first : first + (self.stop - iteration)]:
                yield step[self.rank]
                iteration += 1


def steps_per_epoch(groups, batch_size, world_size):
    per_step = int(batch_size) * int(world_size)
    groups = np.asarray(groups)
    return int(sum(-(-int((groups == g).sum()) // per_step) for g in np.unique(groups)))


def padded_size(sizes, divisor=SIZE_DIVISOR, pad_size=0):
    """(H, W) of a batch of images of `sizes` [(h, w)]: the largest, rounded up to `divisor`,
    or (pad_size, pad_size) when pad_size > 0."""
    if pad_size:
        return int(pad_size), int(pad_size)
    height = max(h for h, _ in sizes)
    width = max(w for _, w in sizes)
    return -(-height // divisor) * divisor, -(-width // divisor) * divisor


def seed_frame(height, width, min_size=MIN_SIZE, max_size=MAX_SIZE, divisor=SIZE_DIVISOR):
    """(H, W) the seed's Pad._pad_img pads a resized `height` x `width` image to.

    The seed: [1344, 800] when height >= width, else [800, 1344], i.e. the config's
    img_scale (1333, 800) rounded up to 32 in the image's orientation; here derived from
    `max_size` / `min_size` the same way, which every resized image fits (its long side
    is at most max_size, its short side at most min_size).
    """
    long_side = -(-int(max_size) // divisor) * divisor
    short_side = -(-int(min_size) // divisor) * divisor
    return (long_side, short_side) if height >= width else (short_side, long_side)


class Collate(object):
    """Pads a list of items into one uint8 batch and computes its anchor targets.

    `frames` = (min_size, max_size) pads as the seed profile does: each image to its
    `seed_frame`, the batch to the largest frame (mmcv's collate; the orientation groups
    give one frame per batch), every anchor of an image's frame valid. Else (upstream)
    the batch is the largest image rounded up to `divisor`, or `pad_size` square, and an
    image's valid anchors are those of its own size rounded up to `divisor`.
    """

    def __init__(self, num_classes=NUM_CLASSES, divisor=SIZE_DIVISOR, pad_size=0, frames=None):
        self.num_classes = int(num_classes)
        self.divisor = int(divisor)
        self.pad_size = int(pad_size)
        self.frames = tuple(int(v) for v in frames) if frames else None

    def own_padding(self, h, w):
        """An image's padded extent: its valid anchors are those inside it."""
        if self.frames:
            return seed_frame(h, w, self.frames[0], self.frames[1], self.divisor)
        return -(-h // self.divisor) * self.divisor, -(-w // self.divisor) * self.divisor

    def __call__(self, items):
        import torch

        sizes = [item["pixels"].shape[:2] for item in items]
        if self.frames:
            pads = [self.own_padding(h, w) for h, w in sizes]
            height, width = max(h for h, _ in pads), max(w for _, w in pads)
        else:
            height, width = padded_size(sizes, self.divisor, self.pad_size)
        if any(h > height or w > width for h, w in sizes):
            raise UserError(
                "an image resized to %s does not fit --pad-size %d: use a pad size of at "
                "least the max size rounded up to 32" % (max(sizes), self.pad_size)
            )
        pixels = np.zeros((len(items), height, width, 3), dtype=np.uint8)
        anchors = target_lib.all_anchors((height, width))
        cls_targets = np.empty((len(items), anchors.shape[0]), dtype=np.int64)
        box_targets = np.empty((len(items), anchors.shape[0], 4), dtype=np.float32)
        num_pos = []
        for row, (item, (h, w)) in enumerate(zip(items, sizes)):
            pixels[row, :h, :w] = item["pixels"]
            valid = target_lib.valid_flags((height, width), self.own_padding(h, w))
            cls_targets[row], box_targets[row], count = target_lib.image_targets(
                anchors, item["boxes"], item["labels"], valid, self.num_classes
            )
            num_pos.append(count)
        return {
            "pixels": torch.from_numpy(pixels),
            "valid_hw": torch.as_tensor(np.asarray(sizes, dtype=np.int64).reshape(-1, 2)),
            "cls_targets": torch.from_numpy(cls_targets),
            "box_targets": torch.from_numpy(box_targets),
            "num_pos": num_pos,
            "ids": [item["id"] for item in items],
        }


def to_input(pixels, valid_hw, device, mean_bgr=PIXEL_MEAN_BGR, non_blocking=False):
    """uint8 (B, H, W, 3) BGR -> the network's float32 (B, 3, H, W) on `device`.

    Mean subtracted, std 1, and every pixel outside an image's own extent 0 (detectron2
    pads after normalization, as the inference data stage does).
    """
    import torch

    batch = pixels.to(device, non_blocking=non_blocking).permute(0, 3, 1, 2).float()
    mean = torch.tensor(mean_bgr, dtype=torch.float32, device=batch.device).view(1, 3, 1, 1)
    batch = batch - mean
    height, width = batch.shape[2], batch.shape[3]
    for row, (h, w) in enumerate(valid_hw.tolist()):
        if h < height:
            batch[row, :, h:, :] = 0.0
        if w < width:
            batch[row, :, :, w:] = 0.0
    return batch.contiguous()


def worker_init(worker_id):
    """Loader workers: one OpenCV thread each (the workers are the parallelism)."""
    try:
        import cv2

        cv2.setNumThreads(1)
    except ImportError:  # pragma: no cover - the training env has OpenCV
        pass
