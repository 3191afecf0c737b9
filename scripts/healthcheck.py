"""Container liveness check: GET /healthz on the address Gunicorn binds (ATTNMAP_BIND).

The image's HEALTHCHECK runs it (there is no curl in the image). It reads the same variable as
gunicorn.conf.py, so a container started with another ATTNMAP_BIND is still checked at the right
port; a wildcard host is asked on loopback. Exit status 0 = alive, 1 = not.
"""

from __future__ import annotations

import os
import sys
import urllib.request

WILDCARDS = {"", "0.0.0.0", "::", "[::]"}  # noqa: S104 - names of the wildcard binds, not a bind


def healthz_url(bind: str) -> str:
    """The /healthz URL for the first address of a Gunicorn bind value such as ``0.0.0.0:8000``."""
    first = bind.split(",")[0].strip()
    host, _, port = first.rpartition(":")
    if not port.isdigit():
        raise ValueError(f"ATTNMAP_BIND {first!r} is not HOST:PORT")
    if host in WILDCARDS:
        host = "127.0.0.1"
    elif ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}/healthz"


def main() -> int:
    """Ask /healthz once; 0 when it answers 200."""
    url = healthz_url(os.environ.get("ATTNMAP_BIND", "127.0.0.1:8000"))
    try:
        with urllib.request.urlopen(url, timeout=4) as response:  # noqa: S310 - a fixed http URL
            return 0 if response.status == 200 else 1
    except OSError as exc:
        print(f"healthcheck: {url}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
