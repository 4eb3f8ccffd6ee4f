"""A sharded stage: one process (container) per device on a slice of the data, one merge.

The Pipeline runs a stage with `shard: true` this way when more than one device is asked
for; `zoostage.shards` merges the shards' outputs into the stage's output folder.
"""

from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from zoobox.core.envspec import get_env
from zoobox.runners.base import StageCall, signal_of, stop_all


def shard_calls(pipeline, call: StageCall, temp: Path) -> list[StageCall]:
    """One call per device, each with --shard I/N and its own folder inside `temp`."""
    devices = pipeline.choice.devices
    calls = []
    for index, device in enumerate(devices):
        shard = pipeline.call_for(call.stage, temp / f"shard-{index}", devices=[device])
        shard.args += ["--shard", f"{index}/{len(devices)}"]
        calls.append(shard)
    return calls


def run_shards(pipeline, call: StageCall, temp: Path) -> list[list[str]]:
    """Run the shards side by side, then the merge into `temp`; returns the argvs run."""
    from zoobox.runners.host import HostRunner

    calls = shard_calls(pipeline, call, temp)
    with ThreadPoolExecutor(len(calls)) as pool:
        try:
            argvs = list(pool.map(pipeline.run_checked, calls))
        except BaseException as error:
            # One shard failed, or an interrupt reached the main thread while the shards
            # run in worker threads: stop them all before leaving.
            stop_all(signal_of(error))
            raise
    # The merge is plain file work: the host interpreter does it.
    merge = StageCall(
        call.recipe,
        call.stage,
        "zoostage.shards",
        [str(c.out) for c in calls],
        temp,
        get_env("host"),
        keep_fds=call.keep_fds,
    )
    argvs.append(pipeline.run_with(HostRunner(), merge))
    for shard in calls:
        shutil.rmtree(shard.out, ignore_errors=True)
    return argvs
