"""The infer stage skeleton: store -> backend -> postprocess -> writer, for every recipe.

    python -m models.<recipe>.infer --out OUT --model COMPILE_DIR --data DATA_DIR \\
        --backend NAME --batch-size B --device D [--shard I/N] [--warmup K] [--threads T]

A recipe's infer module fills in one `Task`: how many outputs its model returns, how one
image's outputs become detections (its postprocess), and how detections are written
(its writer: WIDER prediction files, COCO results, VOC per-class lists). Everything
else is here, once, with the same checks for every recipe:

- the batch size is positive; an NPU backend is not given a CPU device;
- a static-shape model (om, aie) was compiled for the batch size asked for;
- the data stage's input size is the one the model was compiled or exported for;
- the model returns the outputs the recipe's postprocess expects.

The harness (zoostage.backends.harness) times the backend's calls; postprocessing and
writing run outside the timed region and are timed on their own. Outputs:

    OUT/<the writer's files>
    OUT/timing.json   the harness's record (+ by_batch, postprocess time, model, shard)
    OUT/infer.json    what ran: model, backend, input size, images, detections, shard,
                      the postprocess settings
"""

import os
import time

from zoostage import cli
from zoostage.backends import NPU_BACKENDS, get_backend
from zoostage.backends.compile import compiled_model
from zoostage.backends.harness import infer_store
from zoostage.errors import UserError
from zoostage.shards import parse_shard, shard_indices

TIMING_FILE = "timing.json"
SUMMARY_FILE = "infer.json"


class Task(object):
    """What a recipe adds to the skeleton. Subclasses set the class attributes and fill in
    `detect` and the writer methods; `store` is the data stage's Store."""

    name = "model"
    # How many arrays the model returns: an int, or a tuple of the counts accepted.
    outputs = 1
    # The network input (H, W) the recipe's model always takes, or None when any size is
    # fine (the compiled model's recorded shape is checked either way).
    input_hw = None

    # The part of the reference's timed graph the recipe runs on the host instead (e.g.
    # "batch NMS"), or None: what `detect` times into `graph_tail_seconds` (see
    # `time_graph_tail`), so that the report can set forward + that part beside a
    # published throughput whose span is the whole graph (recipe `span: graph`).
    graph_tail = None

    def __init__(self, store, args):
        self.store = store
        self.args = args
        self.images = 0
        self.detections = 0
        self.graph_tail_seconds = 0.0

    def time_graph_tail(self, func, *args):
        """func(*args), its time added to graph_tail_seconds."""
        start = time.perf_counter()
        try:
            return func(*args)
        finally:
            self.graph_tail_seconds += time.perf_counter() - start

    # -- postprocess ------------------------------------------------------------------------
    def check_outputs(self, outputs, model_path):
        """A UserError when the outputs cannot be this recipe's (wrong model file)."""
        expected = self.outputs if isinstance(self.outputs, tuple) else (self.outputs,)
        if len(outputs) not in expected:
            raise UserError(
                "%s returns %d outputs, not %s's %s: wrong model file"
                % (model_path, len(outputs), self.name, " or ".join(str(n) for n in expected))
            )

    def detect(self, record, outputs):
        """Detections of one image from its outputs (one row of each array)."""
        raise NotImplementedError

    def count(self, detections):
        """How many detections `detect` returned, for infer.json."""
        return len(detections)

    def settings(self):
        """The postprocess settings recorded in infer.json."""
        return {}

    # -- writer -----------------------------------------------------------------------------
    def start(self, out):
        """Prepare OUT for the writer (called once, before the first image)."""

    def write(self, record, detections):
        raise NotImplementedError

    def finish(self, out):
        """Write what is left (a file of all images' detections); called once, at the end."""


def parser(description, params):
    """The infer stage's parser: `params` is its declaration, zoostage.params.infer() and
    the recipe's own (models/<recipe>/params.py: INFER)."""
    return cli.parser(description, params)


def _compiled_shape(manifest):
    """The (N, C, H, W) a model was compiled for, from compile.json, or None."""
    shape = manifest.get("input_shape")
    if isinstance(shape, str):
        shape = [v for v in shape.split(",") if v.strip()]
    try:
        return [int(v) for v in shape] if shape and len(shape) == 4 else None
    except (TypeError, ValueError):
        return None


def check_arguments(args):
    if args.batch_size < 1:
        raise UserError("--batch-size must be at least 1 (got %d)" % args.batch_size)
    if args.warmup < 0 or args.threads < 0:
        raise UserError("--warmup and --threads take 0 or a positive number")
    if args.backend in NPU_BACKENDS and str(args.device).lower() == "cpu":
        raise UserError(
            "backend %s runs on an NPU: pass --device npu:0 (or choose a CPU backend: "
            "torchscript, onnxruntime)" % args.backend
        )


def check_model(task, backend, path, manifest):
    """The compiled model fits the batch size and the store's input size."""
    shape = _compiled_shape(manifest)
    batch = task.args.batch_size
    if shape and not backend.dynamic_batch and shape[0] != batch:
        raise UserError(
            "%s was compiled for batch %d, not --batch-size %d: compile it for that batch "
            "(--batch-size on the compile stage too)" % (path, shape[0], batch)
        )
    stored = tuple(int(v) for v in task.store.input_hw)
    if task.input_hw is not None and stored != tuple(task.input_hw):
        wanted = tuple(task.input_hw)
        raise UserError(
            "the store in %s holds %dx%d inputs; %s takes %dx%d (rerun the data stage for "
            "this recipe)"
            % (task.store.root, stored[0], stored[1], task.name, wanted[0], wanted[1])
        )
    if shape and tuple(shape[2:]) != stored:
        raise UserError(
            "%s takes %dx%d inputs but the data stage prepared %dx%d: the export and data "
            "stages were run with different --input-size"
            % (path, shape[2], shape[3], stored[0], stored[1])
        )


class _Postprocess(object):
    """The harness's on_outputs: each image's detections to the writer, timed."""

    def __init__(self, task, model_path):
        self.task = task
        self.model_path = model_path
        self.seconds = 0.0
        self.checked = False

    def __call__(self, indices, outputs):
        start = time.perf_counter()
        if not self.checked:
            self.task.check_outputs(outputs, self.model_path)
            self.checked = True
        for row, index in enumerate(indices):
            record = self.task.store.records[index]
            detections = self.task.detect(record, tuple(o[row] for o in outputs))
            self.task.write(record, detections)
            self.task.images += 1
            self.task.detections += self.task.count(detections)
        self.seconds += time.perf_counter() - start


def graph_span(timing, task):
    """The reference graph's span: compute (the forward) plus, per call, the time the
    task spent on the graph's tail on the host; None when the task runs none.

    A call of B images takes mean_ms + B x tail_ms_per_image; its throughput is B images
    over that. The tail is measured on the host CPU, not where the reference ran it.
    """
    if not task.graph_tail or not task.images or not timing.get("mean_ms"):
        return None
    batch = int(timing["batch_size"])
    tail_ms = 1000.0 * task.graph_tail_seconds / task.images
    mean_ms = float(timing["mean_ms"]) + batch * tail_ms
    return {
        "span": "forward + %s on the host" % task.graph_tail,
        "tail": task.graph_tail,
        "tail_ms_per_image": tail_ms,
        "mean_ms": mean_ms,
        "throughput": batch * 1000.0 / mean_ms,
    }


def run(args, task_class):
    """The infer stage: returns the timing record it wrote."""
    from zoostage.store import Store

    check_arguments(args)
    shard = parse_shard(args.shard)
    store = Store(args.data)
    task = task_class(store, args)
    options = {"device": args.device}
    if args.threads:
        options["threads"] = args.threads
    backend = get_backend(args.backend, **options)
    path, manifest = compiled_model(args.model, backend.suffix)
    check_model(task, backend, path, manifest)
    backend.load(path)
    postprocess = _Postprocess(task, path)
    task.start(args.out)
    try:
        timing = infer_store(
            store,
            backend,
            args.batch_size,
            postprocess,
            indices=shard_indices(len(store), args.shard),
            warmup=args.warmup,
            label="%s %s" % (task.name, backend.name),
        )
    finally:
        backend.close()
    task.finish(args.out)
    model = os.path.abspath(path)
    timing.update(
        model=model,
        shard=list(shard),
        postprocess_mean_ms=1000.0 * postprocess.seconds / max(task.images, 1),
        input_hw=[int(v) for v in store.input_hw],
    )
    # Per batch size, as reports compare throughput_bs<B> with the recipe.
    if timing.get("calls"):
        timing["by_batch"] = {str(args.batch_size): {"throughput": timing["throughput"]}}
        graph = graph_span(timing, task)
        if graph:
            timing["graph"] = graph
    cli.write_json(os.path.join(args.out, TIMING_FILE), timing)
    cli.write_json(
        os.path.join(args.out, SUMMARY_FILE),
        {
            "model": model,
            "backend": backend.name,
            "input_hw": [int(v) for v in store.input_hw],
            "images": task.images,
            "detections": task.detections,
            "shard": list(shard),
            "postprocess": task.settings(),
            # where the compute time came from (the backend's own clock or the harness's),
            # and why not the backend's when it has one but gave nothing usable
            "compute_timing": {
                k: v for k, v in (timing.get("compute") or {}).items() if k in ("source", "note")
            },
        },
    )
    return timing


def main(task_class, build_parser, argv=None):
    """The whole command line of a recipe's infer module."""
    cli.run(lambda args: run(args, task_class), build_parser(), argv)
