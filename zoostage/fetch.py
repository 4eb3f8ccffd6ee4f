"""The weights stage: a checkpoint from the user, the cache, or the recipe's URL.

Order of preference: `--source PATH` (the user's file) or `--source URL` (the user's
download: http or https, kept in CACHE/given/), then `CACHE/NAME` when it checks out,
then a download from `--url` into the cache (verified before it is kept). With
`--allow-random` and none of those available, the stage records that the network will
start from a seeded random initialisation instead, so pipelines run with no network;
reports then mark accuracy as not meaningful.

A download is complete or absent: it goes to a temporary file, its length is checked
against Content-Length and its sha256 against the recipe's (when it pins one), and only
then is it renamed into place, beside NAME.sha256 (the digest it had, and its URL). A
cached file that no longer matches that digest, or the recipe's, is an error naming
the file to delete.

The result is `OUT/weights.json` (+ the checkpoint, hard-linked or copied into OUT):
{"source": "given" | "cache" | "download" | "random", "file": NAME or null,
 "sha256": ..., "seed": ..., "cache_file": the cache path it came from, or null}.
"""

import hashlib
import json
import os
import re
import shutil
import sys
import tempfile

from zoostage import cli
from zoostage.errors import UserError
from zoostage.safepath import child_path

MANIFEST = "weights.json"
CHUNK = 1 << 20
URL_SCHEMES = ("http://", "https://")
GIVEN_DIR = "given"  # CACHE/given/<url digest>/<name>: checkpoints the user named by URL


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


def _record_digest(path, sha256, url):
    """PATH.sha256: the digest a downloaded file had, so later damage is noticed."""
    cli.write_json(path + ".sha256", {"sha256": sha256, "url": url})


def _recorded_digest(path):
    try:
        with open(path + ".sha256") as handle:
            return json.load(handle).get("sha256")
    except (IOError, OSError, ValueError, AttributeError):
        return None


def _check_cached(path, expected_sha256):
    """The sha256 of a cached file, which must match the recipe's and its download's."""
    found = sha256_of(path)
    for expected, what in ((expected_sha256, "the recipe's"), (_recorded_digest(path), None)):
        if expected and found != expected:
            raise UserError(
                "cached weights %s are damaged or not the expected file: sha256 %s, %s %s; "
                "delete %s and rerun to download it again"
                % (path, found, what or "downloaded as", expected, path)
            )
    return found


def _place(path, out, name):
    """Put the checkpoint into OUT without copying when the filesystem allows."""
    target = os.path.join(out, name)
    try:
        os.link(path, target)
    except OSError:
        shutil.copyfile(path, target)
    return target


def _given_url(source, cache, out):
    """A checkpoint the user named by URL: downloaded once into CACHE/given/, then kept."""
    check_url(source)
    name = os.path.basename(source.split("?", 1)[0].rstrip("/")) or "checkpoint.pth"
    folder = os.path.join(cache or out, GIVEN_DIR, hashlib.sha256(source.encode()).hexdigest()[:16])
    path = child_path(folder, name, "file name in --weights URL", single=True)
    if os.path.isfile(path) and _recorded_digest(path):
        return path, _check_cached(path, None)
    found = download(source, path)
    _record_digest(path, found, source)
    return path, found


def fetch(out, name, url=None, sha256=None, source=None, cache=None, allow_random=False, seed=0):
    manifest = {"file": name, "sha256": sha256, "seed": None, "url": url, "cache_file": None}
    if source and is_url(source):
        path, found = _given_url(source, cache, out)
        given = os.path.basename(path)
        manifest.update(source="given", sha256=found, url=source, file=given, cache_file=path)
        _place(path, out, given)
    elif source:
        if not os.path.isfile(source):
            raise UserError("weights file not found: %s" % source)
        # A given file may legitimately differ from the published one (own training):
        # its digest is recorded, the published one only warned about.
        found = sha256_of(source)
        if sha256 and found != sha256:
            sys.stderr.write(
                "note: %s is not the published checkpoint (sha256 %s)\n" % (source, found)
            )
        # Kept under the user's file name, so a later error about it names their file.
        given = os.path.basename(source)
        manifest.update(source="given", sha256=found, path=os.path.abspath(source), file=given)
        _place(source, out, given)
    else:
        cached = child_path(cache, name, "weights file name", single=True) if cache else None
        if cached and os.path.isfile(cached):
            manifest.update(source="cache", sha256=_check_cached(cached, sha256))
            manifest["cache_file"] = cached
            _place(cached, out, name)
        elif url and not allow_random:
            target = cached or child_path(out, name, "weights file name", single=True)
            found = download(url, target, sha256)
            if cached:
                _record_digest(cached, found, url)
            if not sha256:
                # The publisher gives no checksum: say what was fetched so it can be pinned.
                sys.stderr.write(
                    "note: the recipe pins no sha256 for %s; downloaded %s "
                    "(sha256 %s)\n" % (name, url, found)
                )
            manifest.update(source="download", sha256=found, cache_file=cached)
            if cached:
                _place(cached, out, name)
        elif allow_random:
            sys.stderr.write(
                "weights: %s not cached and not given: using a seeded random "
                "initialisation (seed %d); accuracy will not be meaningful\n" % (name, seed)
            )
            manifest.update(source="random", file=None, sha256=None, seed=int(seed))
        else:
            raise UserError("no weights: pass --weights PATH or put %s in %s" % (name, cache))
    cli.write_json(os.path.join(out, MANIFEST), manifest)
    return manifest


def weights_from(directory):
    """(checkpoint path or None, manifest) from a weights stage's output folder."""
    path = os.path.join(directory, MANIFEST)
    if not os.path.isfile(path):
        raise UserError("no %s in %s: run the weights stage first" % (MANIFEST, directory))
    with open(path) as handle:
        manifest = json.load(handle)
    if manifest.get("source") == "random":
        return None, manifest
    return child_path(directory, manifest.get("file"), "checkpoint name in " + path), manifest


def main(args):
    fetch(
        args.out,
        args.name,
        url=args.url,
        sha256=args.sha256,
        source=args.source,
        cache=args.cache,
        allow_random=args.allow_random,
        seed=args.seed,
    )


def build_parser():
    parser = cli.parser(__doc__.splitlines()[0])
    parser.add_argument("--name", required=True, help="checkpoint file name")
    parser.add_argument("--url", help="where the published checkpoint is downloaded from")
    parser.add_argument("--sha256", help="the published checkpoint's sha256")
    parser.add_argument("--source", help="a checkpoint file (or http(s) URL) to use instead")
    parser.add_argument("--cache", help="weights cache folder")
    parser.add_argument(
        "--allow-random", action="store_true", help="fall back to a seeded random initialisation"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the random initialisation")
    return parser


if __name__ == "__main__":
    cli.run(main, build_parser())
