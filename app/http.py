"""Small HTTP helpers shared by the routes and the error boundary."""

from __future__ import annotations

from typing import Any

import orjson
from flask import Response


def json_response(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """Serialise ``payload`` with orjson (numpy arrays allowed) into a JSON response."""
    body = orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)
    response = Response(body, status=status, mimetype="application/json")
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def png_response(png: bytes, headers: dict[str, str]) -> Response:
    """Wrap encoded PNG bytes in a response with an explicit Content-Length."""
    response = Response(png, status=200, mimetype="image/png")
    response.headers["Content-Length"] = str(len(png))
    response.headers["Content-Disposition"] = 'inline; filename="attention.png"'
    for name, value in headers.items():
        response.headers[name] = value
    return response
