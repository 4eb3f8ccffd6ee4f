"""Reading dataset images: BGR uint8 pixels, or one UserError saying what is wrong.

Refused (a UserError, which `--skip-bad` counts instead of stopping on): a missing or
unreadable file, an empty one, a JPEG cut short (no end marker: OpenCV would decode it
silently with grey bottom rows), and data OpenCV cannot decode.

A JPEG with damaged data in mid-stream decodes anyway: libjpeg only warns ("Corrupt
JPEG data: 37 extraneous bytes before marker 0xd9") and fills in what it lost. Whether
such an image counts depends on the reference the recipe reproduces: `reference` names
the decoder the reference reads its images with.

- "cv2" (Pytorch_Retinaface, RefineDet.PyTorch: cv2.imread): the reference decodes it
  the same way, so it is kept, with a note naming the image and libjpeg's warning;
- "pil" (detectron2: PIL): kept, with the note, when PIL decodes it too; counted as bad
  when PIL refuses it or is not installed to ask;
- None: counted as bad.
"""

import contextlib
import io
import os
import sys
import tempfile

import numpy as np

from zoostage.errors import UserError

REFERENCES = ("cv2", "pil")
_NAMES = {"cv2": "cv2.imread", "pil": "PIL"}

# One capture file per process (workers are forked: a shared one would share its offset).
_CAPTURE = {}


@contextlib.contextmanager
def _stderr_captured():
    """Collect what C code writes to file descriptor 2 (libjpeg's warnings) meanwhile."""
    pid = os.getpid()
    if pid not in _CAPTURE:
        _CAPTURE.clear()
        _CAPTURE[pid] = tempfile.TemporaryFile()
    capture = _CAPTURE[pid]
    capture.seek(0)
    capture.truncate()
    sys.stderr.flush()
    saved = os.dup(2)
    os.dup2(capture.fileno(), 2)
    found = []
    try:
        yield found
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        capture.seek(0)
        found.append(capture.read().decode("utf-8", "replace").strip())


def decode(data, path):
    """(BGR uint8 image, libjpeg's warning or "") from encoded bytes; UserError if it cannot."""
    import cv2  # imported here: only the data stages need OpenCV

    with _stderr_captured() as warnings:
        try:
            image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        except cv2.error as error:
            image = None
            reason = str(error).strip().splitlines()[-1] if str(error).strip() else "cv2.error"
        else:
            reason = "cannot be decoded"
    if image is None:
        raise UserError("corrupt image %s: %s" % (path, reason))
    return image, " ".join(warnings[0].split()) if warnings else ""


def _pil_accepts(data):
    """(True, "") when PIL decodes the bytes, else (False, why)."""
    try:
        from PIL import Image
    except ImportError:
        return False, "PIL is not installed to ask"
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
    except Exception as error:  # PIL raises several types for damaged data
        return False, "PIL refuses it too (%s)" % (str(error) or type(error).__name__)
    return True, ""


def read_image(path, reference=None):
    """Read a BGR uint8 image; a missing, empty, truncated or corrupt file is a UserError.

    `reference` ("cv2", "pil" or None) decides whether a JPEG that decodes only with a
    libjpeg warning is kept (see the module doc); a kept one is noted on stderr.
    """
    if reference not in (*REFERENCES, None):
        raise ValueError("reference must be one of %s or None, not %r" % (REFERENCES, reference))
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except (IOError, OSError) as error:
        raise UserError("cannot read image %s: %s" % (path, error.strerror or error)) from None
    if not data:
        raise UserError("corrupt image %s: the file is empty (0 bytes)" % path)
    if data[:2] == b"\xff\xd8" and data.rstrip(b"\0")[-2:] != b"\xff\xd9":
        raise UserError("corrupt image %s: truncated JPEG (no end marker)" % path)
    image, warning = decode(data, path)
    if not warning:
        return image
    damaged = "corrupt image %s: damaged JPEG data (libjpeg: %s)" % (path, warning)
    if reference is None:
        raise UserError(damaged)
    if reference == "pil":
        accepted, why = _pil_accepts(data)
        if not accepted:
            raise UserError("%s; the reference decoder %s" % (damaged, why))
    sys.stderr.write(
        "note: image %s has damaged JPEG data (libjpeg: %s); kept, as the reference "
        "decoder (%s) decodes it too\n" % (path, warning, _NAMES[reference])
    )
    return image
