"""Serving layers inside one process (Flask test client): metrics, access log, auth, CORS, ProxyFix, draining."""

from __future__ import annotations

import json
import logging
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from app.http.auth import token_matches
from app.http.factory import create_app
from app.http.state import state
from app.ops.logging_setup import JsonFormatter
from app.ops.serving import WORKER_BOOT_ERROR, exit_on_load_failure, worker_started
from models.registry import ModelLoadError, ModelRegistry

ROOT = Path(__file__).resolve().parent.parent

TOKENS = ("old-token-0123456789abcdef", "new-token-0123456789abcdef")
ORIGIN = "https://viewer.example.org"
WEIGHTS = {"weights": [[0.25, 0.75], [0.5, 0.5]], "size": 32}


class Records(logging.Handler):
    """Collects attnmap.* records and their formatted lines."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []
        self.lines: list[str] = []
        self.setFormatter(JsonFormatter())

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self.lines.append(self.format(record))

    def access(self) -> list[dict]:
        return [json.loads(line) for line in self.lines if '"logger":"attnmap.access"' in line]


@pytest.fixture
def records():
    handler = Records()
    logger = logging.getLogger("attnmap")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


def make_app(**overrides):
    return create_app({"builtin_models": (), **overrides})


def metric_value(text: str, name: str, **labels: str) -> float:
    """One sample of the Prometheus text exposition (0 when absent)."""
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            found = dict(re.findall(r'(\w+)="([^"]*)"', line.split(" ")[0]))
            if all(found.get(key) == value for key, value in labels.items()):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


# --- metrics ----------------------------------------------------------------------------------------


def test_metrics_count_requests_stages_and_rejections():
    client = make_app().test_client()
    before = client.get("/metrics").get_data(as_text=True)
    assert client.post("/visualize", json=WEIGHTS).status_code == 200
    assert client.post("/visualize", json={"weights": [[1.0]], "size": 1}).status_code == 422
    assert client.get("/no/such/path").status_code == 404
    response = client.get("/metrics")
    assert response.status_code == 200 and response.mimetype == "text/plain"
    after = response.get_data(as_text=True)

    def delta(name: str, **labels: str) -> float:
        return metric_value(after, name, **labels) - metric_value(before, name, **labels)

    assert delta("attnmap_requests_total", route="/visualize", method="POST", status="200") == 1
    assert delta("attnmap_requests_total", route="/visualize", method="POST", status="422") == 1
    assert delta("attnmap_requests_total", route="<unmatched>", method="GET", status="404") == 1
    assert delta("attnmap_rejected_requests_total", code="out_of_range", status="422") == 1
    assert delta("attnmap_rejected_requests_total", code="not_found", status="404") == 1
    for stage in ("decode", "reduce", "render", "encode"):
        assert delta("attnmap_stage_duration_seconds_count", stage=stage) >= 1, stage
    assert delta("attnmap_request_duration_seconds_count", route="/visualize") == 2


def test_metrics_report_model_load_seconds():
    registry = ModelRegistry()
    registry.load_seconds["unit-model"] = 1.25
    client = create_app({"builtin_models": ()}, registry=registry).test_client()
    text = client.get("/metrics").get_data(as_text=True)
    assert metric_value(text, "attnmap_model_load_seconds", model="unit-model") == 1.25


# --- access log -------------------------------------------------------------------------------------


def test_access_log_is_one_json_line_with_ids_sizes_and_timings(records):
    client = make_app().test_client()
    response = client.post("/visualize", json=WEIGHTS, headers={"X-Request-ID": "req-42"})
    assert response.status_code == 200
    (entry,) = records.access()
    assert entry["request_id"] == "req-42" and entry["method"] == "POST" and entry["path"] == "/visualize"
    assert entry["status"] == 200 and entry["bytes"] == len(response.data)
    assert entry["client"] == "127.0.0.1" and entry["duration_ms"] > 0
    assert set(entry["stages_ms"]) >= {"decode", "reduce", "render", "encode"}


def test_access_log_escapes_control_characters_and_logs_no_secrets(records):
    client = make_app(api_tokens=TOKENS).test_client()
    client.get("/bad%0a%1b[31mpath%0d{\"forged\":1}", headers={"Authorization": f"Bearer {TOKENS[0]}"})
    client.post("/visualize", json={"weights": [[0.123456789, 1.0]], "size": 32},
                headers={"Authorization": f"Bearer {TOKENS[1]}"})
    client.post("/visualize", json=WEIGHTS, headers={"Authorization": "Bearer wrong-secret-value"})
    assert len(records.access()) == 3
    for line in records.lines:
        assert "\n" not in line and "\r" not in line and "\x1b" not in line
        assert TOKENS[0] not in line and TOKENS[1] not in line and "wrong-secret-value" not in line
        assert "0.123456789" not in line  # no payload
    assert records.access()[0]["path"].startswith("/bad\n\x1b[31mpath")  # kept, but escaped on the wire


# --- auth ---------------------------------------------------------------------------------------------


def test_auth_off_by_default():
    assert make_app().test_client().post("/visualize", json=WEIGHTS).status_code == 200


def test_auth_requires_one_of_the_tokens():
    client = make_app(api_tokens=TOKENS).test_client()
    missing = client.post("/visualize", json=WEIGHTS)
    assert missing.status_code == 401 and missing.headers["WWW-Authenticate"] == 'Bearer realm="attnmap"'
    assert missing.json["error"]["code"] == "unauthorized" and missing.json["request_id"]
    wrong = client.post("/visualize", json=WEIGHTS, headers={"Authorization": "Bearer not-the-token"})
    assert wrong.status_code == 401 and wrong.json["error"]["code"] == "invalid_token"
    assert 'error="invalid_token"' in wrong.headers["WWW-Authenticate"]
    basic = client.post("/visualize", json=WEIGHTS, headers={"Authorization": f"Basic {TOKENS[0]}"})
    assert basic.status_code == 401
    for token in TOKENS:  # rotation: both are valid
        assert client.post("/visualize", json=WEIGHTS, headers={"Authorization": f"bearer {token}"}).status_code == 200
    assert client.get("/models").status_code == 401
    assert client.get("/no/such/route").status_code == 401  # closed by default: no route map for strangers


def test_auth_leaves_probes_metrics_contract_and_page_open():
    client = make_app(api_tokens=TOKENS).test_client()
    for path in ("/healthz", "/readyz", "/metrics", "/openapi.yaml", "/", "/assets/favicon.svg", "/examples"):
        assert client.get(path).status_code == 200, path


def test_token_comparison_checks_every_token():
    from app.http.auth import _digest

    digests = [_digest(token) for token in TOKENS]
    assert token_matches(TOKENS[1], digests) and not token_matches(TOKENS[1][:-1], digests)
    assert not token_matches("", digests)


# --- CORS ---------------------------------------------------------------------------------------------


def test_cors_allows_nothing_by_default():
    response = make_app().test_client().post("/visualize", json=WEIGHTS, headers={"Origin": ORIGIN})
    assert response.status_code == 200 and "Access-Control-Allow-Origin" not in response.headers


def test_cors_allow_list_and_exposed_headers():
    client = make_app(cors_origins=(ORIGIN,)).test_client()
    allowed = client.post("/visualize", json=WEIGHTS, headers={"Origin": ORIGIN})
    assert allowed.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "Access-Control-Allow-Credentials" not in allowed.headers
    exposed = {name.strip() for name in allowed.headers["Access-Control-Expose-Headers"].split(",")}
    assert {"X-Request-ID", "X-Attnmap-View", "X-Attnmap-Value-Range", "Server-Timing"} <= exposed
    assert "Origin" in allowed.headers["Vary"]
    other = client.post("/visualize", json=WEIGHTS, headers={"Origin": "https://evil.example"})
    assert other.status_code == 200 and "Access-Control-Allow-Origin" not in other.headers


def test_cors_preflight_is_answered_before_auth():
    client = make_app(cors_origins=(ORIGIN,), api_tokens=TOKENS).test_client()
    preflight = {"Origin": ORIGIN, "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization, content-type"}
    response = client.options("/visualize", headers=preflight)
    assert response.status_code == 204
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "Authorization" in response.headers["Access-Control-Allow-Headers"]
    refused = client.options("/visualize", headers={**preflight, "Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in refused.headers
    assert client.options("/nope", headers=preflight).status_code == 404


# --- ProxyFix -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("hops", "expected"), [(0, "10.0.0.5"), (1, "198.51.100.7"), (2, "203.0.113.9")])
def test_client_address_trusts_exactly_the_configured_hops(records, hops, expected):
    client = make_app(proxy_hops=hops).test_client()
    client.get("/healthz", headers={"X-Forwarded-For": "203.0.113.9, 198.51.100.7"},
               environ_base={"REMOTE_ADDR": "10.0.0.5"})
    assert records.access()[-1]["client"] == expected


# --- lifecycle ----------------------------------------------------------------------------------------


def test_sigterm_marks_the_worker_draining_then_calls_gunicorn(records):
    app = make_app()
    client = app.test_client()
    assert client.get("/readyz").status_code == 200
    calls = []
    original = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, lambda signum, frame: calls.append(signum))  # stands in for Gunicorn's
    try:
        worker_started(type("Worker", (), {"wsgi": app})())
        signal.raise_signal(signal.SIGTERM)
    finally:
        signal.signal(signal.SIGTERM, original)
    assert calls == [signal.SIGTERM]
    assert state(app).draining
    response = client.get("/readyz")
    assert response.status_code == 503 and response.json["error"]["code"] == "draining"
    assert client.get("/healthz").status_code == 200


def test_model_load_failure_exits_with_worker_boot_error(records):
    with pytest.raises(SystemExit) as exit_info:
        exit_on_load_failure(ModelLoadError("ghost-vit", "model directory does not exist"))
    assert exit_info.value.code == WORKER_BOOT_ERROR == 3
    (record,) = [r for r in records.records if r.levelno == logging.CRITICAL]
    assert record.model == "ghost-vit" and "ghost-vit" in record.getMessage()


def test_load_deadline_ends_a_hung_load_with_worker_boot_error_naming_the_model():
    script = ("import time\n"
              "from app.ops.serving import load_deadline\n"
              "from models.registry import loading_now\n"
              "loading_now[:] = ['slow-vit']\n"
              "with load_deadline(0.5):\n"
              "    time.sleep(60)\n")
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == WORKER_BOOT_ERROR  # the master halts
    assert time.monotonic() - started < 30
    record = json.loads(result.stderr.strip().splitlines()[-1])
    assert (record["level"], record["model"], record["error"]) == ("CRITICAL", "slow-vit", "ModelLoadTimeout")


def test_load_deadline_is_cancelled_when_the_load_finishes_in_time():
    """A load that finishes before the deadline disarms it: the process lives on past the deadline."""
    script = ("import time\n"
              "from app.ops.serving import load_deadline\n"
              "with load_deadline(0.2):\n"
              "    pass\n"
              "time.sleep(0.8)\n"
              "print('alive')\n")
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout.strip()) == (0, "alive"), result.stderr[-500:]
