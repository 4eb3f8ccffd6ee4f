"""Which WIDER FACE val images a run evaluates: all, the ones present, a list, N spread out.

The published numbers are over all 3226 val images; a run may evaluate part of them (a
download in progress, a sample, a quick check). The evaluation then counts only the
evaluated images (data_scripts.widerface.evaluate), and the report says it is not the
full-set number. Choices, applied in this order:

- `subset`: "all" (every ground-truth image must be in the image folder; a missing one
  is an error, as a full run needs them all) or "present" (the ground-truth images found
  in the folder; the others are counted and left out);
- `image_list`: a file naming the images to take, one "event/name" (".jpg" optional) per
  line, blank lines and "#" comments ignored -- e.g. ../shared/fixtures'
  widerface-val-sample/list.txt. A name the ground truth lacks is an error (names are
  looked up, never used as paths);
- `limit` N: N of the chosen images spread evenly over them in ground-truth order (so
  over the events, which that order groups), not the first N (a few events only).

The result keeps ground-truth order.
"""

import os

from zoostage.errors import UserError

SUBSETS = ("all", "present")


def read_image_list(path, dataset):
    """Ground-truth positions of the images a list file names, in ground-truth order."""
    try:
        with open(path) as handle:
            lines = handle.read().splitlines()
    except (IOError, OSError) as error:
        raise UserError(
            "cannot read the image list %s (%s)" % (path, error.strerror or error)
        ) from None
    positions = set()
    for number, line in enumerate(lines, 1):
        name = line.split("#", 1)[0].strip()
        if not name:
            continue
        image_id = name[:-4] if name.endswith(".jpg") else name
        position = dataset.index(image_id)
        if position is None:
            raise UserError(
                "%s line %d names %r, which is not a WIDER FACE val image (expected "
                "event/name as in the ground truth)" % (path, number, name)
            )
        positions.add(position)
    if not positions:
        raise UserError("the image list %s names no image" % path)
    return sorted(positions)


def spread(positions, limit):
    """`limit` of `positions` evenly spaced (first one included); all when limit is 0."""
    count = len(positions)
    if not limit or limit >= count:
        return list(positions)
    return [positions[(k * count) // limit] for k in range(limit)]


def select(dataset, subset="all", image_list=None, limit=0):
    """(ground-truth positions to prepare, facts about the choice for the store's index)."""
    if subset not in SUBSETS:
        raise UserError("--subset takes %s, not %r" % (" or ".join(SUBSETS), subset))
    positions = read_image_list(image_list, dataset) if image_list else list(range(len(dataset)))
    present = [i for i in positions if os.path.isfile(dataset.image_path(i))]
    missing = len(positions) - len(present)
    if missing and subset == "all":
        first = next(i for i in positions if not os.path.isfile(dataset.image_path(i)))
        more = " (and %d more)" % (missing - 1) if missing > 1 else ""
        raise UserError(
            "WIDER FACE image listed in the ground truth is missing: %s%s; get the images, "
            "or pass --subset present (--param subset=present) to evaluate the ones there"
            % (dataset.image_path(first), more)
        )
    if not present:
        raise UserError(
            "none of the %d chosen WIDER FACE images is in %s"
            % (len(positions), dataset.images_dir)
        )
    chosen = spread(present, limit)
    facts = {
        "subset": subset,
        "image_list": os.path.abspath(image_list) if image_list else None,
        "limit": int(limit or 0),
        "missing": missing,
        "chosen": len(chosen),
        "images_in_ground_truth": len(dataset),
    }
    return chosen, facts
