# syntax=docker/dockerfile:1
# zoobox env `atc`: RefineDet ONNX export on torch 1.5, ATC to .om, .om inference through
# ais_bench; without the NPU installers, a CPU image (onnxruntime backend).
#
#   Python 3.7, torch 1.5.0, onnx, onnxruntime, CANN 6.0.RC1 (ATC, ACL) + ais_bench and
#   aclruntime (host driver 22.0.2). Pins in envs/atc.yaml (the source of truth), locked
#   with every dependency and its hashes in requirements/atc[-npu].<arch>.lock by `invoke
#   envs.lock`. PyPI has no aarch64 torch 1.5.0: atc.aarch64.nolock (docker/README.md).
#
# PyPI's torch 1.5.0 (cp37, x86_64) is a CUDA 10.2 build with its kernels inside the wheel
# (752 MB, no nvidia-* dependencies); it runs on the CPU.
#
# NPU layers. CANN, ais_bench and aclruntime are not on any registry: put them in
# docker/npu-installers/atc/ (`invoke images.build --env atc` checks them before building,
# matching names ignoring case; files.yaml there names files that differ):
#   Ascend-cann-toolkit_${CANN_VERSION}_linux-<arch>.run   --install --quiet --install-for-all
#   aclruntime-<version>-cp37-cp37m-linux_<arch>.whl
#   ais_bench-<version>-py3-none-any.whl
# with <arch> = `uname -m`; images.build passes the chosen names as CANN_TOOLKIT_RUN,
# ACLRUNTIME_WHL and AIS_BENCH_WHL. --build-arg NPU=absent skips these layers (label
# org.zoobox.npu=absent). The installers are bind-mounted, never copied into a layer;
# NPU_INSTALLERS (set by images.build) keys the layer cache. ATC compiles operators with
# gcc / g++ / make: the NPU layer installs them (pinned for bookworm: GCC_DEB, MAKE_DEB)
# unless the base image has them.
#
# aarch64 (most 310P hosts): PyPI has no aarch64 wheel of torch 1.5.0 (its only cp37 Linux
# wheel is x86_64). Put one in docker/local/wheels/ (pip finds it there); images.build
# says so before building when it is missing.
#
# Build with `invoke images.build --env atc`, or by hand from the repository root:
#   docker build -f docker/atc.Dockerfile -t zoobox/atc:dev docker
# RUN --mount needs BuildKit (Docker 23+ by default) or podman/buildah.
#
# Build arguments: BASE_IMAGE (CPython 3.7 as `python`: python:3.7-slim-bookworm, an Ascend
# base image, or localhost/zoobox/python:3.7-bookworm from `invoke dev.engine`),
# ZOOBOX_PYTHON, NPU (present | absent), CANN_VERSION, NPU_INSTALLERS, CANN_TOOLKIT_RUN,
# ACLRUNTIME_WHL, AIS_BENCH_WHL, GCC_DEB, MAKE_DEB, NSS_WRAPPER_DEB, PYPI_INDEX_URL,
# EXTRA_INDEX_URL, ZOOBOX_* (labels). The context's local/ folder (CA bundle for pip, extra
# wheels) is bind-mounted into the pip steps only: see export.Dockerfile.

ARG BASE_IMAGE=python:3.7-slim-bookworm
FROM ${BASE_IMAGE}

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# The interpreter is the one the env names: a wrong BASE_IMAGE fails here, not in a stage.
ARG ZOOBOX_PYTHON=3.7
RUN python -c "import sys; v = '%d.%d' % sys.version_info[:2]; \
sys.exit(0 if v == '${ZOOBOX_PYTHON}' else 'BASE_IMAGE has Python ' + v + ', env atc needs ${ZOOBOX_PYTHON}')"

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

# CANN toolkit (ATC, ACL): the largest and least often changed layer, so first.
ARG NPU=present
ARG CANN_VERSION=6.0.RC1
ARG NPU_INSTALLERS=none
ARG CANN_TOOLKIT_RUN=
ARG GCC_DEB=4:12.2.0-3
ARG MAKE_DEB=4.3-4.1
RUN --mount=type=bind,source=npu-installers/atc,target=/tmp/npu,rw \
    --mount=type=bind,source=local,target=/tmp/zoobox-local \
    if [ "${NPU}" = present ]; then \
        toolkit="${CANN_TOOLKIT_RUN:-Ascend-cann-toolkit_${CANN_VERSION}_linux-$(uname -m).run}" \
     && if ! command -v gcc >/dev/null || ! command -v g++ >/dev/null || ! command -v make >/dev/null; then \
            apt-get update \
         && apt-get install -y --no-install-recommends gcc="${GCC_DEB}" g++="${GCC_DEB}" make="${MAKE_DEB}" \
         && rm -rf /var/lib/apt/lists/*; \
        fi \
     && if [ -s /tmp/zoobox-local/ca-certificates.crt ]; then export PIP_CERT=/tmp/zoobox-local/ca-certificates.crt; fi \
     && echo "installing ${toolkit} (${NPU_INSTALLERS})" \
     && bash "/tmp/npu/${toolkit}" --install --quiet --install-for-all \
     && chmod -R a+rX /usr/local/Ascend \
     && test -f /usr/local/Ascend/ascend-toolkit/set_env.sh \
     && rm -rf /root/ascend /root/log; \
    else \
        echo "NPU=${NPU}: no CANN, no ais_bench (a CPU image)"; \
    fi

# Stage-side packages from the env's lock: every package pinned, files checked against
# their hashes (made by `invoke envs.lock` from envs/atc.yaml, never by hand), for this
# machine's `uname -m`: requirements/atc-npu.<arch>.lock with the NPU stack (CANN's Python
# dependencies too), requirements/atc.<arch>.lock without.
# An architecture the index cannot serve has a .nolock saying why instead: the build stops
# here and prints it. The chosen lock stays in the image (ZOOBOX_LOCK_FILE), so each stage
# records its hash in env.json.
COPY requirements/atc.* requirements/atc-npu.* /opt/zoobox/requirements/
ARG PYPI_INDEX_URL=
ARG EXTRA_INDEX_URL=
# pip's patience with a slow index (pip reads these as its settings); images.build passes
# the host's PIP_DEFAULT_TIMEOUT / PIP_RETRIES when set.
ARG PIP_DEFAULT_TIMEOUT=120
ARG PIP_RETRIES=5
RUN --mount=type=bind,source=local,target=/tmp/zoobox-local \
    if [ -s /tmp/zoobox-local/ca-certificates.crt ]; then export PIP_CERT=/tmp/zoobox-local/ca-certificates.crt; fi \
 && if [ -d /tmp/zoobox-local/wheels ]; then export PIP_FIND_LINKS=/tmp/zoobox-local/wheels; fi \
 && lock="/opt/zoobox/requirements/atc$([ "${NPU}" = present ] && echo -npu).$(uname -m).lock" \
 && if [ ! -f "$lock" ]; then cat "${lock%.lock}.nolock" 2>/dev/null; echo "no $lock: run invoke envs.lock" >&2; exit 1; fi \
 && pip install --no-cache-dir --require-hashes \
        ${PYPI_INDEX_URL:+--index-url "$PYPI_INDEX_URL"} \
        ${EXTRA_INDEX_URL:+--extra-index-url "$EXTRA_INDEX_URL"} \
        -r "$lock" \
 && ln -s "$lock" /opt/zoobox/requirements.lock
ENV ZOOBOX_LOCK_FILE=/opt/zoobox/requirements.lock

# The NPU side of Python beyond the lock (which has what ATC imports): aclruntime and
# ais_bench from their wheels (--no-deps: their dependencies are in the lock), the files
# images.build chose (ACLRUNTIME_WHL, AIS_BENCH_WHL), else the first that matches.
ARG ACLRUNTIME_WHL=
ARG AIS_BENCH_WHL=
RUN --mount=type=bind,source=npu-installers/atc,target=/tmp/npu,rw \
    --mount=type=bind,source=local,target=/tmp/zoobox-local \
    if [ "${NPU}" = present ]; then \
        aclruntime="${ACLRUNTIME_WHL:-$(find /tmp/npu -maxdepth 1 -name "aclruntime-*-cp37-cp37m-linux_$(uname -m).whl" -printf '%f' -quit)}" \
     && ais_bench="${AIS_BENCH_WHL:-$(find /tmp/npu -maxdepth 1 -name "ais_bench-*-py3-none-any.whl" -printf '%f' -quit)}" \
     && pip install --no-cache-dir --no-deps "/tmp/npu/${aclruntime}" "/tmp/npu/${ais_bench}" \
     && pip show aclruntime ais_bench; \
    fi

COPY entrypoint.sh /usr/local/bin/zoobox-entrypoint
USER 1000:1000
WORKDIR /workspace
ENTRYPOINT ["/usr/local/bin/zoobox-entrypoint"]
CMD ["python"]

# Labels last: their values change without touching the layers above.
ARG BASE_IMAGE
ARG TORCH_VERSION=1.5.0
ARG ZOOBOX_SPEC_HASH=unknown
ARG ZOOBOX_LOCK=unknown
ARG ZOOBOX_REVISION=unknown
ARG ZOOBOX_CREATED=unknown
LABEL org.opencontainers.image.title="zoobox-atc" \
      org.opencontainers.image.description="zoobox env atc: ONNX export on torch 1.5, ATC to .om, .om inference (ais_bench), Python 3.7" \
      org.opencontainers.image.vendor="zoobox" \
      org.opencontainers.image.version="${ZOOBOX_SPEC_HASH}" \
      org.opencontainers.image.revision="${ZOOBOX_REVISION}" \
      org.opencontainers.image.created="${ZOOBOX_CREATED}" \
      org.opencontainers.image.base.name="${BASE_IMAGE}" \
      org.zoobox.env="atc" \
      org.zoobox.spec="${ZOOBOX_SPEC_HASH}" \
      org.zoobox.lock="${ZOOBOX_LOCK}" \
      org.zoobox.python="${ZOOBOX_PYTHON}" \
      org.zoobox.torch="${TORCH_VERSION}" \
      org.zoobox.cann="${CANN_VERSION}" \
      org.zoobox.npu="${NPU}"
