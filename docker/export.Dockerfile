# syntax=docker/dockerfile:1
# zoobox env `export`: dataset preparation and TorchScript export by tracing (RetinaNet,
# RetinaFace) on the torch the ModelZoo seeds export with. CPU only: no NPU layers.
#
#   Python 3.9, torch 1.10.1; pins in envs/export.yaml (the source of truth), locked with
#   every dependency and its hashes in requirements/export.<arch>.lock by `invoke envs.lock`
#   (tests check that the locks are current, and that the ARG defaults below match the spec).
#
# torchvision 0.11.2, which the seed lists beside torch 1.10.1, is left out on purpose: no
# stage imports it (NMS and box coding live in models/common/boxes.py), and its PyPI wheel
# would only add a second set of CUDA kernels.
#
# Build with `invoke images.build --env export` (tag zoobox/export:<spec hash>, labels), or
# by hand from the repository root; the build context is docker/:
#   docker build -f docker/export.Dockerfile -t zoobox/export:dev docker
# RUN --mount needs BuildKit (Docker 23+ by default) or podman/buildah.
#
# Build arguments:
#   BASE_IMAGE       any image with CPython 3.9 as `python` (glibc, bash): the registry's
#                    python:3.9-slim-bookworm by default; where no registry answers,
#                    localhost/zoobox/python:3.9-bookworm made by `invoke dev.engine` from
#                    the machine's own CPython build ("bring your own Python")
#   ZOOBOX_PYTHON    the CPython X.Y the env needs; the build stops early on another
#   PYPI_INDEX_URL   a PyPI mirror (empty: pip's default)
#   EXTRA_INDEX_URL  an extra index (empty: none); pip takes only files the lock hashes
#   PIP_DEFAULT_TIMEOUT, PIP_RETRIES  pip's patience with a slow index (120 s, 5)
#   ZOOBOX_*         label values set by `invoke images.build`
#
# The context's local/ folder may hold ca-certificates.crt (the CA bundle pip must trust
# behind a TLS-intercepting proxy; `invoke images.build` puts $PIP_CERT there) and wheels/
# (local wheels pip may use). It is bind-mounted into the pip steps only, never copied.

ARG BASE_IMAGE=python:3.9-slim-bookworm
FROM ${BASE_IMAGE}

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# The interpreter is the one the env names: a wrong BASE_IMAGE fails here, not in a stage.
ARG ZOOBOX_PYTHON=3.9
RUN python -c "import sys; v = '%d.%d' % sys.version_info[:2]; \
sys.exit(0 if v == '${ZOOBOX_PYTHON}' else 'BASE_IMAGE has Python ' + v + ', env export needs ${ZOOBOX_PYTHON}')"

# A non-root default user; the docker runner passes the caller's uid:gid with --user.
RUN groupadd --gid 1000 zoobox \
 && useradd --uid 1000 --gid zoobox --create-home --shell /bin/bash zoobox

# The containers run as the caller's uid:gid (docker run --user), which this image has no
# passwd entry for; getpwuid() fails for it, and HCCL's initialisation with it. The
# entrypoint gives that uid an entry through nss_wrapper (pinned for Debian bookworm;
# another base's own version with --build-arg NSS_WRAPPER_DEB=VERSION).
ARG NSS_WRAPPER_DEB=1.1.12-1
RUN if command -v apt-get >/dev/null; then \
        apt-get update \
     && apt-get install -y --no-install-recommends libnss-wrapper="${NSS_WRAPPER_DEB}" \
     && rm -rf /var/lib/apt/lists/*; \
    else \
        echo "no apt-get: the entrypoint adds the caller's uid to /etc/passwd only as root"; \
    fi

# Stage-side packages from the env's lock: every package pinned, files checked against
# their hashes (made by `invoke envs.lock` from envs/export.yaml, never by hand), for this
# machine's `uname -m`: requirements/export.<arch>.lock.
# An architecture the index cannot serve has a .nolock saying why instead: the build stops
# here and prints it. The chosen lock stays in the image (ZOOBOX_LOCK_FILE), so each stage
# records its hash in env.json.
COPY requirements/export.* /opt/zoobox/requirements/
ARG PYPI_INDEX_URL=
ARG EXTRA_INDEX_URL=
# pip's patience with a slow index (pip reads these as its settings); images.build passes
# the host's PIP_DEFAULT_TIMEOUT / PIP_RETRIES when set.
ARG PIP_DEFAULT_TIMEOUT=120
ARG PIP_RETRIES=5
RUN --mount=type=bind,source=local,target=/tmp/zoobox-local \
    if [ -s /tmp/zoobox-local/ca-certificates.crt ]; then export PIP_CERT=/tmp/zoobox-local/ca-certificates.crt; fi \
 && if [ -d /tmp/zoobox-local/wheels ]; then export PIP_FIND_LINKS=/tmp/zoobox-local/wheels; fi \
 && lock="/opt/zoobox/requirements/export.$(uname -m).lock" \
 && if [ ! -f "$lock" ]; then cat "${lock%.lock}.nolock" 2>/dev/null; echo "no $lock: run invoke envs.lock" >&2; exit 1; fi \
 && pip install --no-cache-dir --require-hashes \
        ${PYPI_INDEX_URL:+--index-url "$PYPI_INDEX_URL"} \
        ${EXTRA_INDEX_URL:+--extra-index-url "$EXTRA_INDEX_URL"} \
        -r "$lock" \
 && ln -s "$lock" /opt/zoobox/requirements.lock
ENV ZOOBOX_LOCK_FILE=/opt/zoobox/requirements.lock

COPY entrypoint.sh /usr/local/bin/zoobox-entrypoint
USER 1000:1000
WORKDIR /workspace
ENTRYPOINT ["/usr/local/bin/zoobox-entrypoint"]
CMD ["python"]

# Labels last: their values change without touching the layers above.
ARG BASE_IMAGE
ARG TORCH_VERSION=1.10.1
ARG ZOOBOX_SPEC_HASH=unknown
ARG ZOOBOX_LOCK=unknown
ARG ZOOBOX_REVISION=unknown
ARG ZOOBOX_CREATED=unknown
LABEL org.opencontainers.image.title="zoobox-export" \
      org.opencontainers.image.description="zoobox env export: data preparation and TorchScript export, Python 3.9 + torch 1.10.1, CPU" \
      org.opencontainers.image.vendor="zoobox" \
      org.opencontainers.image.version="${ZOOBOX_SPEC_HASH}" \
      org.opencontainers.image.revision="${ZOOBOX_REVISION}" \
      org.opencontainers.image.created="${ZOOBOX_CREATED}" \
      org.opencontainers.image.base.name="${BASE_IMAGE}" \
      org.zoobox.env="export" \
      org.zoobox.spec="${ZOOBOX_SPEC_HASH}" \
      org.zoobox.lock="${ZOOBOX_LOCK}" \
      org.zoobox.python="${ZOOBOX_PYTHON}" \
      org.zoobox.torch="${TORCH_VERSION}" \
      org.zoobox.npu="absent"
