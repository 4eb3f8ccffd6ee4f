"""Downloads that are complete or absent, and the digests that keep cached files honest.

`download` writes to a temporary file beside its target, checks the byte count against
Content-Length and the sha256 against the expected one (when there is one), refuses a
web page, and only then renames the file into place; a stalled server fails after its
timeout. Any failure is one UserError. A cached file keeps the digest it was downloaded
with beside it (NAME.sha256), so later damage is noticed and the file to delete named.
"""

import hashlib
import json
import os
import re
import sys
import tempfile

from zoostage import cli
from zoostage.errors import UserError

CHUNK = 1 << 20
URL_SCHEMES = ("http://", "https://")


def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def is_url(text):
    """True for text that starts with a scheme ("https://...", "ftp://..."): not a path."""
    return re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", str(text or "")) is not None


def check_url(url):
    """UserError unless `url` is an http(s) URL this stage can download."""
    if not str(url).lower().startswith(URL_SCHEMES):
        raise UserError(
            "%s is not a file path or an http(s) URL: pass a local checkpoint file or an "
            "http:// or https:// address" % url
        )


def _read_into(response, out, digest, url, timeout):
    """Copy the response body to `out`; returns the byte count. UserError if it fails."""
    total = int(response.headers.get("Content-Length") or 0)
    done = 0
    # read1 returns what has arrived: a stall is reported with the bytes that came.
    read = getattr(response, "read1", response.read)
    try:
        for block in iter(lambda: read(CHUNK), b""):
            out.write(block)
            digest.update(block)
            done += len(block)
            if total:
                sys.stderr.write("\rdownload: %d/%d MB" % (done >> 20, total >> 20))
    except Exception as error:  # socket timeouts, resets, http.client errors
        stalled = "timed out" in str(error) or type(error).__name__ == "timeout"
        raise UserError(
            "download of %s %s after %d bytes (%s); nothing was kept: retry, or download it "
            "by hand and pass --weights PATH"
            % (url, "stalled for %d s" % timeout if stalled else "failed", done, error)
        ) from None
    finally:
        sys.stderr.write("\n")
    if total and done != total:
        raise UserError(
            "download of %s was cut short: %d of %d bytes; nothing was kept: retry, or "
            "download it by hand and pass --weights PATH" % (url, done, total)
        )
    return done


def download(url, target, expected_sha256=None, timeout=60):
    """Download `url` to `target`, complete or not at all; returns its sha256.

    The bytes go to a temporary file beside `target`, are checked (Content-Length, the
    expected sha256 when given, not a web page), and renamed into place. Any failure is
    one UserError; a stalled server fails after `timeout` seconds without data.
    """
    from urllib.request import urlopen

    check_url(url)
    directory = os.path.dirname(os.path.abspath(target))
    if not os.path.isdir(directory):
        os.makedirs(directory)
    handle, tmp = tempfile.mkstemp(prefix=".download-", dir=directory)
    digest = hashlib.sha256()
    try:
        with os.fdopen(handle, "wb") as out:
            try:
                response = urlopen(url, timeout=timeout)
            except Exception as error:  # URLError, HTTPError, timeouts, bad addresses
                raise UserError(
                    "cannot download %s (%s); download it by hand and pass "
                    "--weights PATH" % (url, error)
                ) from None
            with response:
                kind = response.headers.get("Content-Type") or ""
                if kind.startswith("text/html"):
                    raise UserError(
                        "%s answered with a web page, not a checkpoint; download it by hand "
                        "and pass --weights PATH" % url
                    )
                _read_into(response, out, digest, url, timeout)
        found = digest.hexdigest()
        if expected_sha256 and found != expected_sha256:
            raise UserError(
                "sha256 mismatch for %s: expected %s, found %s" % (url, expected_sha256, found)
            )
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return found


def record_digest(path, sha256, url):
    """PATH.sha256: the digest a downloaded file had, so later damage is noticed."""
    cli.write_json(path + ".sha256", {"sha256": sha256, "url": url})


def recorded_digest(path):
    try:
        with open(path + ".sha256") as handle:
            return json.load(handle).get("sha256")
    except (IOError, OSError, ValueError, AttributeError):
        return None


def check_cached(path, expected_sha256):
    """The sha256 of a cached file, which must match the recipe's and its download's."""
    found = sha256_of(path)
    for expected, what in ((expected_sha256, "the recipe's"), (recorded_digest(path), None)):
        if expected and found != expected:
            raise UserError(
                "cached weights %s are damaged or not the expected file: sha256 %s, %s %s; "
                "delete %s and rerun to download it again"
                % (path, found, what or "downloaded as", expected, path)
            )
    return found
