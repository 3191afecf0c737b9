"""Exceptions of the client: one class per kind of failure the API reports, plus transport failures.

    AttnmapError
    +-- TransportError                 no HTTP answer (refused, reset, timed out) or one that is not the API's
    +-- ApiError                       the API answered with its JSON error document
        +-- BadRequestError        400
        +-- UnauthorizedError      401
        +-- NotFoundError          404
        +-- MethodNotAllowedError  405
        +-- PayloadTooLargeError   413
        +-- UnsupportedMediaError  415
        +-- UnprocessableError     422
        +-- ServerError            500 and any other 5xx
            +-- ServiceUnavailableError  503 (and 502/504 from the shipped proxy); has retry_after

Every :class:`ApiError` carries the API's ``code`` (stable, machine-readable), ``message``,
``field`` (the request field concerned, or None), the HTTP ``status`` and the ``request_id``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping


class AttnmapError(Exception):
    """Any failure of a client call."""


class TransportError(AttnmapError):
    """The server could not be reached, or what came back was not an attnmap answer."""

    def __init__(self, message: str, *, url: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.url = url


class ApiError(AttnmapError):
    """The API answered with an error document ``{"error": {"code", "message", "field"}, "request_id"}``."""

    status: int = 0

    def __init__(self, status: int, code: str, message: str, field: str | None = None, request_id: str | None = None,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(f"{status} {code}: {message}" + (f" (field {field})" if field else ""))
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.request_id = request_id
        self.headers = dict(headers or {})

    def to_dict(self) -> dict[str, object]:
        """The error as plain data (for reports and logs)."""
        return {"status": self.status, "code": self.code, "message": self.message, "field": self.field,
                "request_id": self.request_id}


class BadRequestError(ApiError):
    """400: the request could not be parsed."""


class UnauthorizedError(ApiError):
    """401: a bearer token is needed (``unauthorized``) or the one given is wrong (``invalid_token``)."""


class NotFoundError(ApiError):
    """404: no such route, model or example."""


class MethodNotAllowedError(ApiError):
    """405: the route exists but not for this method."""


class PayloadTooLargeError(ApiError):
    """413: the body, a file or a form part is over the server's byte limit."""


class UnsupportedMediaError(ApiError):
    """415: wrong content type, or an image or file the server cannot decode."""


class UnprocessableError(ApiError):
    """422: well-formed but invalid values, out-of-range selections, a cap on an implied size."""


class ServerError(ApiError):
    """5xx: the server failed; ``request_id`` finds the log line."""


class ServiceUnavailableError(ServerError):
    """503 (and 502/504 behind the proxy): not ready, draining, past the deadline; retry later."""

    @property
    def retry_after(self) -> float | None:
        """Seconds the server asked the client to wait (``Retry-After``), or None."""
        return parse_retry_after(self.headers.get("retry-after"))


_BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequestError,
    401: UnauthorizedError,
    404: NotFoundError,
    405: MethodNotAllowedError,
    413: PayloadTooLargeError,
    415: UnsupportedMediaError,
    422: UnprocessableError,
    502: ServiceUnavailableError,
    503: ServiceUnavailableError,
    504: ServiceUnavailableError,
}


def parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` in seconds (the API sends integers); None when absent or unreadable."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def error_from_response(status: int, body: bytes, headers: Mapping[str, str]) -> ApiError:
    """Build the exception for an error answer; a body that is not the API's document still gives one."""
    cls = _BY_STATUS.get(status) or (ServerError if status >= 500 else ApiError)
    lowered = {k.lower(): v for k, v in headers.items()}
    code, message, field, request_id = f"http_{status}", f"HTTP {status}", None, lowered.get("x-request-id")
    try:
        document = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        document = None
    if isinstance(document, dict) and isinstance(document.get("error"), dict):
        error = document["error"]
        code = str(error.get("code") or code)
        message = str(error.get("message") or message)
        field = error.get("field") if isinstance(error.get("field"), str) else None
        if isinstance(document.get("request_id"), str):
            request_id = document["request_id"]
    exc = cls(status, code, message, field, request_id, lowered)
    exc.status = status
    return exc
