"""Real nginx (deploy/nginx.conf) in front of real Gunicorn (gunicorn.conf.py), on loopback.

One stack for the whole module: 1 sync worker (so that "a slow client does not occupy the worker"
is observable), bearer auth and a CORS origin on, ProxyFix for one hop, no models (raw weights).
"""

from __future__ import annotations

import contextlib
import http.client
import re
import socket
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import requests

from tests.helpers import decode_png, require_binary
from tests.live import gunicorn_server
from tests.serving_support import access_record, nginx_server, raw_request

pytestmark = [pytest.mark.live, pytest.mark.slow]

TOKEN = "live-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ORIGIN = "https://viewer.example.org"
BODY = {"weights": np.random.default_rng(1).random((16, 16)).tolist(), "size": 128}
OVERSIZE = 17 * 1024 * 1024


class Stack:
    """Addresses and logs of the running processes."""

    def __init__(self, app_base: str, process, log: Path) -> None:
        self.app_base = app_base
        self.app_port = int(app_base.rsplit(":", 1)[1])
        self.master_pid = process.pid
        self.log = log
        self.edge_base = ""
        self.edge_port = 0


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("serving")
    log = workdir / "gunicorn.log"
    env = {"ATTNMAP_BUILTIN_MODELS": "none", "ATTNMAP_PROXY_HOPS": "1", "ATTNMAP_API_TOKENS": f"previous-{TOKEN},{TOKEN}",
           "ATTNMAP_CORS_ORIGINS": ORIGIN}
    with gunicorn_server(env, workers=1, log_path=log) as (base, process):
        yield Stack(base, process, log)


@pytest.fixture(scope="module")
def edge(stack, tmp_path_factory):
    nginx = require_binary("nginx")
    workdir = tmp_path_factory.mktemp("nginx")
    with nginx_server(nginx, f"127.0.0.1:{stack.app_port}", workdir) as base:
        stack.edge_base = base
        stack.edge_port = int(base.rsplit(":", 1)[1])
        yield stack


def test_png_through_nginx(edge):
    response = requests.post(f"{edge.edge_base}/visualize", json=BODY, headers=AUTH, timeout=30)
    assert response.status_code == 200, response.text[:300]
    assert response.headers["Content-Type"] == "image/png"
    assert decode_png(response.content).shape == (128, 128, 3)
    assert response.headers["Server"] == "nginx"  # server_tokens off: no version
    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["X-Request-ID"])  # nginx's $request_id reached the app


def test_client_address_comes_from_the_proxy_header_only(edge):
    """The client connects from 127.0.0.5; nginx connects to Gunicorn from 127.0.0.1."""
    request_id = f"addr-{uuid.uuid4().hex}"
    connection = http.client.HTTPConnection("127.0.0.1", edge.edge_port, timeout=30, source_address=("127.0.0.5", 0))
    try:
        # A client-written X-Forwarded-For must not become the client address.
        connection.request("GET", "/healthz", headers={"X-Request-ID": request_id, "X-Forwarded-For": "203.0.113.9"})
        assert connection.getresponse().status == 200
    finally:
        connection.close()
    record = access_record(edge.log, request_id)
    assert record["client"] == "127.0.0.5"
    assert record["peer"] == "127.0.0.1"
    assert "203.0.113.9" not in str(record)


def oversize_head(request_id: str, extra: str = "") -> bytes:
    return (f"POST /visualize HTTP/1.1\r\nHost: attnmap\r\nContent-Type: application/json\r\n"
            f"Content-Length: {OVERSIZE}\r\nX-Request-ID: {request_id}\r\n{extra}Connection: close\r\n\r\n").encode()


def test_oversize_body_gets_the_same_json_at_nginx_and_at_the_app(edge):
    request_id = f"big-{uuid.uuid4().hex}"
    auth = f"Authorization: Bearer {TOKEN}\r\n"
    at_nginx = raw_request("127.0.0.1", edge.edge_port, oversize_head(request_id, auth), b"[[")
    at_app = raw_request("127.0.0.1", edge.app_port, oversize_head(request_id, auth), b"[[")
    for status, headers, _body in (at_nginx, at_app):
        assert status == 413
        assert headers["content-type"] == "application/json"
        assert headers["x-request-id"] == request_id
    assert at_nginx[2] == at_app[2]  # byte for byte
    assert b'"code":"payload_too_large"' in at_nginx[2]


def test_oversize_chunked_body_is_refused_at_nginx(edge):
    def chunks():
        block = b" " * (1024 * 1024)
        for _ in range(OVERSIZE // len(block) + 1):
            yield block

    with contextlib.suppress(requests.ConnectionError):  # nginx may close while we still send
        response = requests.post(f"{edge.edge_base}/visualize", data=chunks(), timeout=30,
                                 headers={**AUTH, "Content-Type": "application/json"})
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "payload_too_large"
        return
    pytest.fail("nginx reset the connection instead of answering 413")


def trickle(port: int, stop: threading.Event, sent: list[int], length: int = 10_000) -> None:
    """A client that declares a body and sends a byte every 0.5 s until ``stop`` (bounded to 30 s)."""
    head = (f"POST /visualize HTTP/1.1\r\nHost: attnmap\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer {TOKEN}\r\nContent-Length: {length}\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(head)
        deadline = time.monotonic() + 30
        while not stop.is_set() and time.monotonic() < deadline and sent[0] < length:
            try:
                sock.sendall(b" ")
            except OSError:
                return
            sent[0] += 1
            stop.wait(0.5)


def run_with_trickle(port: int, action):
    """Run ``action()`` while a slow client trickles its body to ``port``."""
    stop, sent = threading.Event(), [0]
    thread = threading.Thread(target=trickle, args=(port, stop, sent), daemon=True)
    thread.start()
    try:
        time.sleep(1.5)  # the trickle is connected and has sent a few bytes
        assert thread.is_alive() and sent[0] >= 2
        return action()
    finally:
        stop.set()
        thread.join(10)


def test_slow_client_does_not_occupy_the_worker_behind_nginx(edge):
    def normal_requests():
        for _ in range(3):
            started = time.monotonic()
            response = requests.post(f"{edge.edge_base}/visualize", json=BODY, headers=AUTH, timeout=8)
            assert response.status_code == 200
            assert time.monotonic() - started < 8

    run_with_trickle(edge.edge_port, normal_requests)


def test_without_nginx_the_same_slow_client_holds_the_only_worker(edge):
    """The control for the test above: straight to Gunicorn, the one sync worker is stuck reading."""
    def blocked_request():
        with pytest.raises(requests.ReadTimeout):
            requests.post(f"{edge.app_base}/visualize", json=BODY, headers=AUTH, timeout=(2, 2))

    run_with_trickle(edge.app_port, blocked_request)
    # Once the slow client is gone, the worker serves again.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with contextlib.suppress(requests.RequestException):
            if requests.get(f"{edge.app_base}/healthz", timeout=5).status_code == 200:
                return
        time.sleep(0.2)
    pytest.fail("worker did not recover after the slow client left")


def test_auth_through_nginx(edge):
    missing = requests.post(f"{edge.edge_base}/visualize", json=BODY, timeout=30)
    assert missing.status_code == 401
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")
    assert missing.json()["error"]["code"] == "unauthorized"
    assert requests.post(f"{edge.edge_base}/visualize", json=BODY, headers=AUTH, timeout=30).status_code == 200
    assert requests.get(f"{edge.edge_base}/readyz", timeout=10).status_code == 200  # probes stay open


def test_cors_through_nginx(edge):
    allowed = requests.post(f"{edge.edge_base}/visualize", json=BODY, headers={**AUTH, "Origin": ORIGIN}, timeout=30)
    assert allowed.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "X-Attnmap-View" in allowed.headers["Access-Control-Expose-Headers"]
    other = requests.post(f"{edge.edge_base}/visualize", json=BODY,
                          headers={**AUTH, "Origin": "https://other.example"}, timeout=30)
    assert other.status_code == 200 and "Access-Control-Allow-Origin" not in other.headers
    preflight = requests.options(f"{edge.edge_base}/visualize", timeout=10,
                                 headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"})
    assert preflight.status_code == 204 and preflight.headers["Access-Control-Allow-Origin"] == ORIGIN


def test_metrics_count_a_request_just_made(stack):
    def visualize_200() -> float:
        text = requests.get(f"{stack.app_base}/metrics", timeout=10).text
        match = re.search(r'^attnmap_requests_total\{(?=[^}]*route="/visualize")(?=[^}]*status="200")[^}]*\} (\S+)$',
                          text, flags=re.MULTILINE)
        return float(match.group(1)) if match else 0.0

    before = visualize_200()
    assert requests.post(f"{stack.app_base}/visualize", json=BODY, headers=AUTH, timeout=30).status_code == 200
    assert visualize_200() == before + 1


def test_edge_hides_metrics(edge):
    response = requests.get(f"{edge.edge_base}/metrics", timeout=10)
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"


def mapped_libraries(pid: int) -> set[str]:
    """Basenames of the shared objects mapped into process ``pid``."""
    names = set()
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        path = line.split()[-1] if len(line.split()) >= 6 else ""
        if ".so" in path:
            names.add(Path(path).name)
    return names


def test_master_never_loads_torch_or_cuda(stack):
    """The master never imported torch (so it cannot have initialised CUDA); its worker did."""
    from tests.serving_support import worker_pids

    master = mapped_libraries(stack.master_pid)
    assert master, "could not read the master's memory map"
    assert not [name for name in master if re.match(r"lib(torch|c10|cuda|cudart|nvidia)", name)], sorted(master)
    (worker,) = worker_pids(stack.master_pid)
    assert any(name.startswith("libtorch") for name in mapped_libraries(worker))


def test_nginx_answers_json_when_no_worker_answers(tmp_path):
    from tests.live import free_port

    nginx = require_binary("nginx")
    with nginx_server(nginx, f"127.0.0.1:{free_port()}", tmp_path) as base:  # nothing listens there
        response = requests.post(f"{base}/visualize", json=BODY, timeout=10)
    assert response.status_code == 502
    assert response.headers["Content-Type"] == "application/json" and response.headers["Retry-After"] == "1"
    assert response.json()["error"]["code"] == "upstream_unavailable"
    assert response.json()["request_id"] == response.headers["X-Request-ID"]


# --- malformed framing through the real edge (issue 12) -----------------------------------------

# Which of the framing cases nginx refuses itself (its answer is the API's JSON error, from the
# error_page locations in deploy/nginx.conf) and which it normalises and passes on to Gunicorn.
NGINX_REFUSES = {
    "invalid-chunk-size": 400, "chunk-size-negative": 400, "chunk-missing-terminator": 400,
    "duplicate-content-length": 400, "signed-content-length": 400, "repeated-transfer-encoding": 400,
    "transfer-encoding-chunked-twice": 501, "unknown-transfer-coding": 501, "two-host-headers": 400,
    "nul-in-header": 400, "header-too-large": 431, "space-before-colon": 400,
}
# Reach Gunicorn: bare LF (nginx rewrites the request with CRLF: a 200), 60 headers (nginx has no
# count limit; Gunicorn's 50 answers 431), a 5 kB query string (under nginx's 8 kB buffers, over
# Gunicorn's 4094-byte request line: 414). Both answers are JSON.
NGINX_PASSES = {"bare-lf": 200, "too-many-headers": 431, "query-string-too-long": 414}
# Not HTTP/1.x at all: nginx answers an HTTP/0.9 request with a bare body and no status line.
NGINX_HTTP09 = {"http-0.9-line"}


def _refusals(log: Path) -> int:
    return log.read_text(errors="replace").count("refused a malformed request")


@pytest.mark.parametrize("name", sorted(set(NGINX_REFUSES) | set(NGINX_PASSES)))
def test_malformed_framing_through_nginx_gets_json(edge, name):
    from tests.framing import FRAMINGS

    framing = next(f for f in FRAMINGS if f.name == name)
    refused_before = _refusals(edge.log)
    status, headers, body = raw_request("127.0.0.1", edge.edge_port, framing.raw)
    expected = NGINX_REFUSES.get(name) or NGINX_PASSES[name]
    assert status == expected, (name, status, body[:200])
    assert headers["content-type"].startswith("application/json"), (name, headers, body[:200])
    assert b"<html" not in body
    if name in NGINX_REFUSES:
        assert _refusals(edge.log) == refused_before, f"{name} reached Gunicorn"
    if status >= 400:
        document = json_body(body)
        assert document["error"]["code"] and document["request_id"]


def test_framing_table_covers_every_case():
    from tests.framing import FRAMINGS

    assert {f.name for f in FRAMINGS} == set(NGINX_REFUSES) | set(NGINX_PASSES) | NGINX_HTTP09


def json_body(body: bytes) -> dict:
    import json

    return json.loads(body)
