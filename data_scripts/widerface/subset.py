"""Make a small WIDER FACE val root: chosen images plus the ground truth of exactly those.

    python -m data_scripts.widerface.subset --root FULL_ROOT --image-list LIST --out DEST \
        [--limit N]

Copies the chosen images (data_scripts.widerface.select: a list, N spread over it) to
DEST/images/<event>/<name>.jpg and writes DEST's four ground-truth .mat files in the
official structure (`sample.write_ground_truth`) with those images' real boxes and
easy / medium / hard keep lists. The result is a root like any other: the data stage and
the evaluation read it unchanged. The demo's shipped sample (samples/widerface) was made
with it from ../shared/fixtures.
"""

import argparse
import os
import shutil

from data_scripts.widerface import layout
from data_scripts.widerface.sample import write_ground_truth
from data_scripts.widerface.select import select
from zoostage.errors import UserError


def _inside(root, relative):
    """root/relative, refused when the ground truth's name would leave `root`."""
    parts = relative.split("/")
    if os.path.isabs(relative) or ".." in parts or "" in parts or "\0" in relative:
        raise UserError("the ground truth names %r, which is not event/name.jpg" % relative)
    return os.path.join(root, *parts)


def make_subset(root, out, image_list=None, limit=0):
    """Write the subset root at `out`; returns the image ids it holds (ground-truth order)."""
    dataset = layout.load(root, images=True)
    positions, _ = select(dataset, "present", image_list, limit)
    if os.path.exists(out) and os.listdir(out):
        raise UserError("%s exists and is not empty: choose a new folder" % out)
    ids = [dataset.ids[i] for i in positions]
    for i in positions:
        target = _inside(os.path.join(out, "images"), dataset.relative_file(dataset.ids[i]))
        folder = os.path.dirname(target)
        if not os.path.isdir(folder):
            os.makedirs(folder)
        shutil.copyfile(dataset.image_path(i), target)
    write_ground_truth(
        out,
        ids,
        [dataset.boxes[i] for i in positions],
        dict((s, [dataset.keep[s][i] for i in positions]) for s in layout.SETTINGS),
    )
    return ids


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="a WIDER FACE val root (images + .mat)")
    parser.add_argument("--out", required=True, help="the new root (a new folder)")
    parser.add_argument("--image-list", help="images to take: event/name per line")
    parser.add_argument("--limit", type=int, default=0, help="N spread over them (0: all)")
    args = parser.parse_args(argv)
    try:
        ids = make_subset(args.root, args.out, args.image_list, args.limit)
    except UserError as error:
        raise SystemExit("error: %s" % error) from None
    print("%d images and their ground truth in %s" % (len(ids), args.out))


if __name__ == "__main__":
    main()
