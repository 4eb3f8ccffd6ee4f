"""Virtual environments, one per env spec, for the venv runner: list, build, prune."""

from __future__ import annotations

from invoke import task


def _cache(c):
    from zoobox.envs.venvs import cache_from_settings
    from zoobox.pipeline.configure import settings_from

    return cache_from_settings(settings_from(c.config))


@task(name="list", default=True)
def list_(c):
    """List the envs: Python wanted and found, venv built or not, its size, its lock (drift)."""
    from zoobox.core.envspec import load_envs
    from zoobox.core.errors import main_guard
    from zoobox.envs.venvtable import list_table

    main_guard(lambda: print(list_table(_cache(c), load_envs())))


@task(
    help={
        "env": "build only this env's venv (default: every env that names a Python version)",
        "force": "rebuild even when an up-to-date venv exists",
    }
)
def build(c, env=None, force=False):
    """Build the venvs the venv runner uses (CPython from pyenv / PATH / zoobox.venv.pythons).

    Each venv is made from its spec's Python version and its lock for this machine
    (docker/requirements/<env>.<arch>.lock, pip --require-hashes: the file the image
    installs) and cached under zoobox.venv.cache (default ~/.cache/zoobox/venvs) by their
    hash: an unchanged lock is not rebuilt, a changed one gets a new venv, a stale one
    (spec edited, not relocked) is refused.
    """
    from zoobox.core.envspec import load_envs
    from zoobox.core.errors import main_guard
    from zoobox.envs.venvtable import build_all

    main_guard(lambda: build_all(_cache(c), load_envs(), env=env, force=force))


@task(help={"dry": "only list what would be removed"})
def prune(c, dry=False):
    """Remove venvs whose spec changed or went away, and builds that died midway."""
    from zoobox.core.envspec import load_envs
    from zoobox.core.errors import main_guard
    from zoobox.envs.venvfs import dir_size, human_size

    def go():
        cache = _cache(c)
        sizes = {}
        if dry:
            sizes = {p: dir_size(p) for p in cache.root.iterdir()} if cache.root.is_dir() else {}
        removed = cache.prune(load_envs(), dry=dry)
        for path in removed:
            size = f" ({human_size(sizes[path])})" if path in sizes else ""
            print(f"{'would remove' if dry else 'removed'} {path}{size}")
        if not removed:
            print(f"nothing to prune in {cache.root}")

    main_guard(go)


@task(
    iterable=["upgrade"],
    help={
        "env": "lock only this env (default: every env with packages)",
        "arch": "lock only for this CPU architecture: x86_64 or aarch64 (default: both)",
        "upgrade": "move this package to its newest allowed version (repeatable); the others "
        "keep their locked versions",
        "find-links": "a folder of wheels the index lacks (e.g. a vendor's aarch64 torch); "
        "put them in docker/local/wheels/ so the image build finds them too",
        "extra-index-url": "another package index to resolve from (the build needs it too: "
        "`invoke images.build --arg EXTRA_INDEX_URL=...`)",
        "check": "resolve nothing: say whether every lock is current with its spec (exit 2 "
        "if not); offline",
    },
)
def lock(c, env=None, arch=None, upgrade=None, find_links=None, extra_index_url=None, check=False):
    """Regenerate docker/requirements/<env>[-npu].<arch>.lock from envs/ with uv.

    Every package pinned with its hashes, for the env's CPython and each architecture;
    where the index cannot satisfy a spec on an architecture, a .nolock says why. Images
    (`images.build`) and venvs (`envs.build`) install these files, hashes checked.
    """
    from zoobox.core.errors import main_guard
    from zoobox.envs.lockgen import check_or_lock

    main_guard(
        lambda: check_or_lock(
            env=env,
            arch=arch,
            upgrade=tuple(upgrade or ()),
            find_links=find_links,
            extra_index_url=extra_index_url,
            check=check,
        )
    )
