"""CORS allow-list (``ATTNMAP_CORS_ORIGINS``, comma-separated exact origins; ``*`` for any).

Nothing is allowed by default: browsers on other origins then cannot read responses. Allowed
origins get ``Access-Control-Allow-Origin`` echoed (never with credentials: the API uses a
bearer header, not cookies) and may read the provenance headers (``X-Attnmap-*``), the request
id, ``Server-Timing`` and ``Retry-After``. Preflights (``OPTIONS`` with
``Access-Control-Request-Method``) on known routes are answered here, before authentication.
"""

from __future__ import annotations

from collections.abc import Iterable

from flask import Flask, Response, request

ALLOWED_METHODS = "GET, POST, OPTIONS"
ALLOWED_HEADERS = "Authorization, Content-Type, X-Request-ID"
ALWAYS_EXPOSED = ("X-Request-ID", "Server-Timing", "Retry-After")
PREFLIGHT_MAX_AGE_S = 600


def allowed_origin(origin: str | None, allowed: frozenset[str]) -> str | None:
    """The ``Access-Control-Allow-Origin`` value for ``origin``, or None when it is not allowed."""
    if not origin:
        return None
    if origin in allowed:
        return origin
    return "*" if "*" in allowed else None


def install_cors(app: Flask, origins: Iterable[str]) -> None:
    """Answer preflights and add CORS headers for the allow-listed ``origins`` (none: no-op)."""
    allowed = frozenset(origin.strip().rstrip("/") for origin in origins if origin.strip())
    if not allowed:
        return

    @app.before_request
    def preflight() -> Response | None:
        if request.method != "OPTIONS" or "Access-Control-Request-Method" not in request.headers:
            return None
        if request.url_rule is None:
            return None  # unknown path: the normal 404
        response = Response(status=204)
        del response.headers["Content-Type"]
        value = allowed_origin(request.headers.get("Origin"), allowed)
        if value is not None:
            response.headers["Access-Control-Allow-Origin"] = value
            response.headers["Access-Control-Allow-Methods"] = ALLOWED_METHODS
            response.headers["Access-Control-Allow-Headers"] = ALLOWED_HEADERS
            response.headers["Access-Control-Max-Age"] = str(PREFLIGHT_MAX_AGE_S)
        return response

    @app.after_request
    def add_cors_headers(response: Response) -> Response:
        # Responses differ by Origin, so shared caches must key on it even when it is refused.
        response.vary.add("Origin")
        value = allowed_origin(request.headers.get("Origin"), allowed)
        if value is not None and "Access-Control-Allow-Origin" not in response.headers:
            response.headers["Access-Control-Allow-Origin"] = value
            exposed: list[str] = list(ALWAYS_EXPOSED)
            exposed += [name for name, _ in response.headers.items() if name.startswith("X-Attnmap-")]
            response.headers["Access-Control-Expose-Headers"] = ", ".join(dict.fromkeys(exposed))
        return response
