"""The VOC2007 evaluate stage: detections.json -> VOC07 11-point mAP per class.

    python -m data_scripts.voc.evaluate --out OUT --detections DETS_JSON --root DATA

DETS_JSON is what the RefineDet infer stage writes:

    {"classes": ["aeroplane", ...],
     "images": {"000001": {"dog": [[x1, y1, x2, y2, score], ...], ...}, ...}}

with boxes in pixels of the original image, as the reference's `all_boxes` (the network's
normalized boxes times the image width / height; no +1). Only the images listed under
"images" are evaluated (a partial run evaluates its images; an image with no detections
should still be listed, {}: its objects count as missed).

The metric itself (and how it follows the reference): data_scripts.voc.voc07.
"""

import json
import os
import sys

import numpy as np

from data_scripts.voc import params
from data_scripts.voc.layout import VOC_CLASSES, VOCLayout, parse_annotation
from data_scripts.voc.voc07 import voc07_eval
from zoostage import cli
from zoostage.errors import UserError
from zoostage.progress import Progress


def summarize(per_class):
    """(mAP %, {class: AP % or None}, excluded classes) from voc07_eval's result.

    Classes without non-difficult objects are excluded; a class with objects and no
    detections counts 0 (see the module doc for how this differs from the reference).
    """
    percent, excluded, kept = {}, [], []
    for classname, entry in per_class.items():
        if entry["npos"] == 0:
            percent[classname] = None
            excluded.append(classname)
            continue
        ap = max(entry["ap"], 0.0)
        percent[classname] = ap * 100.0
        kept.append(ap)
    if not kept:
        raise UserError(
            "the evaluated images have no non-difficult objects of any class: nothing to "
            "measure (evaluate more images)"
        )
    # The mean of the fractions, then percent: the reference's np.mean(aps), scaled.
    return float(np.mean(kept)) * 100.0, percent, excluded


def read_detections(path, classes=VOC_CLASSES):
    """The detections file, checked: {image id: {class: rows}}, in file order."""
    try:
        with open(path) as handle:
            data = json.load(handle)
    except (IOError, OSError) as error:
        raise UserError(
            "cannot read detections %s: %s (run the infer stage first)" % (path, error)
        ) from None
    except ValueError as error:
        raise UserError(
            "detections %s is not JSON (%s); rerun the infer stage" % (path, error)
        ) from None
    images = data.get("images") if isinstance(data, dict) else None
    if not isinstance(images, dict):
        raise UserError('detections %s has no "images" object; rerun the infer stage' % path)
    if not images:
        raise UserError("detections %s holds no images: nothing to evaluate" % path)
    known = set(classes)
    for image_id, per_class in images.items():
        if not isinstance(per_class, dict):
            raise UserError(
                "detections %s: image %s is not a {class: boxes} object" % (path, image_id)
            )
        for classname in per_class:
            if classname not in known:
                raise UserError(
                    "detections %s: unknown class %r for image %s (VOC classes: %s)"
                    % (path, classname, image_id, ", ".join(classes))
                )
    listed = data.get("classes")
    if listed is not None and (
        not isinstance(listed, list) or sorted(str(c) for c in listed) != sorted(classes)
    ):
        raise UserError(
            "detections %s are for classes %r, not the 20 VOC classes; rerun the infer stage"
            % (path, listed)
        )
    return images


def _load_annotations(layout, image_ids):
    annotations = {}
    with Progress(len(image_ids), "annotations", unit="files") as progress:
        for image_id in image_ids:
            annotations[image_id] = parse_annotation(layout.annotation_path(image_id))
            progress.update()
    return annotations


def format_table(per_class, percent, mean):
    lines = ["%-12s %7s %6s %8s" % ("class", "AP %", "gt", "dets")]
    for classname, entry in per_class.items():
        ap = percent[classname]
        lines.append(
            "%-12s %7s %6d %8d"
            % (classname, "-" if ap is None else "%.2f" % ap, entry["npos"], entry["detections"])
        )
    lines.append("%-12s %7.2f" % ("mAP", mean))
    return "\n".join(lines)


def build_parser():
    return cli.parser(
        "VOC07 11-point mAP of RefineDet detections on VOC2007 test.", params.EVALUATE
    )


def main(args):
    images = read_detections(args.detections)
    layout = VOCLayout(args.root)
    in_set = set(layout.ids)
    stray = [image_id for image_id in images if image_id not in in_set]
    if stray:
        raise UserError(
            "detections for %d image(s) not in %s, e.g. %s: were they made on another "
            "dataset?" % (len(stray), layout.list_file, stray[0])
        )
    image_ids = [image_id for image_id in layout.ids if image_id in images]
    annotations = _load_annotations(layout, image_ids)
    per_class = voc07_eval(annotations, images, image_ids)
    mean, percent, excluded = summarize(per_class)
    out = sys.stdout
    out.write(
        "VOC07 11-point mAP over %d of %d VOC2007 %s images\n"
        % (len(image_ids), len(layout.ids), layout.image_set)
    )
    out.write(format_table(per_class, percent, mean) + "\n")
    if excluded:
        out.write("excluded (no non-difficult objects in these images): %s\n" % ", ".join(excluded))
    total = sum(entry["detections"] for entry in per_class.values())
    if total == 0:
        out.write("note: the detections file lists these images but no detection at all\n")
    cli.write_json(
        os.path.join(args.out, "metrics.json"),
        {
            "metrics": {"mAP": mean},
            "per_class": percent,
            "images": len(image_ids),
            "images_in_set": len(layout.ids),
            "detections": total,
            "excluded": excluded,
            "figures": [],
        },
    )


if __name__ == "__main__":
    cli.run(main, build_parser())
