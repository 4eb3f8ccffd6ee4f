"""Developer machines: a Docker-compatible engine where no Docker daemon runs."""

from __future__ import annotations

from invoke import task


@task(
    default=True,
    iterable=["python"],
    help={
        "stop": "stop the podman service this task started (by its pid) and remove the socket",
        "status": "only say whether the engine runs and answers",
        "python": "make the local python base image for this version (repeatable; default: "
        "every version the env specs name that pyenv has)",
        "no-bases": "only start the service: no debootstrap base, no python bases",
    },
)
def engine(c, stop=False, status=False, python=None, no_bases=False):
    """Bring up podman serving the Docker API (apt-get podman, base images, service).

    On a Docker-less Linux machine: installs podman, runc and debootstrap when missing,
    writes a containers.conf that works here, makes the base images without a registry
    (debootstrap bookworm; python bases from pyenv's CPython builds), starts
    `podman system service` in the background and prints the DOCKER_HOST to export.
    Quick and harmless when it is already up. `--stop` stops it.
    """
    from zoobox.core.errors import main_guard
    from zoobox.dev import podman as devengine

    def go():
        if stop:
            print("stopped" if devengine.stop_service() else "no zoobox podman service ran")
            return
        if status:
            info = devengine.status()
            for key, value in info.items():
                print(f"{key}: {value}")
            if not info["answers"]:
                raise SystemExit(1)
            return
        host = devengine.up(pythons=python or None, bases=not no_bases)
        print(f"export DOCKER_HOST={host}")
        print(
            "# zoobox finds this engine without DOCKER_HOST; the plain `docker` CLI needs the "
            'line above: eval "$(invoke dev.engine)"',
        )
        print(
            "# then: invoke images.build  (FROM the local python bases while DOCKER_HOST is "
            "this engine's)",
        )

    main_guard(go)
