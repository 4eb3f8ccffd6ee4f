"""What a stage's environment holds: interpreter and library versions, NPU stack.

Recorded into each stage's stage.json so a result says where it was measured.
"""

import glob
import hashlib
import os
import platform
import sys

ASCEND_ROOT = "/usr/local/Ascend"


# module name -> distribution names that provide it
_DISTRIBUTIONS = {
    "numpy": ("numpy",),
    "torch": ("torch",),
    "onnx": ("onnx",),
    "onnxruntime": ("onnxruntime",),
    "torch_aie": ("torch_aie", "torch-aie"),
    "cv2": ("opencv-python-headless", "opencv-python"),
}


def distribution_version(name):
    """An installed distribution's version from its metadata (no import), or None."""
    try:
        from importlib import metadata  # novermin (Python 3.8+; 3.7 falls back below)
    except ImportError:  # Python 3.7 (the atc env)
        try:
            import pkg_resources
        except ImportError:
            return None
        try:
            return pkg_resources.get_distribution(name).version
        except Exception:
            return None
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _module_version(name):
    """A library's version without importing it (torch takes a second to import)."""
    module = sys.modules.get(name)
    if module is not None and getattr(module, "__version__", None):
        return str(module.__version__)
    for distribution in _DISTRIBUTIONS.get(name, (name,)):
        version = distribution_version(distribution)
        if version:
            return version
    return None


def cann_version(root=ASCEND_ROOT):
    """The CANN toolkit version from its install info, or None when absent."""
    patterns = [
        os.path.join(root, "ascend-toolkit", "latest", "*", "ascend_toolkit_install.info"),
        os.path.join(root, "ascend-toolkit", "latest", "version.cfg"),
    ]
    for pattern in patterns:
        for path in sorted(glob.glob(pattern)):
            with open(path) as handle:
                for line in handle:
                    key, _, value = line.strip().partition("=")
                    if key.strip() in ("version", "runtime_running_version", "Version"):
                        return value.strip().strip("[]").split(":")[0]
    return None


def lock_id(name, sha256):
    """A lock as env.json, labels and reports name it: `export.x86_64.lock@3f2a9c0d1e2b`."""
    return "%s@%s" % (name, sha256[:12])


def installed_lock(path=None):
    """The lock this environment was installed from, or None (the host env has none).

    The image (ENV) or the venv runner sets ZOOBOX_LOCK_FILE to the very file pip installed
    from; its own bytes are hashed here, so the record cannot disagree with the file.
    """
    path = path or os.environ.get("ZOOBOX_LOCK_FILE")
    if not path or not os.path.isfile(path):
        return None
    with open(path, "rb") as handle:
        digest = hashlib.sha256(handle.read()).hexdigest()
    return lock_id(os.path.basename(os.path.realpath(path)), digest)


def environment():
    """A JSON-ready dict of the versions this process can see."""
    info = {
        "python": platform.python_version(),
        "executable": sys.executable,
        "platform": platform.platform(),
        "hostname": platform.node(),
        "zoobox_env": os.environ.get("ZOOBOX_ENV"),
        "image": os.environ.get("ZOOBOX_IMAGE"),
    }
    for name in ("numpy", "torch", "onnx", "onnxruntime", "torch_aie", "cv2"):
        info[name] = _module_version(name)
    info["cann"] = cann_version()
    info["lock"] = installed_lock()
    return info
