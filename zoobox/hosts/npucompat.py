"""Ascend host facts that decide whether a run can work: driver vs CANN, busy devices.

The mismatch users hit most is a host driver older than the CANN inside an image: the
container starts, then ACL fails with an opaque code. `invoke doctor` compares them up
front. dcmi's -8005 has two common causes (a device held by another container, or a
container without what dcmi needs: DCMI_NEEDS); a failed stage's output is scanned for
it and the known codes so the error names the device and each cause's check instead of
a crash, and `invoke doctor` checks what dcmi needs on the host (dcmi_prerequisites).
"""

from __future__ import annotations

import re
from pathlib import Path

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


# What dcmi (npu-smi, and CANN's device management) needs inside a container besides
# the davinci nodes: -8005 is also what it says when one of these is missing.
DCMI_DIR = Path("/usr/local/dcmi")
DRIVER_LIB = "lib64"  # under the driver folder: the driver's libraries dcmi loads
DEVICE_GROUP = "HwHiAiUser"  # the driver's user group, owning the device nodes
DCMI_NEEDS = (
    f"{DCMI_DIR} and /usr/local/Ascend/driver/{DRIVER_LIB} mounted, the {DEVICE_GROUP} "
    "group's gid added (--group-add), the davinci nodes readable and writable by the "
    "container's user"
)


def dcmi_prerequisites(
    npu, dcmi_dir: Path = DCMI_DIR, group: str = DEVICE_GROUP, group_gid=None
) -> list[list[str]]:
    """Rows for doctor: what a container's dcmi needs from this host, each with its
    answer ("ok" or what is wrong) and what was looked at. `group_gid(name)` returns the
    gid of a group name or None (default: the host's group database)."""
    import grp
    import stat as stat_

    def lookup(name):
        try:
            return grp.getgrnam(name).gr_gid
        except KeyError:
            return None

    group_gid = group_gid or lookup
    rows = []
    dcmi = Path(dcmi_dir)
    rows.append(
        [
            "dcmi folder (mounted into NPU containers)",
            "ok" if dcmi.is_dir() else "missing: install the driver's dcmi (npu-smi needs it)",
            str(dcmi),
        ]
    )
    lib = Path(npu.driver_dir) / DRIVER_LIB
    rows.append(
        [
            "driver libraries (mounted with the driver)",
            "ok" if lib.is_dir() else "missing: the driver folder has no lib64",
            str(lib),
        ]
    )
    gid = group_gid(group)
    rows.append(
        [
            f"{group} group",
            f"ok (gid {gid})" if gid is not None else "missing: the driver install creates it",
            "host group database",
        ]
    )
    for device in npu.devices:
        node = Path(npu.dev_root) / f"davinci{device}"
        try:
            info = node.stat()
        except OSError as error:
            rows.append([f"davinci{device} owner and mode", f"unreadable: {error}", str(node)])
            continue
        mode = stat_.S_IMODE(info.st_mode)
        problems = []
        if gid is not None and info.st_gid != gid:
            problems.append(f"group gid {info.st_gid}, not {group}'s {gid}")
        if mode & 0o060 != 0o060 and mode & 0o006 != 0o006:
            problems.append(f"mode {mode:o}: the group cannot read and write it")
        rows.append(
            [
                f"davinci{device} owner and mode",
                "; ".join(problems) or "ok",
                f"{node} gid {info.st_gid} mode {mode:o}",
            ]
        )
    return rows


# Output signatures of NPU failures a user can act on, each with what to say. Codes are
# matched as whole numbers (no digit either side), first match wins.
def _code(*codes: str) -> re.Pattern:
    return re.compile("|".join(rf"(?<![\d-]){re.escape(c)}(?!\d)" for c in codes))


_BUSY = re.compile(r"(ret is -8005|dcmi module initialize failed|error code -8005)", re.I)
_SIGNATURES = (
    (
        _code("-8020"),
        "NPU {names} is in use (dcmi -8020: the device is used by another process or "
        "container); stop it (npu-smi info shows the holder) or pass --devices with a free id",
    ),
    (
        _BUSY,
        "NPU {names}: dcmi could not initialize (-8005), for one of two common causes: "
        "(1) the device is held by another container or process: `npu-smi info` on the "
        "host shows the holder; stop it or pass --devices with a free id; (2) the "
        "container lacks what dcmi needs: " + DCMI_NEEDS + ": `invoke doctor` checks "
        "each on the host",
    ),
    (
        _code("107001"),
        "the runtime rejected the device id for {names} (107001, invalid device id): a "
        "container numbers its mounted devices from 0 and ASCEND_RT_VISIBLE_DEVICES "
        "must name visible ones; pass --devices with ids `npu-smi info` lists",
    ),
    (
        _code("207006"),
        "the process has no permission to use {names} (207006): the device nodes must be "
        "readable and writable by the stage's user (the driver's HwHiAiUser group); "
        "check `ls -l /dev/davinci*` and `invoke doctor`",
    ),
    (
        _code("507033"),
        "setting device {names} failed (507033, device retain error): the CANN in the "
        "image may be newer than the host driver (`invoke doctor` compares them), the "
        "device may be unhealthy (`npu-smi info`), or its memory taken; the plog files "
        "in the log folder say which",
    ),
    (
        re.compile(r"(rtGetDeviceCount execute failed|no valid device|207004)", re.I),
        "the container could not open {names} (no valid device): check that the device "
        "exists and that the driver is mounted (invoke doctor)",
    ),
)


def diagnose(output: str, devices: list[int]) -> str | None:
    """A one-line explanation of a known NPU failure in a stage's output, or None."""
    names = ", ".join(f"davinci{d}" for d in devices) or "the NPU"
    for pattern, message in _SIGNATURES:
        if pattern.search(output):
            return message.format(names=names)
    return None
