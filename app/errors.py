"""The error tree of attnmap and the one place that maps errors to HTTP.

Every failure a request can meet is an :class:`ApiError` subclass, chosen by what went wrong:

    ApiError                      (status, code, message, field)
    +-- BadRequest          400   malformed JSON/multipart, duplicate keys, nesting too deep
    +-- Unauthorized        401   missing or wrong bearer token
    +-- NotFound            404   unknown route, unknown model
    +-- MethodNotAllowed    405
    +-- PayloadTooLarge     413   body, file or form part over its byte limit
    +-- UnsupportedMedia    415   wrong content type, image or file format
    +-- Unprocessable       422   invalid values, out-of-range selections, implied size over a cap
    +-- ServiceUnavailable  503   not ready, overloaded, accelerator out of memory (Retry-After)

Third-party exceptions (Werkzeug, pydantic, torch) are translated to this tree at the boundary
where they are raised; anything else that escapes becomes a generic 500 that names only the
request id. :func:`error_response` turns any of them into the JSON body of the contract.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, g
from werkzeug.exceptions import HTTPException

log = logging.getLogger("attnmap.errors")


class ApiError(Exception):
    """A failure that the client is told about, with a stable machine-readable code."""

    status = 500
    default_code = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        field: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.field = field
        self.headers = headers or {}


class BadRequest(ApiError):
    """The request could not be parsed at all (400)."""

    status = 400
    default_code = "malformed_request"


class Unauthorized(ApiError):
    """Authentication is on and the bearer token is missing or wrong (401)."""

    status = 401
    default_code = "unauthorized"


class NotFound(ApiError):
    """No such route or no such model key (404)."""

    status = 404
    default_code = "not_found"


class MethodNotAllowed(ApiError):
    """The route exists but not for this method (405)."""

    status = 405
    default_code = "method_not_allowed"


class PayloadTooLarge(ApiError):
    """A byte limit was exceeded (413)."""

    status = 413
    default_code = "payload_too_large"


class UnsupportedMedia(ApiError):
    """The content type, file type or image format is not accepted (415)."""

    status = 415
    default_code = "unsupported_media_type"


class Unprocessable(ApiError):
    """Well-formed but invalid: bad values, out-of-range selections, caps on implied sizes (422)."""

    status = 422
    default_code = "invalid_value"


class ServiceUnavailable(ApiError):
    """The worker cannot serve this now; the client may retry after ``retry_after`` seconds (503)."""

    status = 503
    default_code = "unavailable"

    def __init__(self, message: str, *, code: str | None = None, retry_after: int = 1) -> None:
        super().__init__(message, code=code, headers={"Retry-After": str(retry_after)})


# Werkzeug's own HTTP errors (routing, size limits, media types) mapped onto our codes.
_HTTP_CODES = {
    400: "malformed_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def error_body(status: int, code: str, message: str, field: str | None) -> dict[str, Any]:
    """Build the JSON error document of the API contract."""
    return {
        "error": {"code": code, "message": message, "field": field},
        "request_id": getattr(g, "request_id", None),
    }


def error_response(exc: BaseException) -> Response:
    """Translate any exception into the contract's JSON error response.

    This is the only function that decides HTTP statuses for failures. A 5xx that is not an
    ApiError says nothing about internals: the traceback goes to the log under the request id.
    """
    from app.http import json_response  # local import: http imports this module

    headers: dict[str, str] = {}
    if isinstance(exc, ApiError):
        status, code, message, field = exc.status, exc.code, exc.message, exc.field
        headers.update(exc.headers)
    elif isinstance(exc, HTTPException):
        status = exc.code or 500
        code = _HTTP_CODES.get(status, "http_error")
        message = _http_message(exc)
        field = None
        if status == 405 and exc.response is None:
            allowed = getattr(exc, "valid_methods", None)
            if allowed:
                headers["Allow"] = ", ".join(sorted(allowed))
    else:
        log.exception("unhandled error", extra={"request_id": getattr(g, "request_id", None)})
        status, code, message, field = 500, "internal_error", "internal error; see request_id", None
    if status >= 500 and not isinstance(exc, ApiError):
        message = "internal error; see request_id"
    g.error_code = code
    return json_response(error_body(status, code, message, field), status=status, headers=headers)


def _http_message(exc: HTTPException) -> str:
    """A short client-facing sentence for Werkzeug's errors (their descriptions hold HTML)."""
    messages = {
        400: "the request could not be parsed",
        404: "no such route",
        405: "method not allowed on this route",
        413: "request body is larger than the configured limit",
        415: "unsupported content type",
    }
    return messages.get(exc.code or 500, exc.name)


def register_error_handlers(app: Flask) -> None:
    """Install :func:`error_response` for every exception the app can raise."""
    app.register_error_handler(ApiError, error_response)
    app.register_error_handler(HTTPException, error_response)
    app.register_error_handler(Exception, error_response)
