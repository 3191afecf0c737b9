"""A stand-in attnmap server (stdlib http.server in a thread) for what a real one will not do on cue.

It answers ``/readyz``, ``/models`` and ``POST /visualize`` like the API (a map document with
``region_mass``), and a test script decides per request: 503 with ``Retry-After`` for the first
N requests, a 500, a delay, or a body that is not JSON. It counts what it was asked.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MODELS = [{"name": "fake-vit", "kind": "vision", "family": "vit", "layers": 2, "heads": 2, "device": "cpu",
           "dtype": "float32", "input_size": [64, 64], "patch_size": 8, "prefix_tokens": 1, "labels": ["a", "b"]}]


@dataclass
class Script:
    """How the fake answers ``POST /visualize``."""

    unavailable_first: int = 0
    """Answer this many requests with 503 + ``Retry-After`` first."""
    retry_after: str = "1"
    server_error: bool = False
    not_json: bool = False
    delay_s: float = 0.0
    visualize_calls: int = 0
    bodies: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _handler(script: Script) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: tests read the counters, not a log."""

        def _send(self, status: int, document: Any, headers: dict[str, str] | None = None, raw: bytes | None = None) -> None:
            body = raw if raw is not None else json.dumps(document).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("X-Request-ID", "fake-request")
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            if self.path == "/readyz":
                self._send(200, {"status": "ready", "models": [m["name"] for m in MODELS]})
            elif self.path == "/healthz":
                self._send(200, {"status": "alive"})
            elif self.path == "/models":
                self._send(200, {"models": MODELS})
            else:
                self._send(404, {"error": {"code": "not_found", "message": "no such route", "field": None},
                                 "request_id": "fake-request"})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            with script.lock:
                script.visualize_calls += 1
                number = script.visualize_calls
                script.bodies.append({k: v for k, v in body.items() if k != "image"})
            if script.delay_s:
                time.sleep(script.delay_s)
            if number <= script.unavailable_first:
                self._send(503, {"error": {"code": "not_ready", "message": "models are still loading", "field": None},
                                 "request_id": f"fake-{number}"}, {"Retry-After": script.retry_after})
                return
            if script.server_error:
                self._send(500, {"error": {"code": "internal_error", "message": "internal error; see request_id",
                                           "field": None}, "request_id": f"fake-{number}"})
                return
            if script.not_json:
                self._send(200, None, raw=b"<html>a proxy page</html>")
                return
            meta = {"model": body.get("model"), "method": body.get("method") or "attention", "view": "overlay",
                    "layers": [1], "heads": "mean", "value_range": [0.0, 1.0], "semantics": "attention",
                    "prediction": {"label": "a", "index": 0, "score": 0.9}}
            if body.get("region") is not None:
                meta.update(region=body["region"], region_mass=0.25, region_area_share=0.0156)
            self._send(200, {"values": [[0.25, 0.75]], "shape": [1, 2], "meta": meta})

    return Handler


@contextlib.contextmanager
def fake_server(script: Script) -> Iterator[str]:
    """Serve ``script`` on a free loopback port; yields the base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(script))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="fake-attnmap", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
