# syntax=docker/dockerfile:1
# zoobox env `train`: RetinaNet training on the Ascend 910 with torch_npu (HCCL for several
# devices). The torch / torch_npu / CANN triple follows Ascend's compatibility table.
#
#   Python 3.9, torch 2.1.0, torch_npu 2.1.0.post3, CANN 8.0.RC1 (host driver 24.1.rc1).
#   Pins in envs/train.yaml (the source of truth), locked with every dependency and its
#   hashes in requirements/train[-npu].<arch>.lock by `invoke envs.lock`. torch_npu is on
#   PyPI but cannot be imported without CANN, so only the NPU lock has it.
#
# On aarch64 (most 910 hosts) PyPI's torch 2.1.0 is CPU-only; on x86_64 it pulls the CUDA
# nvidia-* wheels. torch_npu 2.1.0.post3's x86_64 wheel requires torch==2.1.0+cpu, which
# only download.pytorch.org/whl/cpu serves: train-npu.x86_64.nolock says so, and `invoke
# envs.lock --env train --arch x86_64 --extra-index-url https://download.pytorch.org/whl/cpu`
# (then --arg EXTRA_INDEX_URL=... at build time) locks it where that index answers.
#
# NPU layers. CANN is not on any registry: put the installers in
# docker/npu-installers/train/ (`invoke images.build --env train` checks them first,
# matching names ignoring case; files.yaml there names files that differ):
#   Ascend-cann-toolkit_${CANN_VERSION}_linux-<arch>.run        --install --quiet --install-for-all
#   Ascend-cann-kernels-910<soc>_${CANN_VERSION}_linux.run     the binary operator kernels:
#       required, the training worker sets jit_compile=False, which runs only them
# with <arch> = `uname -m`; images.build passes the chosen names as CANN_TOOLKIT_RUN and
# CANN_KERNELS_RUN. --build-arg NPU=absent skips these layers (label org.zoobox.npu=absent).
# The installers are bind-mounted, never copied into a layer; NPU_INSTALLERS (set by
# images.build) keys the layer cache. gcc / g++ / make for CANN's online compilation come
# with the NPU layer (pinned for bookworm: GCC_DEB, MAKE_DEB) unless the base has them.
#
# Build with `invoke images.build --env train`, or by hand from the repository root:
#   docker build -f docker/train.Dockerfile -t zoobox/train:dev docker
# RUN --mount needs BuildKit (Docker 23+ by default) or podman/buildah.
#
# Build arguments: BASE_IMAGE (CPython 3.9 as `python`), ZOOBOX_PYTHON, NPU (present |
# absent), CANN_VERSION, NPU_INSTALLERS, CANN_TOOLKIT_RUN, CANN_KERNELS_RUN, GCC_DEB,
# MAKE_DEB, NSS_WRAPPER_DEB, PYPI_INDEX_URL, EXTRA_INDEX_URL, ZOOBOX_* (labels).
# The context's local/ folder (CA bundle for pip, extra wheels) is bind-mounted into the pip
# steps only: see export.Dockerfile.

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
sys.exit(0 if v == '${ZOOBOX_PYTHON}' else 'BASE_IMAGE has Python ' + v + ', env train needs ${ZOOBOX_PYTHON}')"

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

# CANN toolkit (+ operator kernels): the largest and least often changed layer, so first.
ARG NPU=present
ARG CANN_VERSION=8.0.RC1
ARG NPU_INSTALLERS=none
ARG CANN_TOOLKIT_RUN=
ARG CANN_KERNELS_RUN=
ARG GCC_DEB=4:12.2.0-3
ARG MAKE_DEB=4.3-4.1
RUN --mount=type=bind,source=npu-installers/train,target=/tmp/npu,rw \
    --mount=type=bind,source=local,target=/tmp/zoobox-local \
    if [ "${NPU}" = present ]; then \
        toolkit="${CANN_TOOLKIT_RUN:-Ascend-cann-toolkit_${CANN_VERSION}_linux-$(uname -m).run}" \
     && kernels="${CANN_KERNELS_RUN:-$(find /tmp/npu -maxdepth 1 -iname "Ascend-cann-kernels-910*_${CANN_VERSION}_linux*.run" -printf '%f' -quit)}" \
     && test -n "${kernels}" \
     && if ! command -v gcc >/dev/null || ! command -v g++ >/dev/null || ! command -v make >/dev/null; then \
            apt-get update \
         && apt-get install -y --no-install-recommends gcc="${GCC_DEB}" g++="${GCC_DEB}" make="${MAKE_DEB}" \
         && rm -rf /var/lib/apt/lists/*; \
        fi \
     && if [ -s /tmp/zoobox-local/ca-certificates.crt ]; then export PIP_CERT=/tmp/zoobox-local/ca-certificates.crt; fi \
     && echo "installing ${toolkit} and ${kernels} (${NPU_INSTALLERS})" \
     && bash "/tmp/npu/${toolkit}" --install --quiet --install-for-all \
     && bash "/tmp/npu/${kernels}" --install --quiet --install-for-all \
     && chmod -R a+rX /usr/local/Ascend \
     && test -f /usr/local/Ascend/ascend-toolkit/set_env.sh \
     && rm -rf /root/ascend /root/log; \
    else \
        echo "NPU=${NPU}: no CANN, no torch_npu (a CPU image)"; \
    fi

# Stage-side packages from the env's lock: every package pinned, files checked against
# their hashes (made by `invoke envs.lock` from envs/train.yaml, never by hand), for this
# machine's `uname -m`: requirements/train-npu.<arch>.lock with the NPU stack (CANN's Python
# dependencies, torch_npu too), requirements/train.<arch>.lock without.
# An architecture the index cannot serve has a .nolock saying why instead: the build stops
# here and prints it. The chosen lock stays in the image (ZOOBOX_LOCK_FILE), so each stage
# records its hash in env.json.
COPY requirements/train.* requirements/train-npu.* /opt/zoobox/requirements/
ARG PYPI_INDEX_URL=
ARG EXTRA_INDEX_URL=
# pip's patience with a slow index (pip reads these as its settings); images.build passes
# the host's PIP_DEFAULT_TIMEOUT / PIP_RETRIES when set.
ARG PIP_DEFAULT_TIMEOUT=120
ARG PIP_RETRIES=5
RUN --mount=type=bind,source=local,target=/tmp/zoobox-local \
    if [ -s /tmp/zoobox-local/ca-certificates.crt ]; then export PIP_CERT=/tmp/zoobox-local/ca-certificates.crt; fi \
 && if [ -d /tmp/zoobox-local/wheels ]; then export PIP_FIND_LINKS=/tmp/zoobox-local/wheels; fi \
 && lock="/opt/zoobox/requirements/train$([ "${NPU}" = present ] && echo -npu).$(uname -m).lock" \
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
ARG TORCH_VERSION=2.1.0
ARG ZOOBOX_SPEC_HASH=unknown
ARG ZOOBOX_LOCK=unknown
ARG ZOOBOX_REVISION=unknown
ARG ZOOBOX_CREATED=unknown
LABEL org.opencontainers.image.title="zoobox-train" \
      org.opencontainers.image.description="zoobox env train: RetinaNet training with torch_npu (910), Python 3.9 + torch 2.1.0" \
      org.opencontainers.image.vendor="zoobox" \
      org.opencontainers.image.version="${ZOOBOX_SPEC_HASH}" \
      org.opencontainers.image.revision="${ZOOBOX_REVISION}" \
      org.opencontainers.image.created="${ZOOBOX_CREATED}" \
      org.opencontainers.image.base.name="${BASE_IMAGE}" \
      org.zoobox.env="train" \
      org.zoobox.spec="${ZOOBOX_SPEC_HASH}" \
      org.zoobox.lock="${ZOOBOX_LOCK}" \
      org.zoobox.python="${ZOOBOX_PYTHON}" \
      org.zoobox.torch="${TORCH_VERSION}" \
      org.zoobox.cann="${CANN_VERSION}" \
      org.zoobox.npu="${NPU}"
