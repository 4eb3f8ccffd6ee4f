"""What an NPU stage's container sees: device nodes, driver, identity, working folder.

    python -m tests.toy.npu_view --out FOLDER

Writes FOLDER/view.json. Run inside a container made from the docker runner's NPU argv
(tests/test_hostile_containers.py), with stand-in device nodes in place of a 310P's.
"""

import argparse
import json
import os
import stat


def node(path):
    try:
        info = os.stat(path)
    except OSError:
        return None
    try:
        with open(path, "wb"):
            writable = True
    except OSError:
        writable = False
    return {
        "char": stat.S_ISCHR(info.st_mode),
        "rdev": [os.major(info.st_rdev), os.minor(info.st_rdev)],
        "gid": info.st_gid,
        "writable": writable,
    }


def read_only(folder):
    try:
        with open(os.path.join(folder, ".probe"), "w"):
            return False
    except OSError:
        return True


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    devices = sorted(
        name for name in os.listdir("/dev") if name.startswith(("davinci", "devmm", "hisi"))
    )
    driver = "/usr/local/Ascend/driver"
    view = {
        "dev": {name: node(os.path.join("/dev", name)) for name in devices},
        "driver_files": sorted(os.listdir(driver)) if os.path.isdir(driver) else None,
        "driver_read_only": read_only(driver) if os.path.isdir(driver) else None,
        "uid": os.getuid(),
        "groups": sorted(os.getgroups()),
        "cwd": os.getcwd(),
        "log_path": os.environ.get("ASCEND_PROCESS_LOG_PATH"),
    }
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "view.json"), "w") as handle:
        json.dump(view, handle, indent=1)


if __name__ == "__main__":
    main()
