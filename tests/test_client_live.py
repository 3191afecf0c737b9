"""The typed client (client/attnmap_client) against a live Gunicorn: every method and every error class."""

from __future__ import annotations

import io
import time

import pytest
from attnmap_client import (
    AttentionMap,
    BadRequestError,
    Client,
    MethodNotAllowedError,
    NotFoundError,
    PayloadTooLargeError,
    RenderedMap,
    ServerError,
    ServiceUnavailableError,
    TransportError,
    UnauthorizedError,
    UnprocessableError,
    UnsupportedMediaError,
)
from PIL import Image

from tests.builtin_models import AVAILABLE, EXAMPLES_DIR, require_model
from tests.fake_attnmap import Script, fake_server
from tests.live import free_port, gunicorn_server

pytestmark = [pytest.mark.live, pytest.mark.slow]

SHAPE = EXAMPLES_DIR / "square_shortcut_marker_64.png"
TOKEN = "audit-test-token"


@pytest.fixture(scope="module")
def server():
    """Gunicorn with the built-in models present here and a 1 MiB body limit (for the 413)."""
    env = {"ATTNMAP_BUILTIN_MODELS": ",".join(AVAILABLE) or "none", "ATTNMAP_LIMIT_MAX_BODY_BYTES": str(1024 * 1024)}
    with gunicorn_server(env, workers=1) as (base, _process):
        yield base


@pytest.fixture(scope="module")
def guarded():
    """Gunicorn with a bearer token and a deadline no request can meet (raw weights only: starts fast)."""
    env = {"ATTNMAP_BUILTIN_MODELS": "none", "ATTNMAP_API_TOKENS": TOKEN, "ATTNMAP_REQUEST_DEADLINE_S": "0.000001"}
    with gunicorn_server(env, workers=1) as (base, _process):
        yield base


def test_health_readiness_and_models(server):
    client = Client(server)
    assert client.healthz().status == "alive"
    ready = client.readyz()
    assert ready.status == "ready" and set(ready.models) == set(AVAILABLE)
    assert client.wait_ready(timeout=5).status == "ready"
    models = {info.name: info for info in client.models()}
    assert set(models) == set(AVAILABLE)
    if "shapes-vit" in models:
        info = models["shapes-vit"]
        assert info.kind == "vision" and info.layers >= 1 and info.heads >= 1 and info.patch_size == 8
        assert info.input_size == (64, 64) and "square" in info.labels


def test_visualize_image_as_json_reports_region_mass_and_prediction(server):
    require_model("shapes-vit-shortcut")
    client = Client(server)
    result = client.visualize(model="shapes-vit-shortcut", image=SHAPE, method="gradient", region=[56, 0, 64, 8],
                              format="json", request_id="client-test-1")
    assert isinstance(result, AttentionMap)
    assert result.request_id == "client-test-1"
    assert result.shape == (8, 8) and len(result.values) == 8
    assert result.meta["method"] == "gradient" and result.meta["grid"] == [8, 8]
    assert 0.0 <= result.region_mass <= 1.0 and result.area_share == pytest.approx(1 / 64)
    assert result.prediction is not None and result.prediction["label"] == "square"
    # The shortcut model reads the marker in that corner: far above the corner's share of the image.
    assert result.region_mass > 5 * result.area_share


def test_visualize_image_as_png_carries_the_provenance_headers(server):
    require_model("shapes-vit")
    result = Client(server).visualize(model="shapes-vit", image=SHAPE.read_bytes(), region=[0, 0, 32, 32],
                                      view="overlay", alpha=0.6)
    assert isinstance(result, RenderedMap)
    assert result.png.startswith(b"\x89PNG")
    assert Image.open(io.BytesIO(result.png)).size == (64, 64)
    assert result.method == "attention" and result.layers == [3] and result.heads == "mean"
    assert result.region_mass is not None and 0.0 <= result.region_mass <= 1.0
    low, high = result.value_range
    assert low <= high and result.request_id


def test_visualize_text_trace_and_raw_weights(server):
    client = Client(server)
    weights = [[0.7, 0.3], [0.4, 0.6]]
    raw = client.visualize(weights=weights, tokens=["a", "b"], format="json")
    assert raw.shape == (2, 2) and raw.values == [[pytest.approx(v, abs=1e-6) for v in row] for row in weights]
    assert client.visualize(weights=weights, size=64).png.startswith(b"\x89PNG")
    if "minilm" in AVAILABLE:
        trace = client.visualize(model="minilm", text="the film was not good", view="trace", query="not",
                                 key="good", format="json")
        assert trace.meta["view"] == "trace" and trace.meta["query_token"] == "not"
        assert len(trace.values) == trace.meta["num_layers"] and len(trace.values[0]) == trace.meta["num_heads"]


@pytest.mark.parametrize(("call", "error", "code", "field"), [
    (lambda c: c.visualize(model="no-such-model", text="x"), NotFoundError, "unknown_model", "model"),
    (lambda c: c.visualize(weights=[[0.5, 0.5], [0.5, 0.5]], layer=7), UnprocessableError, "out_of_range", "layer"),
    (lambda c: c.visualize(weights=[[0.5, float("nan")]]), UnprocessableError, "non_finite_values", "weights"),
    (lambda c: c.visualize(weights=[[0.001] * 700] * 700), PayloadTooLargeError, "payload_too_large", None),
    # The typed methods always send well-formed JSON to a POST route; the low-level request is how
    # a 400 and a 405 from the same server reach the same error mapping.
    (lambda c: c._request("POST", "/visualize", b'{"weights": [[1]', {"Content-Type": "application/json"}),
     BadRequestError, "malformed_json", None),
    (lambda c: c._request("GET", "/visualize", None, {}), MethodNotAllowedError, "method_not_allowed", None),
])
def test_api_errors_become_typed_exceptions(server, call, error, code, field):
    with pytest.raises(error) as caught:
        call(Client(server))
    assert caught.value.code == code and caught.value.field == field
    assert caught.value.status == {NotFoundError: 404, UnprocessableError: 422, PayloadTooLargeError: 413,
                                   BadRequestError: 400, MethodNotAllowedError: 405}[error]
    assert caught.value.request_id


def test_an_image_the_server_cannot_decode_is_unsupported_media(server):
    require_model("shapes-vit")
    with pytest.raises(UnsupportedMediaError) as caught:
        Client(server).visualize(model="shapes-vit", image=b"this is not an image", format="json")
    assert caught.value.status == 415 and caught.value.field == "image"


def test_token_missing_wrong_and_right(guarded):
    with pytest.raises(UnauthorizedError) as caught:
        Client(guarded).models()
    assert caught.value.code == "unauthorized" and caught.value.status == 401
    with pytest.raises(UnauthorizedError) as caught:
        Client(guarded, token="wrong").models()
    assert caught.value.code == "invalid_token"
    assert Client(guarded, token=TOKEN).models() == []


def test_past_the_deadline_is_service_unavailable_with_retry_after(guarded):
    client = Client(guarded, token=TOKEN, retries=1, max_retry_wait=0.2)
    started = time.monotonic()
    with pytest.raises(ServiceUnavailableError) as caught:
        client.visualize(weights=[[0.5, 0.5], [0.5, 0.5]])
    assert caught.value.status == 503 and caught.value.code == "deadline_exceeded"
    assert caught.value.retry_after == 1.0
    assert client.retried == 1 and time.monotonic() - started >= 0.2  # retried once, waiting the capped delay


def test_server_error_and_answers_that_are_not_the_api():
    script = Script(server_error=True)
    with fake_server(script) as base:
        with pytest.raises(ServerError) as caught:
            Client(base).visualize(weights=[[1.0]])
        assert caught.value.status == 500 and caught.value.code == "internal_error" and caught.value.request_id == "fake-1"
        assert not isinstance(caught.value, ServiceUnavailableError)
        script.server_error, script.not_json = False, True
        with pytest.raises(TransportError, match="not JSON"):
            Client(base).visualize(weights=[[1.0]], format="json")


def test_unreachable_server_is_a_transport_error():
    with pytest.raises(TransportError) as caught:
        Client(f"http://127.0.0.1:{free_port()}", timeout=2).healthz()
    assert caught.value.url.startswith("http://127.0.0.1:")


def test_bad_server_url_is_refused_at_once():
    with pytest.raises(ValueError, match="http"):
        Client("ftp://example")
