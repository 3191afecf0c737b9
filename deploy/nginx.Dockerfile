# nginx as the edge proxy, from Debian's package, running unprivileged: the local stand-in for the
# nginxinc/nginx-unprivileged image that docker-compose.yml uses (no registry on the build
# machines). Like compose, the tests mount deploy/nginx.conf at /etc/nginx/nginx.conf read-only
# and give it a tmpfs /tmp; the config keeps its pid and temp files there.
#
#   scripts/build-image.sh nginx    (podman, on the local Debian base image)
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}

RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nginx-light \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /etc/nginx/sites-enabled/* \
    && nginx -v

# Debian's www-data; the config needs no root (it listens on 8080, writes only under /tmp).
USER www-data
EXPOSE 8080
STOPSIGNAL SIGQUIT
# -e stderr: never try the compiled-in /var/log/nginx/error.log on a read-only filesystem.
CMD ["nginx", "-e", "stderr", "-g", "daemon off;"]
