"""Catalogue, part 2 (issue 12): the classes a hostile client found after part 1, through live Gunicorn.

Each class is closed when every case gets its documented answer, nothing in the server log is a
traceback or a worker timeout, no worker was replaced, and a valid request right after succeeds.
Classes: unbounded labels (stall), region values, rollout overflow, lone surrogates, framing,
unclear answers, output caps, /metrics cardinality; shutdown drains queued requests.
"""

from __future__ import annotations

import base64
import io
import json
import os
import select
import signal
import socket
import subprocess
import time

import numpy as np
import pytest
import requests
from PIL import Image

from tests.catalogue import LEAKS, Case, check
from tests.framing import FRAMINGS, VALID_BODY
from tests.live import GUNICORN, ROOT, free_port, gunicorn_server, stop, wait_until_ready
from tests.serving_support import raw_request, worker_pids

pytestmark = pytest.mark.live

J = {"Content-Type": "application/json"}
M = [[0.7, 0.3], [0.4, 0.6]]
STACK = np.full((2, 2, 2, 2), 0.5).tolist()
MB = 1_000_000


def _png_b64(height: int = 48, width: int = 64) -> str:
    pixels = np.random.default_rng(3).integers(0, 255, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _bad_crc_png() -> bytes:
    data = bytearray(base64.b64decode(_png_b64()))
    data[29] ^= 0xFF  # the IHDR chunk's CRC
    return bytes(data)


def _truncated_jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (4000, 4000, 3), dtype=np.uint8)).save(buffer, format="JPEG", quality=5)
    data = buffer.getvalue()
    return data[: data.find(b"\xff\xda") + 200] + b"\xff\xd9"  # header claims 4000x4000; ~1 KB of data


def _overflowing_rollout() -> list:
    """Finite float32 weights whose rows nearly cancel: renormalising multiplies by ~1e6 per layer."""
    weights = np.abs(np.random.default_rng(0).random((12, 1, 6, 6))) * 1e36
    weights[:, :, :, 0] = -weights[:, :, :, 1:].sum(-1) * 0.999999
    return weights.tolist()


IMAGE = _png_b64()
ROLLOUT = _overflowing_rollout()
V = "shapes-vit"
FORM = "multipart/form-data; boundary=b0undary"


def _form(*parts: tuple[str, bytes]) -> bytes:
    body = b"".join(b'--b0undary\r\nContent-Disposition: form-data; name="' + name.encode() + b'"\r\n\r\n' + value + b"\r\n"
                    for name, value in parts)
    return body + b"--b0undary--\r\n"


STALL = [
    Case("trace-title-400k-label", "stall", 200, None, png=True,
         json={"weights": STACK, "view": "trace", "query": 0, "key": 1, "tokens": ["x" * 400_000, "y"], "annotate": True}),
    Case("trace-by-token-text-400k", "stall", 200, None, png=True,
         json={"weights": STACK, "view": "trace", "query": "x" * 400_000, "key": "y", "tokens": ["x" * 400_000, "y"],
               "annotate": True}),
    Case("heatmap-1m-label", "stall", 200, None, png=True, json={"weights": M, "annotate": True, "tokens": ["x" * MB, "y"]}),
    Case("bar-1m-label", "stall", 200, None, png=True, json={"weights": M, "annotate": True, "query": 0, "tokens": ["y", "x" * MB]}),
    Case("512-labels-of-2k", "stall", 200, None, png=True,
         json={"weights": np.full((512, 512), 1 / 512).tolist(), "annotate": True, "tokens": [f"{i}" + "w" * 2000 for i in range(512)]}),
    Case("multipart-250k-label", "stall", 200, None, png=True, files={"weights": ("w.npy", _npy(np.eye(2, dtype=np.float32)))},
         form={"annotate": "true", "tokens": json.dumps(["x" * 250_000, "y"])}),
    Case("tokens-on-text-not-ignored", "stall", 422, "not_applicable", form={"text": "hi", "model": "minilm", "tokens": '["a"]'}),
]

REGION = [
    Case("json-1e300", "region", 422, "out_of_range", json={"image": IMAGE, "model": V, "region": [0, 0, 1e300, 10]}),
    Case("json-2-to-the-40", "region", 422, "out_of_range", json={"image": IMAGE, "model": V, "region": [0, 0, 2**40, 10]}),
    Case("json-2-to-the-64", "region", 422, "out_of_range", json={"image": IMAGE, "model": V, "region": [0, 0, 2**64, 10]}),
    Case("json-minus-1e7", "region", 422, "out_of_range", json={"image": IMAGE, "model": V, "region": [-1e7, 0, 10, 10]}),
    Case("json-infinity", "region", 422, "invalid_value", headers=J,
         data=(f'{{"image": "{IMAGE}", "model": "{V}", "region": [0, 0, Infinity, 10]}}').encode()),
    Case("json-1e400", "region", 422, "invalid_value", headers=J,
         data=(f'{{"image": "{IMAGE}", "model": "{V}", "region": [0, 0, 1e400, 10]}}').encode()),
    Case("json-nan", "region", 422, "invalid_value", headers=J,
         data=(f'{{"image": "{IMAGE}", "model": "{V}", "region": [NaN, 0, 10, 10]}}').encode()),
    Case("form-1e999", "region", 422, "invalid_value", files={"image": ("a.png", base64.b64decode(IMAGE))},
         form={"model": V, "region": "0,0,1e999,10"}),
    Case("form-inf", "region", 422, "invalid_value", files={"image": ("a.png", base64.b64decode(IMAGE))},
         form={"model": V, "region": "-inf,0,10,10"}),
    Case("form-9e18", "region", 422, "out_of_range", files={"image": ("a.png", base64.b64decode(IMAGE))},
         form={"model": V, "region": "0,0,9223372036854775808,10"}),
    Case("far-outside-within-bound", "region", 200, None, png=True,
         json={"image": IMAGE, "model": V, "region": [-999_999, -999_999, 999_999, 999_999]}),
    Case("edge-beyond-image", "region", 200, None, png=True, json={"image": IMAGE, "model": V, "region": [10, 10, 900_000, 40]}),
    Case("on-text", "region", 422, "not_applicable", json={"text": "hi there", "model": "minilm", "region": [0, 0, 1, 1]}),
    Case("on-weights", "region", 422, "not_applicable", json={"weights": M, "region": [0, 0, 1, 1]}),
]

ROLLOUT_CASES = [
    Case("overflow-json", "rollout", 422, "negative_attention", json={"weights": ROLLOUT, "method": "rollout", "format": "json"}),
    Case("overflow-annotate-query", "rollout", 422, "negative_attention",
         json={"weights": ROLLOUT, "method": "rollout", "annotate": True, "query": 0}),
    Case("overflow-png", "rollout", 422, "negative_attention", json={"weights": ROLLOUT, "method": "rollout"}),
    Case("huge-non-negative", "rollout", 200, None,
         json={"weights": (np.random.default_rng(1).random((12, 2, 6, 6)) * 3e38).tolist(), "method": "rollout", "format": "json"}),
    Case("huge-non-negative-annotated-query", "rollout", 200, None, png=True,
         json={"weights": (np.random.default_rng(1).random((12, 2, 6, 6)) * 3e38).tolist(), "method": "rollout",
               "annotate": True, "query": 0}),
]


def _surrogate(field_json: str, base: str = '"weights": [[0.7, 0.3], [0.4, 0.6]]') -> bytes:
    return ("{" + base + ", " + field_json + "}").encode()


SURROGATES = [
    Case("tokens-annotate", "surrogate", 422, "invalid_text", headers=J,
         data=_surrogate('"annotate": true, "tokens": ["\\ud800", "b"]')),
    Case("tokens-json-output", "surrogate", 422, "invalid_text", headers=J,
         data=_surrogate('"format": "json", "tokens": ["a", "\\udfff"]')),
    Case("query", "surrogate", 422, "invalid_text", headers=J, data=_surrogate('"query": "\\ud800", "tokens": ["a", "b"]')),
    Case("trace-key", "surrogate", 422, "invalid_text", headers=J,
         data=_surrogate('"view": "trace", "query": 0, "key": "\\udc00"', base='"weights": [[[[0.5, 0.5], [0.5, 0.5]]]]')),
    Case("text", "surrogate", 422, "invalid_text", headers=J, data=b'{"text": "a\\ud800b", "model": "minilm"}'),
    Case("text-pair", "surrogate", 422, "invalid_text", headers=J, data=b'{"text": "ab", "text_pair": "\\ud83d", "model": "minilm"}'),
    Case("model", "surrogate", 422, "invalid_text", headers=J, data=b'{"text": "ab", "model": "\\ud800"}'),
    Case("unknown-key", "surrogate", 422, "invalid_text", headers=J, data=_surrogate('"\\ud800": 1')),
    Case("nested-in-tokens-key", "surrogate", 422, "invalid_text", headers=J, data=_surrogate('"tokens": [{"\\udead": 1}, "b"]')),
    Case("valid-pair-is-fine", "surrogate", 200, None, png=True, headers=J,
         data=_surrogate('"annotate": true, "tokens": ["\\ud83d\\ude00", "b"]')),
    Case("multipart-cesu8", "surrogate", 400, "malformed_multipart", headers={"Content-Type": FORM},
         data=_form(("text", b"a\xed\xa0\x80b"), ("model", b"minilm"))),
]

UNCLEAR = [
    Case("vmin-1e400", "unclear", 422, "invalid_value", headers=J, data=_surrogate('"normalize": "none", "vmin": -1e400')),
    Case("vmax-infinity", "unclear", 422, "invalid_value", headers=J, data=_surrogate('"normalize": "none", "vmax": Infinity')),
    Case("vmax-form-inf", "unclear", 422, "invalid_value", form={"text": "hi", "model": "minilm", "normalize": "none", "vmax": "inf"}),
    Case("alpha-nan", "unclear", 422, "invalid_value", headers=J, data=_surrogate('"alpha": NaN')),
    Case("discard-ratio-nan", "unclear", 422, "invalid_value", headers=J, data=_surrogate('"method": "rollout", "discard_ratio": NaN')),
    Case("text-pair-on-weights", "unclear", 422, "not_applicable", json={"weights": M, "text_pair": "x"}),
    Case("text-pair-on-image", "unclear", 422, "not_applicable", json={"image": IMAGE, "model": V, "text_pair": "x"}),
    Case("target-text-on-weights", "unclear", 422, "not_applicable", json={"weights": M, "target_text": "x"}),
    Case("exclude-sink-on-image", "unclear", 422, "not_applicable", json={"image": IMAGE, "model": V, "exclude_sink": True}),
    Case("exclude-sink-on-image-form", "unclear", 422, "not_applicable", files={"image": ("a.png", base64.b64decode(IMAGE))},
         form={"model": V, "view": "grid", "exclude_sink": "true"}),
    Case("png-bad-header-crc", "unclear", 422, "corrupt_image", files={"image": ("a.png", _bad_crc_png())}, form={"model": V}),
    Case("jpeg-truncated-claims-4000px", "unclear", 422, "corrupt_image", files={"image": ("a.jpg", _truncated_jpeg())}, form={"model": V}),
    Case("unknown-key-1mb", "unclear", 422, "unknown_field", json={"weights": M, "k" * MB: 1}),
    Case("unknown-token-query-1mb", "unclear", 422, "unknown_token", json={"weights": M, "query": "q" * MB, "tokens": ["a", "b"]}),
    Case("long-text-pair", "unclear", 422, "too_many_tokens", json={"text": "short", "text_pair": "word " * 1900, "model": "minilm"}),
    Case("size-2-to-the-64", "unclear", 422, "out_of_range", json={"weights": M, "size": 2**64}),
    Case("size-2-to-the-64-form", "unclear", 422, "output_too_large", form={"text": "hi", "model": "minilm", "size": str(2**64)}),
]

OUTPUT = [
    Case("json-output-over-cap", "output", 422, "output_too_large",
         json={"weights": np.random.default_rng(0).random((1, 1, 1000, 1000)).round(1).tolist(), "format": "json"}),
    Case("json-output-under-cap", "output", 200, None,
         json={"weights": np.random.default_rng(0).random((1, 1, 512, 512)).round(1).tolist(), "format": "json"}),
    Case("annotated-4096", "output", 200, None, png=True,
         json={"weights": np.random.default_rng(0).random((64, 64)).tolist(), "annotate": True, "size": 4096,
               "tokens": [f"t{i}" for i in range(64)]}),
]

CASES = STALL + REGION + ROLLOUT_CASES + SURROGATES + UNCLEAR + OUTPUT
LOG_FORBIDDEN = ("Traceback", "WORKER TIMEOUT", "Worker exiting", "unhandled error", "Booting worker")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    log = tmp_path_factory.mktemp("hostile") / "gunicorn.log"
    with gunicorn_server({"ATTNMAP_BUILTIN_MODELS": "minilm,shapes-vit"}, workers=1, log_path=log) as (base, process):
        booted = log.read_text(errors="replace").count("Booting worker")
        yield base, process, log, booted


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_case(server, case):
    base, process, _, _ = server
    before = worker_pids(process.pid)
    check(base, case)
    assert worker_pids(process.pid) == before, "a worker died or was replaced"


@pytest.mark.parametrize("framing", FRAMINGS, ids=[f.name for f in FRAMINGS])
def test_framing_gets_json_from_gunicorn(server, framing):
    """What Gunicorn's parser refuses is answered in the API's JSON, never its HTML page."""
    base, _process, _, _ = server
    port = int(base.rsplit(":", 1)[1])
    status, headers, body = raw_request("127.0.0.1", port, framing.raw)
    assert status == framing.gunicorn_status, (framing.name, status, body[:200])
    assert headers["content-type"].startswith("application/json"), (framing.name, headers, body[:200])
    document = json.loads(body)
    assert document["error"]["code"] == framing.gunicorn_code, (framing.name, document)
    for leak in LEAKS:
        assert leak.encode() not in body
    assert requests.post(base + "/visualize", data=VALID_BODY, headers=J, timeout=30).status_code == 200


def test_metrics_labels_come_from_a_closed_set(server):
    """3,000 invented methods and error paths leave /metrics the size it was."""
    base, _, _, _ = server
    session = requests.Session()
    for i in range(20):  # every route and status once, so the baseline holds what the flood could add
        session.request(f"X{i}", base + "/visualize", timeout=10)
    size = len(session.get(base + "/metrics", timeout=10).content)
    for i in range(3000):
        session.request(f"M{i:04d}", base + ("/visualize" if i % 2 else f"/nope/{i}"), timeout=10)
    grown = len(session.get(base + "/metrics", timeout=10).content)
    assert grown - size < 2000, (size, grown)


def test_log_holds_no_traceback_and_no_restart(server):
    """After the whole module: no traceback, timeout or worker restart in the server's log."""
    base, _, log, booted = server
    assert requests.get(base + "/readyz", timeout=5).status_code == 200
    text = log.read_text(errors="replace")
    assert text.count("Booting worker") == booted
    for forbidden in LOG_FORBIDDEN[:-1]:
        assert forbidden not in text, forbidden


# --- shutdown ----------------------------------------------------------------------------------

# The drain test holds each worker on a request whose body arrives late, not on an expensive one:
# a worker reading a body is busy for exactly as long as the client withholds it, whatever the
# machine's load (an expensive request once ran past the 30 s graceful timeout on an overloaded
# machine and was killed, which read as a drop). The queued requests are connected with plain
# sockets before SIGTERM: connect() returns once the kernel has put the connection in the listen
# backlog, so "queued at SIGTERM" is a fact, not a hope about thread start-up times.
DRAIN_BODY = json.dumps({"weights": M, "format": "json"}).encode()
DRAIN_REQUEST = (b"POST /visualize HTTP/1.1\r\nHost: attnmap\r\nContent-Type: application/json\r\n"
                 b"Connection: close\r\nContent-Length: " + str(len(DRAIN_BODY)).encode() + b"\r\n\r\n" + DRAIN_BODY)
HOLD_S = 2.0  # how long after SIGTERM the busy workers keep waiting for their bodies
QUEUED = 8


def _connect(port: int, data: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=90)
    sock.sendall(data)
    return sock


def _answered_yet(sock: socket.socket) -> bool:
    """Whether any byte of an answer (or the connection's end) has arrived, without waiting."""
    readable, _, _ = select.select([sock], [], [], 0)
    return bool(readable)


def _status(sock: socket.socket) -> int | str:
    """The answer's status, or what became of the connection (a reset, or closed unanswered)."""
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except OSError as exc:
        return type(exc).__name__
    finally:
        sock.close()
    head = b"".join(chunks).split(b"\r\n", 1)[0].split()
    return int(head[1]) if len(head) > 1 and head[1].isdigit() else "closed unanswered"


def _drain_run(tmp_path, extra_args: tuple[str, ...] = ()) -> tuple[list[int | str], list[int | str], bool, int, str]:
    """2 workers held busy, QUEUED requests in the backlog, SIGTERM; returns (busy statuses,
    queued statuses, whether any queued answer came before the busy ones were released, the
    server's exit status, its log)."""
    log = tmp_path / "gunicorn.log"
    port = free_port()
    env = {**os.environ, "ATTNMAP_BIND": f"127.0.0.1:{port}", "ATTNMAP_WORKERS": "2", "ATTNMAP_BUILTIN_MODELS": "none"}
    with open(log, "wb") as out:
        process = subprocess.Popen([GUNICORN, "-c", "gunicorn.conf.py", *extra_args], cwd=ROOT, env=env, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until_ready(f"http://127.0.0.1:{port}/readyz", process)
        deadline = time.monotonic() + 60
        while log.read_text(errors="replace").count("worker ready") < 2 and time.monotonic() < deadline:
            time.sleep(0.1)  # both workers in their accept loop, so each takes one of the busy requests
        split = len(DRAIN_REQUEST) - 10
        busy = [_connect(port, DRAIN_REQUEST[:split]) for _ in range(2)]  # each worker waits for 10 bytes
        time.sleep(0.5)  # both accepted (no CPU needed: the workers are idle)
        queued = [_connect(port, DRAIN_REQUEST) for _ in range(QUEUED)]  # in the backlog, complete
        process.send_signal(signal.SIGTERM)
        time.sleep(HOLD_S)
        early = any(_answered_yet(sock) for sock in queued)
        for sock in busy:
            sock.sendall(DRAIN_REQUEST[split:])
        busy_statuses = [_status(sock) for sock in busy]
        queued_statuses = [_status(sock) for sock in queued]
        process.wait(60)
        return busy_statuses, queued_statuses, early, process.returncode, log.read_text(errors="replace")
    finally:
        stop(process)


def test_sigterm_drains_requests_queued_behind_busy_workers(tmp_path):
    """SIGTERM while every worker is busy and more requests wait in the backlog: all are answered 200.

    The queued requests were waiting (no answer) until the busy ones were released after SIGTERM;
    they are served; then the server exits 0 on its own, each worker saying it drained.
    """
    busy, queued, early, returncode, text = _drain_run(tmp_path)
    assert not early, "a queued request was answered while both workers were busy: it was not queued"
    assert busy == [200, 200], busy
    assert queued == [200] * QUEUED, queued
    assert returncode == 0
    assert text.count("drained after") == 2 and "Traceback" not in text


def test_the_drain_test_catches_a_worker_that_drops_its_backlog(tmp_path):
    """The same run on Gunicorn's stock sync worker, which stops after its current request: the queued
    requests are reset. This is what the test above would see if the drain broke."""
    busy, queued, _, _, _ = _drain_run(tmp_path, ("--worker-class", "sync"))
    assert busy == [200, 200], busy
    assert queued.count(200) < QUEUED, queued
