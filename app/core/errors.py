"""The error tree of attnmap: what went wrong, as a stable code and the field it concerns.

Every failure a request can meet is an :class:`AttnmapError`, chosen by what went wrong. The tree
knows nothing of HTTP (and imports nothing), so the decoders, the math, the renderers and the
model side raise it freely; :mod:`app.http.errors` is the one place that maps each class to a
status code::

    AttnmapError            code, message, field            (unexpected: a 500 naming the request id)
    +-- MalformedRequest    the body could not be parsed: bad JSON/multipart, duplicate keys, nesting
    +-- Unauthenticated     a bearer token is required and missing or wrong
    +-- NotFound            no such route or model key
    +-- TooLarge            a byte limit was exceeded (body, file, form part)
    +-- UnsupportedFormat   wrong content type, file type or image format
    +-- InvalidInput        well-formed but invalid: bad values, out-of-range selections, implied size over a cap
    +-- Unavailable         cannot serve this now (not ready, overloaded, deadline, out of memory); retry_after s

Third-party exceptions (Werkzeug, pydantic, torch) are translated into this tree at the boundary
where they are raised.
"""

from __future__ import annotations


class AttnmapError(Exception):
    """A failure that the client is told about, with a stable machine-readable code."""

    default_code = "internal_error"

    def __init__(self, message: str, *, code: str | None = None, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.field = field


class MalformedRequest(AttnmapError):
    """The request could not be parsed at all."""

    default_code = "malformed_request"


class Unauthenticated(AttnmapError):
    """Authentication is on and the bearer token is missing or wrong."""

    default_code = "unauthorized"


class NotFound(AttnmapError):
    """No such route or no such model key."""

    default_code = "not_found"


class TooLarge(AttnmapError):
    """A byte limit was exceeded."""

    default_code = "payload_too_large"


class UnsupportedFormat(AttnmapError):
    """The content type, file type or image format is not accepted."""

    default_code = "unsupported_media_type"


class InvalidInput(AttnmapError):
    """Well-formed but invalid: bad values, out-of-range selections, caps on implied sizes."""

    default_code = "invalid_value"


class Unavailable(AttnmapError):
    """The worker cannot serve this now; the client may retry after ``retry_after`` seconds."""

    default_code = "unavailable"

    def __init__(self, message: str, *, code: str | None = None, retry_after: int = 1) -> None:
        super().__init__(message, code=code)
        self.retry_after = retry_after
