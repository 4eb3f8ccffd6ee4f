"""zoobox, the host side: recipes -> stage graph, runners, environments, invoke tasks.

Layers, each a subpackage that imports only from the ones above it:

    core/      paths, errors, recipes, fingerprints, the artifact store and its lock
    hosts/     what this machine offers: a container engine (Docker, podman), NPUs, driver
    envs/      env specs and their materializations: images, virtual environments
    runners/   where a stage runs: host, docker, venv (and the factory picking one)
    pipeline/  a recipe's stages planned, skipped when up to date, run on a runner
    jobs/      what a task does: run a recipe and summarize, demo, ci
    tasks/     the invoke task tree (thin)
    dev/       development machines only: podman serving the Docker API

The stage side lives in `zoostage/` (and `models/`, `data_scripts/`); it never imports
this package, so it stays importable on Python 3.7 + torch 1.5.
"""

__version__ = "0.1.0"
