"""Small HTTP helpers shared by the routes and the error boundary."""

from __future__ import annotations

from typing import Any

import orjson
from flask import Response


def json_response(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """Serialise ``payload`` with orjson (numpy arrays allowed) into a JSON response."""
    body = orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)
    # Headers given to the constructor are appended once; setting them one by one afterwards
    # scans the whole header list each time (quadratic, and this runs on every request).
    return Response(body, status=status, headers=list((headers or {}).items()), mimetype="application/json")


def png_response(png: bytes, headers: dict[str, str]) -> Response:
    """Wrap encoded PNG bytes in a response; Werkzeug sets Content-Length from the bytes."""
    return Response(png, status=200, mimetype="image/png",
                    headers=[("Content-Disposition", 'inline; filename="attention.png"'), *headers.items()])
