"""A compact store of preprocessed images, shared by every dataset.

Preprocessed inputs are kept as uint8 BGR pixels, already resized and padded to the
model's fixed input size, in one memory-mapped `images.npy` (N x H x W x 3), beside an
`index.json` with per-image metadata and the *feed* recipe that turns a batch into the
float32 NCHW tensor the network takes. This is 1/4 of the float32 .bin files the seeds
write, and exact: resizing produces uint8 pixels anyway, and normalization is a cheap
affine step done at feed time.

The feed recipe covers the three references:
- mean / std per BGR channel, subtracted / divided at feed time;
- `pad`: "before_norm" normalizes the padding too (RetinaFace pads zeros, then subtracts
  the mean, so its padding ends at minus the mean); "after_norm" leaves padding at zero
  after normalization (detectron2 pads the normalized image);
- `channels`: "bgr" or "rgb" order of the fed tensor (RefineDet feeds RGB).
"""

import json
import os

import numpy as np

from zoostage.errors import UserError
from zoostage.image_decode import read_image  # noqa: F401 - the data stages import it from here
from zoostage.pool import map_unordered
from zoostage.progress import Progress
from zoostage.space import allocate_npy

IMAGES_FILE = "images.npy"
INDEX_FILE = "index.json"


def feed_spec(mean_bgr, std_bgr=(1.0, 1.0, 1.0), pad="before_norm", channels="bgr"):
    """The recipe that turns stored uint8 pixels into the model's float32 input."""
    if pad not in ("before_norm", "after_norm"):
        raise ValueError("pad must be 'before_norm' or 'after_norm', not %r" % (pad,))
    if channels not in ("bgr", "rgb"):
        raise ValueError("channels must be 'bgr' or 'rgb', not %r" % (channels,))
    return {
        "mean_bgr": [float(v) for v in mean_bgr],
        "std_bgr": [float(v) for v in std_bgr],
        "pad": pad,
        "channels": channels,
    }


def to_input(pixels, valid_hw, feed):
    """Turn uint8 pixels (B, H, W, 3 BGR) into the float32 (B, 3, H, W) network input.

    `valid_hw` (B, 2) is the height and width of the real image inside the padding.
    """
    mean = np.asarray(feed["mean_bgr"], dtype=np.float32)
    std = np.asarray(feed["std_bgr"], dtype=np.float32)
    batch = (pixels.astype(np.float32) - mean) / std
    if feed["pad"] == "after_norm":
        for i, (h, w) in enumerate(np.asarray(valid_hw, dtype=np.int64)):
            batch[i, h:, :, :] = 0.0
            batch[i, :, w:, :] = 0.0
    if feed["channels"] == "rgb":
        batch = batch[..., ::-1]
    return np.ascontiguousarray(batch.transpose(0, 3, 1, 2))


def _numbers(text, flag):
    try:
        values = tuple(float(v) for v in str(text).split(","))
    except ValueError:
        values = ()
    if len(values) != 3:
        raise UserError("%s takes three numbers B,G,R like 104,117,123, not %r" % (flag, text))
    return values


def add_prepare_arguments(parser, root_help, input_size=None, limit_help=None):
    """The arguments every data stage takes: dataset root, size, subset, workers, feed.

    The feed (--mean-bgr, --std-bgr, --channels, --pad) is a fact of the model, not of
    the dataset: the recipe passes its `input` block (models/<recipe>/recipe.yaml).
    """
    parser.add_argument("--root", required=True, help=root_help)
    if input_size is not None:
        parser.add_argument(
            "--input-size",
            type=int,
            default=input_size,
            help="square network input side S (default %(default)s)",
        )
    parser.add_argument(
        "--limit", type=int, default=0, help=limit_help or "first N images only (0: all)"
    )
    parser.add_argument("--workers", type=int, default=0, help="processes (0: all cores)")
    parser.add_argument(
        "--skip-bad", action="store_true", help="leave unreadable images out and count them"
    )
    parser.add_argument(
        "--mean-bgr", required=True, help="B,G,R mean the model subtracts (the recipe's input)"
    )
    parser.add_argument("--std-bgr", default="1,1,1", help="B,G,R std the model divides by")
    parser.add_argument(
        "--channels", default="bgr", choices=("bgr", "rgb"), help="channel order fed"
    )
    parser.add_argument(
        "--pad",
        default="before_norm",
        choices=("before_norm", "after_norm"),
        help="padding normalized with the image (before_norm) or zero after it",
    )
    return parser


def check_prepare_arguments(args):
    """Ranges of the common arguments; the feed they describe."""
    if getattr(args, "input_size", 1) <= 0:
        raise UserError("--input-size must be positive, not %d" % args.input_size)
    if args.limit < 0 or args.workers < 0:
        raise UserError("--limit and --workers take 0 (all) or a positive number")
    std = _numbers(args.std_bgr, "--std-bgr")
    if min(std) <= 0:
        raise UserError("--std-bgr must be positive, not %s" % args.std_bgr)
    return feed_spec(
        mean_bgr=_numbers(args.mean_bgr, "--mean-bgr"),
        std_bgr=std,
        pad=args.pad,
        channels=args.channels,
    )


def write_store_for(args, items, prepare, feed, label, extra=None):
    """write_store with the common arguments of a data stage (add_prepare_arguments):
    its --out, square --input-size, --workers and --skip-bad."""
    size = int(args.input_size)
    return write_store(
        args.out,
        items,
        (size, size),
        prepare,
        feed,
        workers=args.workers or None,
        skip_bad=args.skip_bad,
        label=label,
        extra=extra,
    )


class Store(object):
    """Read side of a store: `len(store)`, `store.pixels[i]`, `store.batches(n)`."""

    def __init__(self, root):
        index_path = os.path.join(root, INDEX_FILE)
        if not os.path.isfile(index_path):
            raise UserError("no preprocessed data in %s (run the data stage first)" % root)
        with open(index_path) as handle:
            self.index = json.load(handle)
        self.root = root
        self.pixels = np.load(os.path.join(root, IMAGES_FILE), mmap_mode="r")
        self.records = self.index["records"]
        self.feed = self.index["feed"]

    def __len__(self):
        return len(self.records)

    @property
    def input_hw(self):
        return tuple(self.pixels.shape[1:3])

    def batch(self, indices):
        """The float32 network input for the records at `indices`."""
        indices = list(indices)
        valid = [self.records[i]["valid_hw"] for i in indices]
        return to_input(self.pixels[indices], valid, self.feed)

    def batches(self, batch_size, indices=None):
        """Yield (indices, input) over the store; the last batch may be short."""
        order = list(range(len(self))) if indices is None else list(indices)
        for start in range(0, len(order), batch_size):
            chosen = order[start : start + batch_size]
            yield chosen, self.batch(chosen)


# Worker state for the preprocessing processes: set once per process, not pickled per task.
_WORKER = {}


def _init_worker(images_path, prepare):
    _WORKER["pixels"] = np.load(images_path, mmap_mode="r+")
    _WORKER["prepare"] = prepare


def _work(task):
    slot, item = task
    try:
        pixels, meta = _WORKER["prepare"](item)
    except UserError as error:
        return slot, None, str(error)
    h, w = pixels.shape[:2]
    target = _WORKER["pixels"]
    target[slot, :h, :w] = pixels
    meta = dict(meta)
    meta["valid_hw"] = [int(h), int(w)]
    return slot, meta, None


def write_store(
    out,
    items,
    input_hw,
    prepare,
    feed,
    workers=None,
    skip_bad=False,
    label="preprocess",
    extra=None,
):
    """Preprocess `items` in parallel into a store at `out`.

    `prepare(item) -> (uint8 HxWx3 BGR pixels no larger than input_hw, meta dict)` must
    be a picklable top-level function; it raises UserError for an unreadable image. With
    `skip_bad`, such images are left out and counted instead of stopping the stage.
    Returns the number of images skipped.
    """
    items = list(items)
    if not items:
        raise UserError("no images to preprocess")
    height, width = input_hw
    images_path = os.path.join(out, IMAGES_FILE)
    # Every block of the store is reserved now: a full disk is one error before any
    # work, never a worker killed by SIGBUS halfway through its memory map.
    allocate_npy(images_path, np.uint8, (len(items), height, width, 3))
    workers = workers or os.cpu_count() or 1
    records = [None] * len(items)
    bad = []
    tasks = list(enumerate(items))
    with Progress(len(items), label) as progress:
        try:
            if workers == 1:
                _init_worker(images_path, prepare)
                results = map(_work, tasks)
            else:
                results = map_unordered(
                    _work, tasks, workers, _init_worker, (images_path, prepare), label
                )
            for slot, meta, error in results:
                if error is not None:
                    if not skip_bad:
                        raise UserError(error + " (pass --skip-bad to leave such images out)")
                    bad.append(error)
                else:
                    records[slot] = meta
                progress.update()
        finally:
            _WORKER.clear()
    keep = [i for i, record in enumerate(records) if record is not None]
    if bad:
        if not keep:
            raise UserError("every image failed to load; first: %s" % bad[0])
        _compact(images_path, keep)
    index = {
        "records": [records[i] for i in keep],
        "feed": feed,
        "input_hw": [int(height), int(width)],
        "skipped": bad,
    }
    if extra:
        index.update(extra)
    with open(os.path.join(out, INDEX_FILE), "w") as handle:
        json.dump(index, handle)
    return len(bad)


def _compact(images_path, keep):
    """Drop the slots of skipped images from the pixel file."""
    old = np.load(images_path, mmap_mode="r")
    tmp = images_path + ".tmp.npy"
    allocate_npy(tmp, old.dtype, (len(keep), *tuple(old.shape[1:])))
    new = np.load(tmp, mmap_mode="r+")
    for j, i in enumerate(keep):
        new[j] = old[i]
    new.flush()
    del new, old
    os.replace(tmp, images_path)
