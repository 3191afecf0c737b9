#!/usr/bin/env bash
# Build the CPU container images with podman, from the repository's Dockerfile, on a machine
# that reaches no image registry (`make image`; tests/test_container_live.py calls it too).
#
#   scripts/build-image.sh          attnmap:cpu (the service)
#   scripts/build-image.sh nginx    attnmap-nginx:local (Debian's nginx, for the proxy tests)
#   scripts/build-image.sh all      both
#
# No registry: the base image is a Debian bookworm root filesystem made with debootstrap from the
# machine's Debian mirror and imported into podman (made once, then reused from podman's
# storage). The torch CPU wheel comes from the local wheel folder (pip's find-links here, or
# ATTNMAP_WHEELS_DIR) as a tiny image passed in WHEELS_IMAGE; without one, torch comes from
# PyTorch's CPU index. The Dockerfile's defaults (python:3.11-slim-bookworm, CUDA torch) are what
# a real `docker build` uses; this script only overrides them through build arguments.
#
# Podman settings that this kind of machine needs: the runc runtime (crun fails on hybrid
# cgroups), lowered ulimits (the runtime may not raise them), host networking, and the docker
# image format (OCI drops HEALTHCHECK).
#
# Environment: ATTNMAP_IMAGE (localhost/attnmap:cpu), ATTNMAP_NGINX_IMAGE
# (localhost/attnmap-nginx:local), ATTNMAP_BASE_IMAGE (localhost/attnmap-base:bookworm),
# ATTNMAP_DEBIAN_MIRROR (read from /etc/apt), ATTNMAP_WHEELS_DIR, ATTNMAP_BUILD_DIR (scratch space).
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET="${1:-app}"
IMAGE="${ATTNMAP_IMAGE:-localhost/attnmap:cpu}"
NGINX_IMAGE="${ATTNMAP_NGINX_IMAGE:-localhost/attnmap-nginx:local}"
BASE_IMAGE="${ATTNMAP_BASE_IMAGE:-localhost/attnmap-base:bookworm}"
BUILD_DIR="${ATTNMAP_BUILD_DIR:-/var/tmp/attnmap-image-build}"
TORCH_VERSION="$(sed -n 's/^ *"torch==\([^"]*\)",*$/\1/p' pyproject.toml)"
PODMAN=(podman --runtime runc)
LIMITS=(--ulimit nofile=4096:4096 --ulimit nproc=4096:4096)

log() { printf '[build-image %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
need() { command -v "$1" >/dev/null || { echo "build-image: $1 not found (apt-get install $2)" >&2; exit 1; }; }

need podman podman
need runc runc

# The first Debian mirror apt uses here (deb822 or one-line format), else deb.debian.org.
debian_mirror() {
    local url
    url="$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null \
            | sed -n 's|^URIs: *\(http[^ ]*/debian\)/\{0,1\}$|\1|p' | head -n1)"
    if [ -z "$url" ]; then
        url="$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
                | sed -n 's|^deb \(\[[^]]*\] \)\{0,1\}\(http[^ ]*/debian\)/\{0,1\} .*|\2|p' | head -n1)"
    fi
    echo "${url:-http://deb.debian.org/debian}"
}

# Debian bookworm, minbase + Python 3.11 with venv and the CA bundle; docs, man pages, locales,
# apt lists and downloaded packages removed. About 130 MB.
ensure_base() {
    if "${PODMAN[@]}" image exists "$BASE_IMAGE"; then
        log "base image $BASE_IMAGE: reused"
        return
    fi
    need debootstrap debootstrap
    local mirror rootfs
    mirror="${ATTNMAP_DEBIAN_MIRROR:-$(debian_mirror)}"
    rootfs="$BUILD_DIR/rootfs"
    rm -rf "$rootfs"
    mkdir -p "$BUILD_DIR"
    log "debootstrap bookworm from $mirror"
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
        bookworm "$rootfs" "$mirror" >"$BUILD_DIR/debootstrap.log" 2>&1 \
        || { tail -n 30 "$BUILD_DIR/debootstrap.log" >&2; exit 1; }
    # The same suites as the host: the release, its updates and the security archive.
    printf 'deb %s bookworm main\ndeb %s bookworm-updates main\ndeb %s-security bookworm-security main\n' \
        "$mirror" "$mirror" "$mirror" >"$rootfs/etc/apt/sources.list"
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/lib/apt/lists/* \
        "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/usr/share/locale/*
    log "importing $BASE_IMAGE"
    tar --numeric-owner -C "$rootfs" -cf - . \
        | "${PODMAN[@]}" import --change 'CMD ["/bin/bash"]' --change 'ENV LANG=C.UTF-8' - "$BASE_IMAGE" >/dev/null
    rm -rf "$rootfs"
}

# The folder pip takes local wheels from on this machine (find-links), if it holds the torch CPU wheel.
torch_wheel() {
    local dirs dir wheel
    dirs="${ATTNMAP_WHEELS_DIR:-${PIP_FIND_LINKS:-}} $(pip config get global.find-links 2>/dev/null || true) /opt/wheels"
    for dir in $dirs; do
        dir="${dir#file://}"
        for wheel in "$dir"/torch-"$TORCH_VERSION"+cpu-cp311-cp311-manylinux*_x86_64.whl; do
            if [ -f "$wheel" ]; then
                echo "$wheel"
                return
            fi
        done
    done
}

# The CA bundle pip trusts here (a TLS-intercepting proxy's CA lives in it), passed as a build secret.
pip_cert() {
    local cert="${PIP_CERT:-$(pip config get global.cert 2>/dev/null || true)}"
    [ -n "$cert" ] || cert=/etc/ssl/certs/ca-certificates.crt
    [ -s "$cert" ] && echo "$cert"
}

build_app() {
    ensure_base
    local args=(--build-arg "BASE_IMAGE=$BASE_IMAGE")
    local wheel cert
    wheel="$(torch_wheel)"
    if [ -n "$wheel" ]; then
        local wheels_image="localhost/attnmap-wheels:$(basename "$wheel" .whl | tr '+' '_' | cut -c1-120)"
        if ! "${PODMAN[@]}" image exists "$wheels_image"; then
            log "wheel image $wheels_image from $wheel"
            printf 'FROM scratch\nCOPY %s /\n' "$(basename "$wheel")" \
                | "${PODMAN[@]}" build --quiet --format docker -f - -t "$wheels_image" "$(dirname "$wheel")" >/dev/null
        fi
        args+=(--build-arg "WHEELS_IMAGE=$wheels_image" --build-arg "TORCH_WHEEL=$(basename "$wheel")")
    else
        log "no local torch $TORCH_VERSION CPU wheel: torch comes from PyTorch's CPU index"
        args+=(--build-arg "TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu")
    fi
    if cert="$(pip_cert)"; then
        args+=(--secret "id=pip-cert,src=$cert")
    fi
    log "building $IMAGE"
    "${PODMAN[@]}" build --format docker --network host "${LIMITS[@]}" --layers \
        "${args[@]}" -t "$IMAGE" -f Dockerfile .
    log "built $IMAGE: $("${PODMAN[@]}" image inspect --format '{{.Size}}' "$IMAGE") bytes"
}

build_nginx() {
    ensure_base
    log "building $NGINX_IMAGE"
    "${PODMAN[@]}" build --format docker --network host "${LIMITS[@]}" --layers \
        --build-arg "BASE_IMAGE=$BASE_IMAGE" -t "$NGINX_IMAGE" -f deploy/nginx.Dockerfile deploy
}

case "$TARGET" in
    app) build_app ;;
    nginx) build_nginx ;;
    all) build_app; build_nginx ;;
    *) echo "usage: $0 [app|nginx|all]" >&2; exit 2 ;;
esac
