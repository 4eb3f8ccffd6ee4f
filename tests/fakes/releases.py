"""Release archives built like Ascend's, for the installer checks.

The Torch_AIE release is a tar.gz with a folder holding the torch_aie wheel; in some
releases that wheel's file name is not a valid wheel name (too few parts), so pip refuses
it by name although its dist-info (METADATA, WHEEL) is a proper wheel's.
"""

import io
import tarfile
import zipfile

VALID_MEMBER = "torch_aie-6.3.rc2-cp39-cp39-linux_{arch}.whl"
# The form pip refuses: no python and abi tags ("wrong number of parts").
INVALID_MEMBER = "torch_aie-6.3.rc2-linux_{arch}.whl"


def wheel_bytes(name="torch_aie", version="6.3.rc2", tag="cp39-cp39-linux_aarch64"):
    """A minimal wheel: one module and its dist-info."""
    dist_info = "%s-%s.dist-info" % (name, version)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("%s/__init__.py" % name, "__version__ = %r\n" % version)
        archive.writestr(
            dist_info + "/METADATA",
            "Metadata-Version: 2.1\nName: %s\nVersion: %s\n" % (name, version),
        )
        archive.writestr(
            dist_info + "/WHEEL",
            "Wheel-Version: 1.0\nGenerator: fake\nRoot-Is-Purelib: false\nTag: %s\n" % tag,
        )
        archive.writestr(dist_info + "/RECORD", "")
    return buffer.getvalue()


def torch_aie_release(path, member=VALID_MEMBER, arch="aarch64", extra=()):
    """Write a Torch_AIE release tar.gz at `path`: a folder with the wheel named `member`
    (and `extra` (member, bytes) pairs); returns the member's path inside the archive."""
    folder = "Ascend-cann-torch-aie-6.3.rc2-linux_%s" % arch
    inside = "%s/%s" % (folder, member.format(arch=arch))
    files = [(inside, wheel_bytes(tag="cp39-cp39-linux_%s" % arch)), *extra]
    files.append(("%s/README.txt" % folder, b"Torch_AIE\n"))
    with tarfile.open(str(path), "w:gz") as tar:
        for name, data in files:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return inside
