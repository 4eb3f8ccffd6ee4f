"""Container images, one per env: build, list."""

from __future__ import annotations

from invoke import task


@task(
    default=True,
    help={
        "env": "build only this env's image (default: every env with a Dockerfile)",
        "no-cache": "build without the layer cache",
        "dry": "print the build commands only",
    },
)
def build(c, env=None, no_cache=False, dry=False):
    """Build the env images (docker build; the engine from DOCKER_HOST)."""
    from zoobox.engine import main_guard
    from zoobox.images import build_images

    main_guard(lambda: build_images(env=env, no_cache=no_cache, dry=dry))


@task(name="list")
def list_(c):
    """List the env images: name, whether built, id."""
    from zoobox.engine import main_guard
    from zoobox.images import list_images

    main_guard(lambda: print(list_images()))
