"""Ascend host facts that decide whether a run can work: driver vs CANN, busy devices.

The mismatch users hit most is a host driver older than the CANN inside an image: the
container starts, then ACL fails with an opaque code. `invoke doctor` compares them up
front. A device already held by another container fails with dcmi's -8005; a failed
stage's output is scanned for it so the error names the device instead of a crash.
"""

from __future__ import annotations

import re

from zoobox.core.envspec import EnvSpec

_PART = re.compile(r"(\d+)|(rc|alpha|beta|t)(\d*)", re.IGNORECASE)


def version_key(text: str) -> tuple:
    """Order Ascend versions: 22.0.2 < 23.0.rc1 < 23.0.rc3 < 23.0.0 < 23.0.1.

    A release candidate comes before the release of the same major.minor.
    """
    parts = str(text).strip().lower().split(".")
    key: list = []
    for part in parts:
        match = _PART.fullmatch(part)
        if match is None:
            key.append((2, 0))
        elif match.group(1) is not None:
            key.append((1, int(match.group(1))))
        else:
            key.append((0, int(match.group(3) or 0)))
    return tuple(key)


def driver_supports(host_driver: str | None, required: str | None) -> bool | None:
    """True when the host driver is at least the one the image's CANN needs; None: unknown."""
    if not host_driver or not required:
        return None
    return version_key(host_driver) >= version_key(required)


def image_compatibility(host_driver: str | None, envs: list[EnvSpec]) -> list[list[str]]:
    """Rows for doctor: env, CANN, driver needed, host driver, verdict."""
    rows = []
    for env in envs:
        stack = env.npu_stack
        if not env.npu or not stack:
            continue
        ok = driver_supports(host_driver, stack.get("driver"))
        verdict = {True: "can run", False: "driver too old", None: "no driver found"}[ok]
        rows.append(
            [
                env.name,
                str(stack.get("cann", "-")),
                str(stack.get("driver", "-")),
                host_driver or "-",
                verdict,
            ]
        )
    return rows


# Output signatures of NPU failures a user can act on, with what to say.
_BUSY = re.compile(r"(ret is -8005|dcmi module initialize failed|error code -8005)", re.I)
_NO_DEVICE = re.compile(r"(rtGetDeviceCount execute failed|no valid device|207004)", re.I)


def diagnose(output: str, devices: list[int]) -> str | None:
    """A one-line explanation of a known NPU failure in a stage's output, or None."""
    names = ", ".join(f"davinci{d}" for d in devices) or "the NPU"
    if _BUSY.search(output):
        return (
            f"NPU {names} is held by another container or process (dcmi -8005); stop "
            "it (npu-smi info shows the holder) or pass --devices with a free id"
        )
    if _NO_DEVICE.search(output):
        return (
            f"the container could not open {names} (no valid device): check that the "
            "device exists and that the driver is mounted (invoke doctor)"
        )
    return None
