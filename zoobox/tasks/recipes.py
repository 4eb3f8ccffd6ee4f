"""One invoke namespace per recipe: `<recipe>.all` and one task per stage."""

from __future__ import annotations

from invoke import Collection, Task

from zoobox.core.errors import main_guard
from zoobox.core.recipe import load_recipe

HELP = {
    "data": "dataset root (default: zoobox.data.<dataset> in invoke.yaml)",
    "artifacts": "artifact folder, the shared volume (default: ./artifacts)",
    "runner": "auto | host | docker | venv",
    "backend": "auto | torchscript | onnxruntime | aie | om",
    "batch-size": "images per inference call",
    "devices": "NPU ids, e.g. 0 or 0,1,2,3",
    "weights": "checkpoint file to use instead of downloading the published one",
    "random-init": "with no checkpoint cached or given, start from a seeded random init",
    "limit": "only the first N images (0: all)",
    "skip-bad": "leave out (and count) images that cannot be read, instead of stopping",
    "param": "any recipe parameter, key=value (repeatable)",
    "force": "rerun this stage (with `all`: every stage) even if up to date",
    "dry": "print the plan and the exact commands; run nothing",
}
# The train task's flags for several hosts (the seed's train_performance_multinodes.sh);
# each is the recipe parameter of the same name (docs/multihost.md).
TRAIN_HELP = {
    "nnodes": "hosts taking part (else NNODES / WORLD_SIZE; default 1)",
    "node-rank": "this host's index, 0 on the master (else NODE_RANK / RANK)",
    "master-addr": "node 0's address (else MASTER_ADDR)",
    "master-port": "node 0's port (else MASTER_PORT; default 29500)",
    "local-addr": "this host's own address the nodes talk over (else LOCAL_ADDR)",
}


def _stage_task(recipe_name: str, target: str | None, doc: str) -> Task:
    def body(
        c,
        data=None,
        artifacts=None,
        runner=None,
        backend=None,
        batch_size=None,
        devices=None,
        weights=None,
        random_init=False,
        limit=None,
        skip_bad=False,
        param=None,
        force=False,
        dry=False,
        extra_params=None,
    ):
        from zoobox.tasks.recipe_task import run_recipe

        params = {
            "batch_size": batch_size,
            "weights": weights,
            "limit": limit,
            "allow_random": True if random_init else None,
            "skip_bad": True if skip_bad else None,
            **(extra_params or {}),
        }
        run_recipe(
            c,
            recipe_name,
            target,
            data=data,
            artifacts=artifacts,
            runner=runner,
            backend=backend,
            devices=devices,
            params=params,
            param_pairs=param,
            force=force,
            dry=dry,
        )

    body.__doc__ = doc
    body.__name__ = target or "all"
    _hide_last(body)  # extra_params: for the train task's own flags, not a flag itself
    return Task(body, name=target or "all", help=HELP, iterable=["param"], default=target is None)


def _hide_last(function) -> None:
    import inspect

    parameters = list(inspect.signature(function).parameters.values())
    function.__signature__ = inspect.Signature(parameters[:-1])


def _train_task(recipe_name: str, doc: str) -> Task:
    """The stage task plus the multi-host flags, which become recipe parameters."""
    stage = _stage_task(recipe_name, "train", doc).body

    def train(
        c,
        nnodes=None,
        node_rank=None,
        master_addr=None,
        master_port=None,
        local_addr=None,
        **flags,
    ):
        hosts = {
            "nnodes": nnodes,
            "node_rank": node_rank,
            "master_addr": master_addr,
            "master_port": master_port,
            "local_addr": local_addr,
        }
        return stage(c, extra_params=hosts, **flags)

    import inspect

    # invoke reads the flags from the signature: the stage task's, then the hosts' ones.
    base = list(inspect.signature(stage).parameters.values())
    extra = list(inspect.signature(train).parameters.values())[1:6]
    train.__signature__ = inspect.Signature(base + extra)
    train.__doc__ = doc
    return Task(
        train, name="train", help={**HELP, **TRAIN_HELP}, iterable=["param"], auto_shortflags=False
    )


_STAGE_DOCS = {
    "weights": "Fetch and verify the checkpoint (or use --weights PATH).",
    "data": "Preprocess the dataset into the model's fixed input (compact uint8 store).",
    "export": "Export the network (TorchScript / ONNX) in its export env.",
    "compile": "Compile the exported model for the backend (torch_aie, ATC, or check it).",
    "infer": "Run inference with the backend; time each call; write detections.",
    "evaluate": "Score the detections with the dataset's official metric.",
    "report": "Write the report: measured vs published numbers.",
    "ais_bench": "Pure-inference throughput per batch size with ais_bench (NPU).",
    "bench": "Throughput per batch size vs the published table, with a plot; not in all.",
    "train": "Train the network (torchrun, 1..N devices); not part of all.",
}


def recipe_collection(name: str) -> Collection:
    """The recipe's tasks (a RecipeError when its file is broken: see build_namespace)."""
    recipe = load_recipe(name)
    collection = Collection(name)
    collection.add_task(
        _stage_task(name, None, f"Run every stage of {recipe.title} (skips what is up to date).")
    )
    for stage in recipe.stages:
        doc = _STAGE_DOCS.get(stage.name, f"Run the {stage.name} stage.")
        if stage.name == "train" and "nnodes" in recipe.param_specs:
            collection.add_task(_train_task(name, doc + " Runs what it needs first."))
            continue
        collection.add_task(_stage_task(name, stage.name, doc + " Runs what it needs first."))
    return collection


def broken_recipe_collection(name: str, error: Exception) -> Collection:
    """`<recipe>.all` for a recipe whose file is broken: it says what is wrong, exit 2."""

    def body(c):

        def fail():
            raise error

        return main_guard(fail)

    body.__doc__ = f"BROKEN recipe file: {error}"
    body.__name__ = "all"
    collection = Collection(name)
    collection.add_task(Task(body, name="all", default=True))
    return collection
