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
        "soc-version": "the chip ATC and torch_aie compile for (default Ascend310P3)",
    },
)
def smoke(c, artifacts=None, runner=None, devices=None, soc_version="Ascend310P3"):
    """Check what only a real Ascend host can answer; one report, ok / failed per check.

    Host: driver, devices, npu-smi, who can open the device nodes. In the aie and atc
    images: the container's uid and view of the devices, CANN and the AIE runtime's
    set_env.sh, torch_aie.Input's default dtype and compile's default precision, a 1-conv
    module compiled, saved, and run by another process on another device id, ATC with
    allow_fp32_to_fp16 and ais_bench on the .om. Ends with the checks that need a real
    host; fails (exit 2) only when a check failed. First time on a new Ascend host: run
    this, then `invoke retinaface.all`.
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
        )
        print()
        print(render(summary))
        if summary["failed"]:
            names = ", ".join(f"{f['check']} ({f['where']})" for f in summary["failed"])
            raise UserError(f"{len(summary['failed'])} smoke check(s) failed: {names}")

    main_guard(go)
