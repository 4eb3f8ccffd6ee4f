"""Development machines only: podman serving the Docker API where no Docker daemon runs.

Not part of the product's run path: the recipes never import it.
"""
