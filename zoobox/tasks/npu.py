"""The NPU path on a new Ascend host: `invoke npu.smoke`."""

from __future__ import annotations

from invoke import task


@task(
    default=True,
    help={
        "artifacts": "where the report goes (default: <artifacts>/npu-smoke)",
        "runner": "auto (docker when an engine answers and the aie / atc images exist), "
        "docker or host",
        "devices": "NPU ids (default: the first two the host has, or 0); a second id adds "
        "the check that a compiled module runs on another device",
        "soc-version": "the chip ATC and torch_aie compile for (default: the one npu-smi "
        "info names, else the seeds' Ascend310P3)",
        "dry": "print the checks a run would do here (training's included) and run none",
    },
)
def smoke(c, artifacts=None, runner=None, devices=None, soc_version=None, dry=False):
    """Check what only a real Ascend host can answer; one report, ok / failed per check.

    Host: driver, devices, npu-smi (the chip, which the checks compile for), who can open
    the device nodes. In the aie and atc images (a 310P host): the container's uid and
    view of the devices, CANN and the AIE runtime's set_env.sh, torch_aie.Input's default
    dtype and compile's default precision, a 1-conv module compiled, saved, and run by
    another process on another device id, ATC with allow_fp32_to_fp16 and ais_bench on
    the .om. In the train image (a 910 host): torch_npu sees the devices, a 2-rank HCCL
    all-reduce sums right, the CANN kernels package is there. An env the chip does not
    serve says "not applicable". Names the versions found; ends with the checks that
    need a real host; fails (exit 2) only when a check failed. First time on a new Ascend
    host: run this, then `invoke retinaface.all` (docs/first-run.md).
    """
    from zoobox.core.errors import UserError, main_guard
    from zoobox.jobs.smoke import render, run_smoke
    from zoobox.pipeline.configure import settings_from

    def go():
        summary = run_smoke(
            settings_from(c.config),
            artifacts=artifacts,
            runner=runner,
            devices=devices,
            soc_version=soc_version,
            dry=dry,
        )
        if dry:
            print(summary["plan"])
            return
        print()
        print(render(summary))
        if summary["failed"]:
            names = ", ".join(f"{f['check']} ({f['where']})" for f in summary["failed"])
            raise UserError(f"{len(summary['failed'])} smoke check(s) failed: {names}")

    main_guard(go)
