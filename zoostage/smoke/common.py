"""Checks every image answers: who the container runs as, what devices it sees, its CANN."""

import glob
import os
import re
import shutil
import stat
import subprocess
import tempfile

from zoostage.envinfo import cann_version
from zoostage.smoke.checks import NeedsHost

ASCEND_ROOT = "/usr/local/Ascend"
TOOLKIT_SET_ENV = os.path.join(ASCEND_ROOT, "ascend-toolkit", "set_env.sh")
AIE_SET_ENV = os.path.join(ASCEND_ROOT, "aie", "set_env.sh")


def device_nodes(dev_root):
    """The davinciN nodes under dev_root, in device order."""
    found = [p for p in glob.glob(os.path.join(dev_root, "davinci*")) if re.search(r"\d+$", p)]
    return sorted(found, key=lambda p: int(re.search(r"(\d+)$", p).group(1)))


def require_devices(dev_root):
    """The davinciN device ids visible here, or NeedsHost."""
    nodes = device_nodes(dev_root)
    if not nodes:
        raise NeedsHost("not an Ascend host: no %s/davinci* visible here" % dev_root)
    return [int(re.search(r"(\d+)$", p).group(1)) for p in nodes]


def identity():
    """uid, its passwd entry (HCCL needs one), gid and groups."""
    import pwd

    uid, gid = os.getuid(), os.getgid()
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        raise RuntimeError(
            "uid %d has no passwd entry: HCCL's initialisation fails for it "
            "(HcclGetRootInfo, error code 19); rebuild the image (invoke images.build)" % uid
        ) from None
    return "uid %d (%s), gid %d, groups %s" % (uid, name, gid, sorted(set(os.getgroups())))


def device_view(dev_root):
    """Each visible davinci node's owner, mode, and whether this process can open it."""
    nodes = device_nodes(dev_root)
    if not nodes:
        raise NeedsHost("not an Ascend host: no %s/davinci* visible here" % dev_root)
    seen, refused = [], []
    for node in nodes:
        info = os.stat(node)
        try:
            os.close(os.open(node, os.O_RDWR))
            opened = "opens"
        except OSError as error:
            opened = "refused (%s)" % error.strerror
            refused.append(node)
        seen.append("%s %s gid %d %s" % (node, stat.filemode(info.st_mode), info.st_gid, opened))
    if refused:
        raise PermissionError("cannot open %s: %s" % (", ".join(refused), "; ".join(seen)))
    return "; ".join(seen)


def cann(versions=None):
    version = cann_version()
    if versions is not None:
        versions["CANN"] = version
    if not version:
        raise NeedsHost("no CANN in this image (a CPU image: build it with the NPU installers)")
    return "CANN %s" % version


def set_env(script):
    """Source `script` from its own folder in bash; say which variables it sets."""
    if not os.path.isfile(script):
        raise NeedsHost("no %s in this image (a CPU image)" % script)
    program = 'env -0 > "$1"; cd "$(dirname "$2")" && . "$2"; code=$?; env -0 > "$3"; exit $code'
    folder = tempfile.mkdtemp(prefix="zoobox-smoke-")
    before, after = os.path.join(folder, "before"), os.path.join(folder, "after")
    try:
        result = subprocess.run(
            ["bash", "-c", program, "smoke", before, script, after],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            universal_newlines=True,
            timeout=120,
        )
        if result.returncode != 0 or result.stderr.strip():
            raise RuntimeError(
                "sourcing %s exited %d: %s"
                % (script, result.returncode, result.stderr.strip()[-500:] or "no message")
            )
        old, new = _environ(before), _environ(after)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    names = sorted(
        name for name, value in new.items() if old.get(name) != value and name not in _SHELL
    )
    return "sets %s" % (", ".join(names) or "nothing")


_SHELL = ("PWD", "OLDPWD", "_", "SHLVL")  # what the shell itself changes on the way


def _environ(path):
    with open(path) as handle:
        entries = handle.read().split("\0")
    return dict(e.split("=", 1) for e in entries if "=" in e)


def parser(description):
    """The arguments of every smoke check module (the devices, their nodes, the chip)."""
    from zoostage import cli

    result = cli.parser(description)
    result.add_argument("--devices", default="0", help="device ids as this process sees them")
    result.add_argument("--dev-root", default="/dev", help="where the davinciN nodes are")
    result.add_argument("--soc-version", default="Ascend310P3")
    return result


# The checks `start` runs in every image, for `invoke npu.smoke --dry` and for the
# listing of an env that does not apply to the host's chip.
COMMON_CHECKS = (
    "uid, passwd entry, groups",
    "device nodes as the container sees them",
    "CANN version",
    "CANN toolkit set_env.sh",
)


def start(args, env):
    """(devices, Checks) with the checks every image shares already run: who the
    container runs as, the device nodes it sees, CANN and its set_env.sh."""
    from zoostage.smoke.checks import Checks

    devices = [int(d) for d in str(args.devices).split(",") if d.strip()] or [0]
    checks = Checks(os.environ.get("ZOOBOX_IMAGE") or env)
    checks.run("uid, passwd entry, groups", identity)
    checks.run("device nodes as the container sees them", device_view, args.dev_root)
    checks.run("CANN version", cann, checks.versions)
    checks.run("CANN toolkit set_env.sh", set_env, TOOLKIT_SET_ENV)
    return devices, checks
