"""The weights stage: a checkpoint from the user, the cache, or the recipe's URL.

Order of preference: `--source PATH` (the user's file), then `CACHE/NAME` when its
sha256 matches, then a download from `--url` into the cache (verified before it is
kept). With `--allow-random` and none of those available, the stage records that the
network will start from a seeded random initialisation instead, so pipelines run with
no network; reports then mark accuracy as not meaningful.

The result is `OUT/weights.json` (+ the checkpoint, hard-linked or copied into OUT):
{"source": "given" | "cache" | "download" | "random", "file": NAME or null,
 "sha256": ..., "seed": ...}.
"""

import hashlib
import json
import os
import shutil
import sys
import tempfile

from zoostage import cli
from zoostage.errors import UserError

MANIFEST = "weights.json"
CHUNK = 1 << 20


def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def download(url, target, expected_sha256=None, timeout=60):
    """Download `url` to `target` atomically, checking sha256 before the file appears."""
    try:
        from urllib.request import urlopen
    except ImportError:  # pragma: no cover - Python 2 is not supported
        raise
    directory = os.path.dirname(os.path.abspath(target))
    if not os.path.isdir(directory):
        os.makedirs(directory)
    handle, tmp = tempfile.mkstemp(prefix=".download-", dir=directory)
    digest = hashlib.sha256()
    try:
        with os.fdopen(handle, "wb") as out:
            try:
                response = urlopen(url, timeout=timeout)
            except Exception as error:
                raise UserError(
                    "cannot download %s (%s); download it by hand and pass "
                    "--weights PATH" % (url, error)
                ) from None
            total = int(response.headers.get("Content-Length") or 0)
            done = 0
            for block in iter(lambda: response.read(CHUNK), b""):
                out.write(block)
                digest.update(block)
                done += len(block)
                if total:
                    sys.stderr.write("\rdownload: %d/%d MB" % (done >> 20, total >> 20))
            sys.stderr.write("\n")
        found = digest.hexdigest()
        if expected_sha256 and found != expected_sha256:
            raise UserError(
                "sha256 mismatch for %s: expected %s, found %s" % (url, expected_sha256, found)
            )
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return target


def _check(path, expected_sha256, what):
    found = sha256_of(path)
    if expected_sha256 and found != expected_sha256:
        raise UserError(
            "sha256 mismatch for %s %s: expected %s, found %s (wrong or damaged "
            "file)" % (what, path, expected_sha256, found)
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


def fetch(out, name, url=None, sha256=None, source=None, cache=None, allow_random=False, seed=0):
    manifest = {"file": name, "sha256": sha256, "seed": None, "url": url}
    if source:
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
        cached = os.path.join(cache, name) if cache else None
        if cached and os.path.isfile(cached):
            manifest.update(source="cache", sha256=_check(cached, sha256, "cached weights"))
            _place(cached, out, name)
        elif url and not allow_random:
            download(url, cached or os.path.join(out, name), sha256)
            found = sha256_of(cached or os.path.join(out, name))
            if not sha256:
                # The publisher gives no checksum: say what was fetched so it can be pinned.
                sys.stderr.write(
                    "note: the recipe pins no sha256 for %s; downloaded %s "
                    "(sha256 %s)\n" % (name, url, found)
                )
            manifest.update(source="download", sha256=found)
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
    return os.path.join(directory, manifest["file"]), manifest


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
    parser.add_argument("--source", help="a checkpoint file to use instead")
    parser.add_argument("--cache", help="weights cache folder")
    parser.add_argument(
        "--allow-random", action="store_true", help="fall back to a seeded random initialisation"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the random initialisation")
    return parser


if __name__ == "__main__":
    cli.run(main, build_parser())
