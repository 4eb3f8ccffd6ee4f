# syntax=docker/dockerfile:1
# zoobox env `aie`: TorchScript compile and inference with Torch_AIE on the Ascend 310P
# (RetinaNet, RetinaFace); without the NPU installers, a CPU image (torchscript backend).
#
#   Python 3.9, torch 2.0.1, CANN 7.0.RC1 toolkit + Torch_AIE 6.3.rc2 (host driver 23.0.rc1).
#   Pins in envs/aie.yaml (the source of truth), locked with every dependency and its
#   hashes in requirements/aie[-npu].<arch>.lock by `invoke envs.lock`.
#
# On x86_64, PyPI's torch 2.0.1 is a CUDA build that pulls ~2.3 GB of nvidia-* wheels (the
# image is ~5 GB, built in 2-3 min where PyPI is fast). It runs on the CPU, while a
# `pip install --no-deps torch==2.0.1` does not (import fails without libcublas), so the
# CPU image keeps the spec's exact torch. A CPU-only 2.0.1+cpu needs its own lock (`invoke
# envs.lock --env aie --extra-index-url https://download.pytorch.org/whl/cpu`, then build
# with --arg EXTRA_INDEX_URL=...): pip accepts only files whose hashes the lock lists. On
# aarch64 (most 310P hosts) PyPI's wheel is CPU-only anyway.
# torchvision 0.15.2 is left out: no stage imports it.
#
# NPU layers. CANN and Torch_AIE are not on any registry: put the installers in
# docker/npu-installers/aie/ (`invoke images.build --env aie` checks them before building,
# matching names ignoring case, and says what it found and uses; files.yaml there names
# files that do not follow these names):
#   Ascend-cann-toolkit_${CANN_VERSION}_linux-<arch>.run        --install --quiet --install-for-all
#   Ascend-cann-aie_${AIE_RUNTIME_VERSION}_linux-<arch>.run     --install --quiet (the AIE runtime,
#                                                               its own version: 7.0.T51.B010)
#   Ascend-cann-torch-aie-${TORCH_AIE_VERSION}-linux_<arch>.tar.gz   (the torch_aie wheel)
# with <arch> = `uname -m` (aarch64, x86_64). images.build passes the chosen names as
# CANN_TOOLKIT_RUN, AIE_RUNTIME_RUN and TORCH_AIE_TAR. --build-arg NPU=absent skips these
# layers (label org.zoobox.npu=absent). The installers are bind-mounted, never copied into
# a layer; NPU_INSTALLERS (their names, sizes and times, from images.build) keys the layer
# cache. CANN compiles operators online with gcc / g++ / make: the NPU layer installs them
# (pinned for Debian bookworm, GCC_DEB / MAKE_DEB) unless the base image has them. Containers
# run as the caller's uid, not root: the installed trees are made world-readable.
# The driver stays on the host: the docker runner mounts it, the entrypoint puts its
# libraries on LD_LIBRARY_PATH.
#
# Build with `invoke images.build --env aie`, or by hand from the repository root:
#   docker build -f docker/aie.Dockerfile -t zoobox/aie:dev docker
# RUN --mount needs BuildKit (Docker 23+ by default) or podman/buildah.
#
# Build arguments: BASE_IMAGE (CPython 3.9 as `python`: python:3.9-slim-bookworm, an Ascend
# base image, or localhost/zoobox/python:3.9-bookworm from `invoke dev.engine`),
# ZOOBOX_PYTHON, NPU (present | absent), CANN_VERSION, AIE_RUNTIME_VERSION, TORCH_AIE_VERSION,
# NPU_INSTALLERS, CANN_TOOLKIT_RUN, AIE_RUNTIME_RUN, TORCH_AIE_TAR, GCC_DEB, MAKE_DEB,
# NSS_WRAPPER_DEB, PYPI_INDEX_URL, EXTRA_INDEX_URL, ZOOBOX_* (labels). The context's local/ folder (CA bundle
# for pip, extra wheels) is bind-mounted into the pip steps only: see export.Dockerfile.

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
sys.exit(0 if v == '${ZOOBOX_PYTHON}' else 'BASE_IMAGE has Python ' + v + ', env aie needs ${ZOOBOX_PYTHON}')"

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

# CANN toolkit + the AIE runtime: the largest and least often changed layer, so first.
ARG NPU=present
ARG CANN_VERSION=7.0.RC1.alpha003
ARG AIE_RUNTIME_VERSION=7.0.T51.B010
ARG TORCH_AIE_VERSION=6.3.rc2
ARG NPU_INSTALLERS=none
ARG CANN_TOOLKIT_RUN=
ARG AIE_RUNTIME_RUN=
ARG GCC_DEB=4:12.2.0-3
ARG MAKE_DEB=4.3-4.1
# (Older Ascend-cann-aie installers install into the working directory.)
WORKDIR /tmp/zoobox-npu
RUN --mount=type=bind,source=npu-installers/aie,target=/tmp/npu,rw \
    --mount=type=bind,source=local,target=/tmp/zoobox-local \
    if [ "${NPU}" = present ]; then \
        arch="$(uname -m)" \
     && toolkit="${CANN_TOOLKIT_RUN:-Ascend-cann-toolkit_${CANN_VERSION}_linux-${arch}.run}" \
     && runtime="${AIE_RUNTIME_RUN:-Ascend-cann-aie_${AIE_RUNTIME_VERSION}_linux-${arch}.run}" \
     && if ! command -v gcc >/dev/null || ! command -v g++ >/dev/null || ! command -v make >/dev/null; then \
            apt-get update \
         && apt-get install -y --no-install-recommends gcc="${GCC_DEB}" g++="${GCC_DEB}" make="${MAKE_DEB}" \
         && rm -rf /var/lib/apt/lists/*; \
        fi \
     && if [ -s /tmp/zoobox-local/ca-certificates.crt ]; then export PIP_CERT=/tmp/zoobox-local/ca-certificates.crt; fi \
     && echo "installing ${toolkit} and ${runtime} (${NPU_INSTALLERS})" \
     && bash "/tmp/npu/${toolkit}" --install --quiet --install-for-all \
     && bash "/tmp/npu/${runtime}" --install --quiet \
     && found="$(find /usr/local/Ascend /tmp/zoobox-npu /root -path '*aie*' -name set_env.sh -print -quit)" \
     && test -n "$found" \
     && if [ "$found" != /usr/local/Ascend/aie/set_env.sh ]; then \
            mkdir -p /usr/local/Ascend/aie \
         && printf '# installed at %s: sourced from its own folder\n_zoobox_here="$PWD"\ncd "%s" && . ./set_env.sh\ncd "$_zoobox_here" || true\n' \
                "$found" "$(dirname "$found")" > /usr/local/Ascend/aie/set_env.sh; \
        fi \
     && chmod -R a+rX /usr/local/Ascend /tmp/zoobox-npu \
     && test -f /usr/local/Ascend/ascend-toolkit/set_env.sh \
     && rm -rf /root/ascend /root/log; \
    else \
        echo "NPU=${NPU}: no CANN, no Torch_AIE (a CPU image)"; \
    fi

# Stage-side packages from the env's lock: every package pinned, files checked against
# their hashes (made by `invoke envs.lock` from envs/aie.yaml, never by hand), for this
# machine's `uname -m`: requirements/aie-npu.<arch>.lock with the NPU stack (CANN's Python
# dependencies too), requirements/aie.<arch>.lock without.
# An architecture the index cannot serve has a .nolock saying why instead: the build stops
# here and prints it. The chosen lock stays in the image (ZOOBOX_LOCK_FILE), so each stage
# records its hash in env.json.
COPY requirements/aie.* requirements/aie-npu.* /opt/zoobox/requirements/
ARG PYPI_INDEX_URL=
ARG EXTRA_INDEX_URL=
# pip's patience with a slow index (pip reads these as its settings); images.build passes
# the host's PIP_DEFAULT_TIMEOUT / PIP_RETRIES when set.
ARG PIP_DEFAULT_TIMEOUT=120
ARG PIP_RETRIES=5
RUN --mount=type=bind,source=local,target=/tmp/zoobox-local \
    if [ -s /tmp/zoobox-local/ca-certificates.crt ]; then export PIP_CERT=/tmp/zoobox-local/ca-certificates.crt; fi \
 && if [ -d /tmp/zoobox-local/wheels ]; then export PIP_FIND_LINKS=/tmp/zoobox-local/wheels; fi \
 && lock="/opt/zoobox/requirements/aie$([ "${NPU}" = present ] && echo -npu).$(uname -m).lock" \
 && if [ ! -f "$lock" ]; then cat "${lock%.lock}.nolock" 2>/dev/null; echo "no $lock: run invoke envs.lock" >&2; exit 1; fi \
 && pip install --no-cache-dir --require-hashes \
        ${PYPI_INDEX_URL:+--index-url "$PYPI_INDEX_URL"} \
        ${EXTRA_INDEX_URL:+--extra-index-url "$EXTRA_INDEX_URL"} \
        -r "$lock" \
 && ln -s "$lock" /opt/zoobox/requirements.lock
ENV ZOOBOX_LOCK_FILE=/opt/zoobox/requirements.lock

# The NPU side of Python beyond the lock (which has CANN's own dependencies): the torch_aie
# wheel from its installer (--no-deps: it must not replace the locked torch); the file
# images.build chose (TORCH_AIE_TAR), else the plugin version's standard name. Some
# releases name the wheel so that pip refuses it ("Invalid wheel filename"):
# images.build reads the archive and passes the member (TORCH_AIE_WHL_MEMBER) and the
# name pip accepts, from the wheel's own metadata (TORCH_AIE_WHL); it is renamed to that.
ARG TORCH_AIE_TAR=
ARG TORCH_AIE_WHL_MEMBER=
ARG TORCH_AIE_WHL=
RUN --mount=type=bind,source=npu-installers/aie,target=/tmp/npu,rw \
    --mount=type=bind,source=local,target=/tmp/zoobox-local \
    if [ "${NPU}" = present ]; then \
        mkdir -p /tmp/torch-aie \
     && tar -xzf "/tmp/npu/${TORCH_AIE_TAR:-Ascend-cann-torch-aie-${TORCH_AIE_VERSION}-linux_$(uname -m).tar.gz}" -C /tmp/torch-aie \
     && if [ -n "${TORCH_AIE_WHL_MEMBER}" ]; then \
            { [ "${TORCH_AIE_WHL_MEMBER}" = "${TORCH_AIE_WHL}" ] \
              || mv "/tmp/torch-aie/${TORCH_AIE_WHL_MEMBER}" "/tmp/torch-aie/${TORCH_AIE_WHL}"; } \
         && pip install --no-cache-dir --no-deps "/tmp/torch-aie/${TORCH_AIE_WHL}"; \
        else \
            find /tmp/torch-aie -name '*.whl' -print0 | xargs -0 -r pip install --no-cache-dir --no-deps; \
        fi \
     && pip show torch_aie \
     && rm -rf /tmp/torch-aie; \
    fi

COPY entrypoint.sh /usr/local/bin/zoobox-entrypoint
USER 1000:1000
WORKDIR /workspace
ENTRYPOINT ["/usr/local/bin/zoobox-entrypoint"]
CMD ["python"]

# Labels last: their values change without touching the layers above.
ARG BASE_IMAGE
ARG TORCH_VERSION=2.0.1
ARG ZOOBOX_SPEC_HASH=unknown
ARG ZOOBOX_LOCK=unknown
ARG ZOOBOX_REVISION=unknown
ARG ZOOBOX_CREATED=unknown
LABEL org.opencontainers.image.title="zoobox-aie" \
      org.opencontainers.image.description="zoobox env aie: TorchScript compile and inference with Torch_AIE (310P), Python 3.9 + torch 2.0.1" \
      org.opencontainers.image.vendor="zoobox" \
      org.opencontainers.image.version="${ZOOBOX_SPEC_HASH}" \
      org.opencontainers.image.revision="${ZOOBOX_REVISION}" \
      org.opencontainers.image.created="${ZOOBOX_CREATED}" \
      org.opencontainers.image.base.name="${BASE_IMAGE}" \
      org.zoobox.env="aie" \
      org.zoobox.spec="${ZOOBOX_SPEC_HASH}" \
      org.zoobox.lock="${ZOOBOX_LOCK}" \
      org.zoobox.python="${ZOOBOX_PYTHON}" \
      org.zoobox.torch="${TORCH_VERSION}" \
      org.zoobox.cann="${CANN_VERSION}" \
      org.zoobox.torch_aie="${TORCH_AIE_VERSION}" \
      org.zoobox.npu="${NPU}"
