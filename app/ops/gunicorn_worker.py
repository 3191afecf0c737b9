"""attnmap's Gunicorn worker: the sync worker with JSON error answers and a real drain on SIGTERM.

Two things the stock sync worker does that break the API's promises:

* **HTML errors.** Requests Gunicorn's own parser refuses (bad framing, oversized request line
  or headers, invalid chunk sizes) never reach the app and were answered with Gunicorn's HTML
  page. :meth:`AttnmapWorker.handle_error` answers them with the API's JSON error document
  instead, with a fixed message (the parser's text repeats the offending bytes).
* **Dropped backlog.** On SIGTERM the stock worker stops accepting after its current request
  and exits, and the connections already waiting in the listen backlog are reset. Here SIGTERM
  starts a drain: readiness goes false at once (``/readyz`` 503, through the app's hook), the
  worker keeps accepting while connections are waiting, and it stops when the backlog has been
  empty for :data:`QUIET_S` or when the drain window ends (``ATTNMAP_DRAIN_S``; by default
  Gunicorn's ``graceful_timeout`` less 5 s, i.e. 25 s). ``graceful_timeout`` still bounds the
  whole shutdown: the master kills what is left when it ends.

The Gunicorn master imports this module to find the worker class, so it imports only the
standard library and Gunicorn: never Flask, torch or the rest of the app.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import threading
import time
import uuid
from typing import Any

from gunicorn.http import errors as http_errors
from gunicorn.util import write_nonblock
from gunicorn.workers.sync import SyncWorker

QUIET_S = 0.5
FINISH_MARGIN_S = 5.0

# Gunicorn's parser errors -> (status, reason, code, message). First match in MRO order wins.
_PARSER_ERRORS: tuple[tuple[str, int, str, str, str], ...] = (
    ("LimitRequestLine", 414, "URI Too Long", "request_line_too_long", "the request line is longer than allowed"),
    ("LimitRequestHeaders", 431, "Request Header Fields Too Large", "headers_too_large",
     "the request headers are too many or too large"),
    ("UnsupportedTransferCoding", 501, "Not Implemented", "unsupported_transfer_coding",
     "the Transfer-Encoding is not supported; send chunked once, or a Content-Length"),
    ("ExpectationFailed", 417, "Expectation Failed", "expectation_failed", "the Expect header cannot be met"),
    ("ForbiddenProxyRequest", 403, "Forbidden", "forbidden", "proxy requests are not accepted"),
    ("InvalidChunkSize", 400, "Bad Request", "malformed_framing", "the chunked body's framing is invalid"),
    ("ChunkMissingTerminator", 400, "Bad Request", "malformed_framing", "the chunked body's framing is invalid"),
    ("InvalidChunkExtension", 400, "Bad Request", "malformed_framing", "the chunked body's framing is invalid"),
    ("InvalidRequestLine", 400, "Bad Request", "malformed_request_line", "the request line is malformed"),
    ("InvalidRequestMethod", 400, "Bad Request", "malformed_request_line", "the request method is malformed"),
    ("InvalidHTTPVersion", 400, "Bad Request", "malformed_request_line", "the HTTP version is not supported"),
    ("ObsoleteFolding", 400, "Bad Request", "malformed_header", "folded header lines are not accepted"),
    ("InvalidHeaderName", 400, "Bad Request", "malformed_header", "a header name is malformed"),
    ("InvalidHeader", 400, "Bad Request", "malformed_header",
     "a header is malformed or repeated (Content-Length, Transfer-Encoding, Host)"),
    ("InvalidSchemeHeaders", 400, "Bad Request", "malformed_header", "the forwarded scheme headers disagree"),
    ("InvalidProxyLine", 400, "Bad Request", "malformed_request", "the PROXY protocol line is malformed"),
    ("ParseException", 400, "Bad Request", "malformed_request", "the request could not be parsed"),
)
_INTERNAL = (500, "Internal Server Error", "internal_error", "internal error; see request_id")


def classify(exc: BaseException) -> tuple[int, str, str, str] | None:
    """(status, reason, code, message) for a client-caused parser error; None for anything else."""
    if isinstance(exc, http_errors.InvalidResponseHeader | http_errors.InvalidResponseHeaderName):
        return None  # the app sent a bad header: the server's fault
    names = {cls.__name__ for cls in type(exc).__mro__ if cls.__module__ == http_errors.__name__}
    for name, status, reason, code, message in _PARSER_ERRORS:
        if name in names:
            return status, reason, code, message
    if type(exc).__name__ == "SSLError":
        return 400, "Bad Request", "malformed_request", "TLS is not spoken here"
    return None


def json_error(status: int, reason: str, code: str, message: str, request_id: str) -> bytes:
    """A complete HTTP/1.1 response carrying the API's JSON error document; the connection closes."""
    body = json.dumps({"error": {"code": code, "message": message, "field": None}, "request_id": request_id},
                      separators=(",", ":")).encode()
    head = (f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n"
            f"X-Request-ID: {request_id}\r\n\r\n")
    return head.encode("latin-1") + body


class AttnmapWorker(SyncWorker):
    """Gunicorn's sync worker, answering parser errors in JSON and draining its backlog on SIGTERM."""

    _drain_started = False
    _busy = False

    def handle(self, listener: Any, client: Any, addr: Any) -> None:
        """Serve one connection, marked busy so that a drain never stops in the middle of one."""
        self._busy = True
        try:
            super().handle(listener, client, addr)
        finally:
            self._busy = False

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        """Answer what Gunicorn itself refuses with the API's JSON error, never its HTML page."""
        request_id = uuid.uuid4().hex
        known = classify(exc)
        if known is None:
            self.log.exception("error handling request (request_id %s)", request_id)
            status, reason, code, message = _INTERNAL
        else:
            status, reason, code, message = known
            peer = addr[0] if addr else ""
            self.log.warning("refused a malformed request from %s: %s (%s, request_id %s)",
                             peer, type(exc).__name__, status, request_id)
        try:
            write_nonblock(client, json_error(status, reason, code, message, request_id))
        except Exception:  # the client may already be gone
            self.log.debug("could not send the error answer")

    def handle_exit(self, sig: int, frame: Any) -> None:
        """SIGTERM: drain the backlog instead of stopping after the current request."""
        if self._drain_started:
            return
        self._drain_started = True
        window = drain_seconds(float(self.cfg.graceful_timeout))
        thread = threading.Thread(target=self._drain, args=(window,), name="attnmap-drain", daemon=True)
        thread.start()

    def _drain(self, window: float) -> None:
        """Keep serving while connections wait; stop after QUIET_S of empty backlog or at the window's end."""
        started = time.monotonic()
        quiet_since: float | None = None
        served_before = self.nr
        while time.monotonic() - started < window:
            now = time.monotonic()
            if self._busy or self._backlog_waiting() or self.nr != served_before:
                quiet_since, served_before = None, self.nr
            elif quiet_since is None:
                quiet_since = now
            elif now - quiet_since >= QUIET_S:
                break
            time.sleep(0.05)
        self.log.info("worker %s drained after %.1f s (%d requests served in all)", self.pid,
                      time.monotonic() - started, self.nr)
        self.alive = False
        with contextlib.suppress(OSError):
            os.write(self.PIPE[1], b"1")  # wake the main loop out of select()

    def _backlog_waiting(self) -> bool:
        """Whether a connection is waiting to be accepted on any listener (a zero-timeout select)."""
        try:
            ready, _, _ = select.select(self.sockets, [], [], 0)
        except (OSError, ValueError):
            return False
        return bool(ready)


def drain_seconds(graceful_timeout: float) -> float:
    """The drain window: ``ATTNMAP_DRAIN_S`` seconds, by default Gunicorn's graceful timeout less
    :data:`FINISH_MARGIN_S` (so the last request accepted has that long to finish before the kill)."""
    default = max(0.0, graceful_timeout - FINISH_MARGIN_S)
    try:
        return max(0.0, float(os.environ.get("ATTNMAP_DRAIN_S", default)))
    except ValueError:
        return default
