"""Container images, one per env: build, list, check, and the requirements they install.

Settings: `zoobox.images` in invoke.yaml (base, npu, docker), overridden by flags.
"""

from __future__ import annotations

from invoke import task

DEFAULTS = {"base": "auto", "npu": "auto", "docker": "docker"}


def _settings(c) -> dict:
    from zoobox.pipeline.configure import settings_from

    merged = dict(DEFAULTS)
    merged.update(settings_from(c.config).get("images") or {})
    return merged


def _pairs(values) -> dict:
    from zoobox.core.errors import UserError

    found = {}
    for pair in values or ():
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UserError(f"--arg takes KEY=VALUE, not {pair!r}")
        found[key] = value
    return found


@task(
    default=True,
    iterable=["arg"],
    help={
        "env": "build only this env's image (default: every env with a Dockerfile)",
        "no-cache": "build without the layer cache (implies --force)",
        "push": "then tag and push each image to this registry (e.g. registry.example:5000)",
        "dry": "print the installer check and the commands; build nothing",
        "npu": "auto (NPU layers when every installer is in docker/npu-installers/<env>/), "
        "yes (fail naming what is missing), no (a CPU image, label org.zoobox.npu=absent)",
        "base": "auto | spec (the spec's base_image, e.g. python:3.9-slim-bookworm) | local "
        "(localhost/zoobox/python:X.Y-bookworm from `invoke dev.engine`) | an image name; "
        "auto is local when DOCKER_HOST is the dev engine's",
        "force": "build even when an image of this spec (same hash, NPU mode, base) exists",
        "ca-bundle": "CA bundle pip trusts inside the build (default: $PIP_CERT, if set); "
        "bind-mounted into the pip steps, never copied into an image",
        "arg": "extra build argument KEY=VALUE (repeatable), e.g. "
        "EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu",
    },
)
def build(
    c,
    env=None,
    no_cache=False,
    push=None,
    dry=False,
    npu=None,
    base=None,
    force=False,
    ca_bundle=None,
    arg=None,
):
    """Build the env images (docker build, context docker/; the engine from DOCKER_HOST).

    Checks the NPU installers (and says exactly which files it expects where), picks the
    env's lock for the NPU mode and this architecture (a stale or missing one stops it:
    `invoke envs.lock`), skips an image already built from the same lock, passes pip's
    timeout and retries (PIP_DEFAULT_TIMEOUT / PIP_RETRIES from the host, else 120 s / 5),
    and echoes every command.
    """
    from zoobox.core.errors import main_guard
    from zoobox.envs.image_build import build_images

    settings = _settings(c)
    main_guard(
        lambda: build_images(
            env=env,
            no_cache=no_cache,
            dry=dry,
            npu=npu or settings["npu"],
            base=base or settings["base"],
            push=push,
            force=force,
            ca_bundle=ca_bundle,
            extra_args=_pairs(arg),
            docker=settings["docker"],
        )
    )


@task(name="list")
def list_(c):
    """List the env images: tag, built or not, id, digest, size, NPU stack, version labels."""
    from zoobox.core.errors import main_guard
    from zoobox.envs.image_check import list_images

    main_guard(lambda: print(list_images(docker=_settings(c)["docker"])))


@task(help={"env": "check only this env's image (default: every built one)"})
def check(c, env=None):
    """Run a probe in each built image; compare Python, pins, torch, CANN, torch_aie with envs/.

    Also every installed distribution with the image's lock (drift). A wrong version, a
    package missing or extra, or a missing torch_aie / CANN in an image labelled
    org.zoobox.npu=present is an error naming it (exit 2).
    """
    from zoobox.core.errors import main_guard
    from zoobox.envs.image_check import check_images

    main_guard(lambda: print(check_images(env=env, docker=_settings(c)["docker"])))


@task(help={"check": "only say whether docker/requirements/ agrees with envs/ (exit 2 if not)"})
def requirements(c, check=False):
    """Render docker/requirements/<env>[-npu].txt from the env specs (the source of truth)."""
    from zoobox.core.errors import UserError, main_guard
    from zoobox.core.paths import repo_relative
    from zoobox.envs.requirements import requirements_drift, write_requirements

    def go():
        if check:
            stale = requirements_drift()
            if stale:
                raise UserError(
                    f"{', '.join(repo_relative(p) for p in stale)} disagree(s) with envs/: "
                    "run `invoke images.requirements`"
                )
            print("docker/requirements/ agrees with envs/")
            return
        changed = write_requirements()
        for path in changed:
            print(f"wrote {repo_relative(path)}")
        if not changed:
            print("docker/requirements/ already agrees with envs/")

    main_guard(go)
