"""The hostile-input catalogue: each case is one bad or edge request and the answer it must get.

Cases are sent to a real Gunicorn server. After every case the suite checks the contract's
invariants: the documented status and error code, a JSON body without internals, and that a
valid request right after it still succeeds on the same worker.
"""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import requests

LEAKS = ("Traceback", "site-packages", "/work/", "/usr/lib", 'File "', "torch.", "numpy.", "Error:", "/tmp/")
VALID = {"weights": [[0.7, 0.3], [0.4, 0.6]]}


@dataclass(frozen=True)
class Case:
    """One catalogue entry: a request and its expected answer."""

    name: str
    group: str
    status: int
    code: str | None
    json: Any = None
    data: bytes | None = None
    files: dict[str, Any] | None = None
    form: dict[str, str] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    method: str = "POST"
    path: str = "/visualize"
    raw: bytes | None = None  # a raw HTTP request for what requests cannot send
    png: bool = False  # a 200 that must be a PNG

    @property
    def id(self) -> str:
        return f"{self.group}:{self.name}"


def send(base: str, case: Case) -> requests.Response | tuple[int, bytes]:
    """Send a case; raw cases return (status, body) read from the socket."""
    if case.raw is not None:
        return send_raw(base, case.raw)
    files = None
    if case.form is not None or case.files is not None:
        # Form fields go as multipart parts without a filename (requests would url-encode a dict).
        files = [(name, (None, value)) for name, value in (case.form or {}).items()]
        files += list(case.files.items()) if isinstance(case.files, dict) else list(case.files or [])
    return requests.request(case.method, base + case.path, json=case.json, data=case.data, files=files,
                            headers=case.headers, timeout=60)


def send_raw(base: str, payload: bytes) -> tuple[int, bytes]:
    """Write raw bytes to the server and parse the status line of the answer."""
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        # The server may answer (413) and close before the whole payload is sent: that is fine.
        with contextlib.suppress(OSError):
            sock.sendall(payload)
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_WR)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except OSError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    answer = b"".join(chunks)
    if not answer:
        return 0, b""
    status = int(answer.split(b" ", 2)[1])
    return status, answer.partition(b"\r\n\r\n")[2]


def check(base: str, case: Case, valid: Callable[[], requests.Response] | None = None) -> None:
    """Assert the case's answer and the invariants that hold after every case."""
    result = send(base, case)
    if isinstance(result, tuple):
        status, body = result
        assert status == case.status, (case.id, status, body[:300])
        for leak in LEAKS:
            assert leak.encode() not in body, (case.id, leak)
    else:
        assert result.status_code == case.status, (case.id, result.status_code, result.text[:300])
        if case.png:
            assert result.headers["Content-Type"] == "image/png" and result.content.startswith(b"\x89PNG")
        elif case.status >= 400:
            assert result.headers["Content-Type"].startswith("application/json"), case.id
            body = result.json()
            assert set(body) == {"error", "request_id"}, case.id
            assert set(body["error"]) >= {"code", "message", "field"}
            if case.code is not None:
                assert body["error"]["code"] == case.code, (case.id, body)
            for leak in LEAKS:
                assert leak not in result.text, (case.id, leak, result.text[:300])
    follow_up = valid() if valid else requests.post(base + "/visualize", json=VALID, timeout=30)
    assert follow_up.status_code == 200, (case.id, "the next valid request failed", follow_up.text[:200])


def dumps(value: Any) -> bytes:
    """Compact JSON bytes."""
    return json.dumps(value).encode()
