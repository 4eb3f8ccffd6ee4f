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
from zoostage.backends import NAMES, NPU_BACKENDS, get_backend
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

    def __init__(self, store, args):
        self.store = store
        self.args = args
        self.images = 0
        self.detections = 0

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


def add_arguments(parser, backend="torchscript"):
    """The infer stage's arguments, the same for every recipe."""
    parser.add_argument("--model", required=True, help="the compile stage's folder, or a file")
    parser.add_argument("--data", required=True, help="the data stage's folder (the store)")
    parser.add_argument(
        "--backend", default=backend, choices=NAMES, help="inference engine (%(default)s)"
    )
    parser.add_argument("--batch-size", type=int, default=1, help="images per call (1)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda:N, or the NPU id")
    parser.add_argument("--shard", help="I/N: run records I, I + N, ... only (0-based I)")
    parser.add_argument(
        "--warmup", type=int, default=5, help="untimed calls first (5, as the seeds)"
    )
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: default)")
    return parser


def parser(description, backend="torchscript"):
    return add_arguments(cli.parser(description), backend)


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
        },
    )
    return timing


def main(task_class, build_parser, argv=None):
    """The whole command line of a recipe's infer module."""
    cli.run(lambda args: run(args, task_class), build_parser(), argv)
