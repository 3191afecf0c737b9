"""Malformed HTTP framing, as raw requests: what Gunicorn and nginx each do with them.

Shared by the live catalogue (straight to Gunicorn) and the nginx test (through the edge), so
both see the same bytes. ``VALID_BODY`` is a small raw-weights request.
"""

from __future__ import annotations

from dataclasses import dataclass

VALID_BODY = b'{"weights": [[0.7, 0.3], [0.4, 0.6]]}'
_JSON = b"Content-Type: application/json\r\n"


@dataclass(frozen=True)
class Framing:
    """One malformed request and what Gunicorn answers when it reaches it directly."""

    name: str
    raw: bytes
    gunicorn_status: int
    gunicorn_code: str | None


def _post(headers: bytes, body: bytes = VALID_BODY) -> bytes:
    return b"POST /visualize HTTP/1.1\r\nHost: x\r\n" + _JSON + headers + b"\r\n" + body


def _chunked(body: bytes, size_line: bytes | None = None, terminator: bytes = b"\r\n") -> bytes:
    size = size_line if size_line is not None else f"{len(body):x}".encode()
    return size + b"\r\n" + body + terminator + b"0\r\n\r\n"


CL = str(len(VALID_BODY)).encode()
FRAMINGS = [
    Framing("invalid-chunk-size", _post(b"Transfer-Encoding: chunked\r\n", _chunked(VALID_BODY, b"zz")), 400, "malformed_framing"),
    Framing("chunk-size-negative", _post(b"Transfer-Encoding: chunked\r\n", _chunked(VALID_BODY, b"-5")), 400, "malformed_framing"),
    Framing("chunk-missing-terminator", _post(b"Transfer-Encoding: chunked\r\n", _chunked(VALID_BODY, terminator=b"XX")),
            400, "malformed_framing"),
    Framing("duplicate-content-length", _post(b"Content-Length: " + CL + b"\r\nContent-Length: " + CL + b"\r\n"),
            400, "malformed_header"),
    Framing("signed-content-length", _post(b"Content-Length: +" + CL + b"\r\n"), 400, "malformed_header"),
    Framing("repeated-transfer-encoding", _post(b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
                                                _chunked(VALID_BODY)), 400, "malformed_header"),
    Framing("transfer-encoding-chunked-twice", _post(b"Transfer-Encoding: chunked, chunked\r\n", _chunked(VALID_BODY)),
            400, "malformed_header"),
    Framing("unknown-transfer-coding", _post(b"Transfer-Encoding: gzip\r\n", VALID_BODY), 400, "malformed_header"),
    Framing("two-host-headers", b"GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, "malformed_header"),
    Framing("bare-lf", b"GET /healthz HTTP/1.1\nHost: x\n\n", 400, "malformed_request_line"),
    Framing("nul-in-header", b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n", 400, "malformed_header"),
    Framing("header-too-large", b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n", 431, "headers_too_large"),
    Framing("too-many-headers", b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-H%d: 1\r\n" % i for i in range(60)) + b"\r\n",
            431, "headers_too_large"),
    Framing("query-string-too-long", b"GET /healthz?" + b"q=" + b"a" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414,
            "request_line_too_long"),
    Framing("space-before-colon", b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A : 1\r\n\r\n", 400, "malformed_header"),
    Framing("http-0.9-line", b"GET /healthz\r\n\r\n", 400, "malformed_request_line"),
]
