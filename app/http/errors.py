"""The one place that maps errors to HTTP: statuses, headers and the JSON error body.

:class:`~app.core.errors.AttnmapError` subclasses map to their status by class; Werkzeug's own
HTTP errors (routing, size limits) map onto the same codes; anything else that escapes is a
generic 500 that names only the request id (the traceback goes to the log under that id).
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, g
from werkzeug.exceptions import HTTPException

from app.core.errors import (
    AttnmapError,
    InvalidInput,
    MalformedRequest,
    NotFound,
    TooLarge,
    Unauthenticated,
    Unavailable,
    UnsupportedFormat,
)
from app.http.responses import json_response

log = logging.getLogger("attnmap.errors")

STATUS_BY_CLASS: dict[type[AttnmapError], int] = {
    MalformedRequest: 400,
    Unauthenticated: 401,
    NotFound: 404,
    TooLarge: 413,
    UnsupportedFormat: 415,
    InvalidInput: 422,
    Unavailable: 503,
}

# The WWW-Authenticate challenge a 401 carries (RFC 6750); an invalid token says so.
AUTH_CHALLENGE = 'Bearer realm="attnmap"'

# Werkzeug's own HTTP errors mapped onto our codes, with a short sentence (theirs hold HTML).
_HTTP_CODES = {
    400: ("malformed_request", "the request could not be parsed"),
    404: ("not_found", "no such route"),
    405: ("method_not_allowed", "method not allowed on this route"),
    413: ("payload_too_large", "request body is larger than the configured limit"),
    415: ("unsupported_media_type", "unsupported content type"),
}


def _is_framing_error(exc: BaseException) -> bool:
    """Gunicorn's HTTP parser errors (``gunicorn.http.errors``), raised into the app by body reads.

    Matched by module, not imported: the app must not depend on the server that runs it.
    """
    return any(cls.__module__ == "gunicorn.http.errors" for cls in type(exc).__mro__)


def status_of(exc: AttnmapError) -> int:
    """HTTP status of an error of the tree (the nearest mapped class; 500 for the bare base)."""
    for cls in type(exc).__mro__:
        status = STATUS_BY_CLASS.get(cls)
        if status is not None:
            return status
    return 500


# Error texts repeat client input (a field name, a token): bounded here, at the one boundary, so
# no message can echo a megabyte, and lone surrogates (which no JSON encoder accepts) are replaced.
MAX_MESSAGE_CHARS = 400
MAX_FIELD_CHARS = 64


def _bounded(text: str, limit: int) -> str:
    short = text if len(text) <= limit else text[: limit - 1] + "\u2026"
    return short.encode("utf-8", "replace").decode("utf-8") if not short.isascii() else short


def error_body(code: str, message: str, field: str | None) -> dict[str, Any]:
    """The JSON error document of the API contract (message and field bounded, always encodable)."""
    return {"error": {"code": code, "message": _bounded(message, MAX_MESSAGE_CHARS),
                      "field": None if field is None else _bounded(field, MAX_FIELD_CHARS)},
            "request_id": getattr(g, "request_id", None)}


def error_response(exc: BaseException) -> Response:
    """Translate any exception into the contract's JSON error response.

    This is the only function that decides HTTP statuses for failures. A 5xx says nothing about
    internals unless it is one of the tree's own (deadline, out of memory, not captured).
    """
    headers: dict[str, str] = {}
    if isinstance(exc, AttnmapError):
        status, code, message, field = status_of(exc), exc.code, exc.message, exc.field
        if isinstance(exc, Unavailable):
            headers["Retry-After"] = str(exc.retry_after)
        if isinstance(exc, Unauthenticated):
            headers["WWW-Authenticate"] = AUTH_CHALLENGE if code == "unauthorized" else f'{AUTH_CHALLENGE}, error="{code}"'
    elif isinstance(exc, HTTPException):
        status = exc.code or 500
        code, message = _HTTP_CODES.get(status, ("http_error", exc.name))
        field = None
        if status == 405 and exc.response is None:
            allowed = getattr(exc, "valid_methods", None)
            if allowed:
                headers["Allow"] = ", ".join(sorted(allowed))
    elif _is_framing_error(exc):
        # The body's framing broke while the app read it (an invalid chunk size, a body cut short):
        # the client's fault, answered like any malformed request and logged without a traceback.
        log.warning("malformed request framing: %s", type(exc).__name__, extra={"request_id": getattr(g, "request_id", None)})
        status, code, message, field = 400, "malformed_framing", "the request body's framing is invalid (chunked encoding or length)", None
    else:
        log.exception("unhandled error", extra={"request_id": getattr(g, "request_id", None)})
        status, code, message, field = 500, "internal_error", "internal error; see request_id", None
    g.error_code = code
    return json_response(error_body(code, message, field), status=status, headers=headers)


def register_error_handlers(app: Flask) -> None:
    """Install :func:`error_response` for every exception the app can raise."""
    app.register_error_handler(AttnmapError, error_response)
    app.register_error_handler(HTTPException, error_response)
    app.register_error_handler(Exception, error_response)
