"""The raw-weights API through Flask's test client: success paths and every error status."""

import io
import json
import struct

import numpy as np
import pytest
import torch
from safetensors.numpy import save as save_numpy
from safetensors.torch import save as save_torch

from app.http.state import state
from tests.helpers import assert_error, decode_png

SOFTMAX = (np.exp(np.random.default_rng(0).normal(size=(2, 3, 5, 5)))).astype(np.float64)
SOFTMAX /= SOFTMAX.sum(-1, keepdims=True)


def test_png_heatmap_from_json_matrix(client):
    response = client.post("/visualize", json={"weights": SOFTMAX[0, 0].tolist(), "tokens": list("abcde"), "size": 320})
    assert response.status_code == 200 and response.mimetype == "image/png"
    assert int(response.headers["Content-Length"]) == len(response.data)
    assert decode_png(response.data).shape == (320, 320, 3)
    assert response.headers["X-Attnmap-Layers"] == "0"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert "render;dur=" in response.headers["Server-Timing"]


@pytest.mark.parametrize("head", [0, 2, "mean", "max", "min"])
def test_json_values_match_reduction(client, head):
    response = client.post("/visualize", json={"weights": SOFTMAX.tolist(), "layer": -1, "head": head, "format": "json"})
    assert response.status_code == 200
    body = response.get_json()
    layer = SOFTMAX[1]
    if isinstance(head, int):
        expected = layer[head]
    elif head == "mean":
        expected = layer.mean(0)
    else:
        fused = layer.max(0) if head == "max" else layer.min(0)
        expected = fused / fused.sum(-1, keepdims=True)
    np.testing.assert_allclose(body["values"], expected, atol=1e-6)
    assert body["shape"] == [5, 5]
    assert body["meta"]["layers"] == [1] and body["meta"]["heads"] == head


def test_rollout_and_query_row(client):
    body = client.post("/visualize", json={"weights": SOFTMAX.tolist(), "method": "rollout", "query": 0, "format": "json"}).get_json()
    from app.core.reduce import rollout

    np.testing.assert_allclose(body["values"], rollout(SOFTMAX.astype(np.float32).astype(np.float64))[0], atol=1e-6)
    assert body["meta"]["layers"] == [0, 1] and body["meta"]["query"] == 0
    strip = client.post("/visualize", json={"weights": SOFTMAX.tolist(), "query": 2, "size": 256})
    assert decode_png(strip.data).shape[:2] == (32, 256)
    bar = client.post("/visualize", json={"weights": SOFTMAX.tolist(), "query": 2, "annotate": True, "tokens": list("abcde")})
    assert bar.status_code == 200


def test_grid_view_has_one_panel_per_head(client):
    response = client.post("/visualize", json={"weights": SOFTMAX.tolist(), "view": "grid", "layer": 0, "format": "json"})
    body = response.get_json()
    assert body["shape"] == [3, 5, 5] and body["meta"]["panels"] == 3
    png = client.post("/visualize", json={"weights": SOFTMAX.tolist(), "view": "grid", "size": 300})
    assert png.status_code == 200 and decode_png(png.data).shape[1] <= 300


def test_trace_view_for_raw_weights(client):
    body = client.post("/visualize", json={"weights": SOFTMAX.tolist(), "view": "trace", "query": 1, "key": "c",
                                           "tokens": list("abcde"), "format": "json"}).get_json()
    np.testing.assert_allclose(body["values"], SOFTMAX[:, :, 1, 2], atol=1e-6)


def test_annotated_heatmap_with_mathtext_like_labels(client):
    response = client.post("/visualize", json={"weights": SOFTMAX[0, 0].tolist(), "annotate": True,
                                               "tokens": ["$x^$", "$\\frac{1}$", "a", "b", "c"]})
    assert response.status_code == 200 and decode_png(response.data).shape[0] == 512


def test_non_square_matrix_renders_but_rollout_refuses(client):
    weights = np.random.default_rng(0).random((3, 7)).tolist()
    assert client.post("/visualize", json={"weights": weights}).status_code == 200
    assert_error(client.post("/visualize", json={"weights": weights, "method": "rollout"}), 422, "not_square")


def test_multipart_npy_and_safetensors_uploads(client):
    array = SOFTMAX.astype(np.float32)
    for dtype in ("<f2", "<f4", "<f8", ">f4"):
        buffer = io.BytesIO()
        np.save(buffer, array.astype(dtype), allow_pickle=False)
        response = client.post("/visualize", data={"weights": (io.BytesIO(buffer.getvalue()), "a.npy"), "format": "json",
                                                   "layer": "1", "head": "0"}, content_type="multipart/form-data")
        assert response.status_code == 200, (dtype, response.data)
        np.testing.assert_allclose(response.get_json()["values"], array[1, 0], atol=1e-3)
    for data in (save_numpy({"attn": array}), save_numpy({"attn": array.astype(np.float64)}),
                 save_torch({"attn": torch.from_numpy(array).to(torch.bfloat16)}),
                 save_torch({"attn": torch.from_numpy(array).half()})):
        response = client.post("/visualize", data={"weights": (io.BytesIO(data), "a.safetensors"), "format": "json"},
                               content_type="multipart/form-data")
        assert response.status_code == 200, response.data
        np.testing.assert_allclose(response.get_json()["values"], array[1].mean(0), atol=1e-2)


def test_uploads_that_are_refused(client):
    def post(data, name="w.bin", **form):
        return client.post("/visualize", data={"weights": (io.BytesIO(data), name), **form}, content_type="multipart/form-data")

    buffer = io.BytesIO()
    np.save(buffer, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    assert_error(post(buffer.getvalue()), 422, "unsupported_dtype", "weights")
    buffer = io.BytesIO()
    np.save(buffer, np.ones((4, 4), dtype=np.int32))
    assert_error(post(buffer.getvalue()), 422, "unsupported_dtype")
    buffer = io.BytesIO()
    np.save(buffer, np.ones((4, 4), dtype=np.complex64))
    assert_error(post(buffer.getvalue()), 422, "unsupported_dtype")
    header = b"{'descr': '<f4', 'fortran_order': False, 'shape': (100000, 100000), }"
    claim = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header) + 1) + header + b"\n" + b"\x00" * 64
    assert_error(post(claim), 422, "tensor_too_large")
    buffer = io.BytesIO()
    np.save(buffer, np.ones((4, 4), dtype=np.float32))
    assert_error(post(buffer.getvalue()[:-8]), 422, "shape_mismatch")
    assert_error(post(save_numpy({"a": SOFTMAX[0, 0], "b": SOFTMAX[0, 0]})), 422, "invalid_tensor_count")
    bad_header = json.dumps({"a": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 999]}}).encode()
    assert_error(post(struct.pack("<Q", len(bad_header)) + bad_header + b"\x00" * 16), 422, "malformed_file")
    assert_error(post(struct.pack("<Q", 10**12) + b"{}"), 422, "malformed_file")
    buffer = io.BytesIO()
    torch.save({"x": torch.ones(2)}, buffer)  # a .pt file is a zip of pickles: refused unread
    assert_error(post(buffer.getvalue(), "x.pt"), 415, "unsupported_file_type")
    assert_error(post(b"\x80\x04K\x01."), 415, "unsupported_file_type")
    assert_error(post(b"hello world"), 415, "unsupported_file_type")


@pytest.mark.parametrize(("body", "status", "code", "field"), [
    (b"{bad", 400, "malformed_json", None),
    (b"", 400, "malformed_json", None),
    (b"\xff\xfe{}", 400, "malformed_json", None),
    (b'{"weights": [[1, 2], [3, 4]], "layer": 1, "layer": 0}', 400, "duplicate_key", "layer"),
    (b"[" * 5000 + b"]" * 5000, 400, "nesting_too_deep", None),
    (b'{"weights": [[1, 2], [3, ' + b"9" * 5000 + b"]]}", 400, "malformed_json", None),
    (b"[1, 2]", 422, "invalid_body", None),
    (b'{"weights": [[NaN, 1], [1, 1]]}', 422, "non_finite_values", "weights"),
    (b'{"weights": [[Infinity, 1], [1, 1]]}', 422, "non_finite_values", "weights"),
    (b'{"weights": [[1e400, 1], [1, 1]]}', 422, "non_finite_values", "weights"),
    (b'{"weights": [[1e300, 1], [1, 1]]}', 422, "value_out_of_range", "weights"),
    (b'{"weights": [[1, 2], [3, ' + b"9" * 400 + b"]]}", 422, "value_out_of_range", "weights"),
    (b'{"weights": [[1, 2], [3]]}', 422, "ragged_array", "weights"),
    (b'{"weights": [[true, 1], [1, 1]]}', 422, "invalid_element_type", "weights"),
    (b'{"weights": [["0.5", 1], [1, 1]]}', 422, "invalid_element_type", "weights"),
    (b'{"weights": [[null, 1], [1, 1]]}', 422, "invalid_element_type", "weights"),
    (b'{"weights": []}', 422, "empty_tensor", "weights"),
    (b'{"weights": [[]]}', 422, "empty_tensor", "weights"),
    (b'{"weights": [0.1, 0.2]}', 422, "invalid_rank", "weights"),
    (b'{"weights": 0.5}', 422, "invalid_type", "weights"),
    (b'{"weights": [[[[[0.1]]]]]}', 422, "invalid_rank", "weights"),
    (b'{"weights": [[1, 2], [3, 4]], "layer": "1"}', 422, "invalid_type", "layer"),
    (b'{"weights": [[1, 2], [3, 4]], "layer": 1.5}', 422, "invalid_type", "layer"),
    (b'{"weights": [[1, 2], [3, 4]], "layer": true}', 422, "invalid_type", "layer"),
    (b'{"weights": [[1, 2], [3, 4]], "layer": 3}', 422, "out_of_range", "layer"),
    (b'{"weights": [[1, 2], [3, 4]], "layer": 1000000000000000000000000000000}', 422, "out_of_range", "layer"),
    (b'{"weights": [[[1, 2], [3, 4]]], "head": 1}', 422, "out_of_range", "head"),
    (b'{"weights": [[1, 2], [3, 4]], "head": -1}', 422, "out_of_range", "head"),
    (b'{"weights": [[1, 2], [3, 4]], "head": "avg"}', 422, "invalid_value", "head"),
    (b'{"weights": [[1, 2], [3, 4]], "method": "gradient"}', 422, "invalid_value", "method"),
    (b'{"weights": [[1, 2], [3, 4]], "method": "flow"}', 422, "invalid_value", "method"),
    (b'{"weights": [[1, 2], [3, 4]], "colormap": "viridis; rm -rf"}', 422, "invalid_colormap", "colormap"),
    (b'{"weights": [[1, 2], [3, 4]], "alpha": 2}', 422, "out_of_range", "alpha"),
    (b'{"weights": [[1, 2], [3, 4]], "size": 70000}', 422, "output_too_large", "size"),
    (b'{"weights": [[1, 2], [3, 4]], "size": 4}', 422, "out_of_range", "size"),
    (b'{"weights": [[1, 2], [3, 4]], "annotate": "yes"}', 422, "invalid_type", "annotate"),
    (b'{"weights": [[1, 2], [3, 4]], "tokens": ["a"]}', 422, "tokens_mismatch", "tokens"),
    (b'{"weights": [[1, 2], [3, 4]], "frobnicate": 1}', 422, "unknown_field", "frobnicate"),
    (b'{"weights": [[1, 2], [3, 4]], "view": "overlay"}', 422, "invalid_value", "view"),
    (b'{"weights": [[1, 2], [3, 4]], "normalize": "none", "vmin": 1, "vmax": 0}', 422, "invalid_value", "vmax"),
    (b'{"weights": [[1, 2], [3, 4]], "text": "hi"}', 422, "conflicting_sources", "text"),
    (b'{"weights": [[1, 2], [3, 4]], "model": "minilm"}', 422, "conflicting_sources", "model"),
    (b'{"layer": 1}', 422, "missing_source", None),
    (b'{"text": "hello"}', 422, "missing_field", "model"),
    (b'{"text": "hello", "model": "../../etc/passwd"}', 404, "unknown_model", "model"),
    (b'{"text": "hello", "model": "http://169.254.169.254/latest"}', 404, "unknown_model", "model"),
])
def test_json_errors(client, body, status, code, field):
    response = client.post("/visualize", data=body, content_type="application/json")
    assert_error(response, status, code, field)
    assert client.post("/visualize", json={"weights": [[0.5, 0.5], [0.2, 0.8]]}).status_code == 200


@pytest.mark.parametrize("name", ["../../etc/passwd", "/etc/passwd", "http://169.254.169.254/latest", "file:///etc/passwd",
                                  "models/builtin/shapes-vit", "~root/.ssh/id_rsa"])
def test_model_names_are_keys_never_paths_or_urls(client, name):
    """A path or URL as a model name is an unknown key: nothing is opened, fetched or loaded for it."""
    from unittest import mock

    with mock.patch("builtins.open", side_effect=AssertionError("a file was opened")), \
            mock.patch("socket.create_connection", side_effect=AssertionError("a connection was made")), \
            mock.patch("models.registry.open_model", side_effect=AssertionError("a model was loaded")):
        response = client.post("/visualize", json={"text": "hello", "model": name})
    body = assert_error(response, 404, "unknown_model", "model")
    assert "root:" not in json.dumps(body)  # no file content came back
    assert response.headers["Content-Type"] == "application/json"


@pytest.mark.parametrize("app", [{"limits": {"max_panels": 2, "max_tensor_elements": 1000}}], indirect=True)
def test_too_many_panels_and_elements(client):
    assert_error(client.post("/visualize", json={"weights": SOFTMAX.tolist(), "view": "grid"}), 422, "too_many_panels", "view")
    big = np.zeros((40, 40)).tolist()
    assert_error(client.post("/visualize", json={"weights": big}), 422, "tensor_too_large", "weights")


def test_transport_errors(client):
    assert_error(client.post("/visualize", data="{}", content_type="text/plain"), 415, "unsupported_media_type")
    assert_error(client.post("/visualize", data="{}"), 415, "unsupported_media_type")
    assert_error(client.post("/visualize", data=b"\x1f\x8b", content_type="application/json",
                             headers={"Content-Encoding": "gzip"}), 415, "unsupported_content_encoding")
    response = client.get("/visualize")
    assert_error(response, 405, "method_not_allowed")
    assert "POST" in response.headers["Allow"]
    assert_error(client.post("/visualise", json={}), 404, "not_found")
    assert_error(client.post("/visualize", data={"weights": "[[1]]"}, content_type="multipart/form-data"), 422, "invalid_type", "weights")
    assert_error(client.post("/visualize", data={"other": (io.BytesIO(b"x"), "x")}, content_type="multipart/form-data"),
                 422, "unknown_field", "other")


@pytest.mark.parametrize("app", [{"limits": {"max_body_bytes": 1000, "max_form_parts": 3}}], indirect=True)
def test_body_and_form_limits(client):
    assert_error(client.post("/visualize", data=b"{" + b" " * 2000 + b"}", content_type="application/json"), 413, "payload_too_large")
    many = {f"f{i}": "1" for i in range(10)}
    assert_error(client.post("/visualize", data=many, content_type="multipart/form-data"), 413, "payload_too_large")


def test_not_ready_is_503_with_retry_after(app, client):
    state(app).ready = False
    response = client.post("/visualize", json={"weights": [[1.0]]})
    assert_error(response, 503, "not_ready")
    assert response.headers["Retry-After"]
    assert_error(client.get("/readyz"), 503, "not_ready")
    assert client.get("/healthz").status_code == 200


def test_unexpected_error_is_a_generic_500(app, client, monkeypatch):
    import app.http.routes as routes

    def explode(*args, **kwargs):
        raise RuntimeError("secret internal detail /work/main/app")

    monkeypatch.setattr(routes, "run", explode)
    body = assert_error(client.post("/visualize", json={"weights": [[1.0]]}), 500, "internal_error")
    assert "secret" not in json.dumps(body)


def test_service_endpoints(client):
    assert client.get("/healthz").get_json() == {"status": "alive"}
    assert client.get("/readyz").get_json()["status"] == "ready"
    assert client.get("/models").get_json() == {"models": []}
    spec = client.get("/openapi.yaml")
    assert spec.status_code == 200 and b"openapi: 3" in spec.data


def test_request_id_is_kept_or_made(client):
    response = client.post("/visualize", json={"weights": [[1.0]]}, headers={"X-Request-ID": "abc-123"})
    assert response.headers["X-Request-ID"] == "abc-123"
    response = client.post("/visualize", json={"weights": [[1.0]]}, headers={"X-Request-ID": "bad id <script>"})
    assert response.headers["X-Request-ID"] != "bad id" and len(response.headers["X-Request-ID"]) == 32


@pytest.mark.parametrize("app", [{"request_deadline_s": 0.0}], indirect=True)
def test_a_request_past_the_deadline_is_a_503(client):
    response = client.post("/visualize", json={"weights": [[0.5, 0.5], [0.5, 0.5]]})
    assert_error(response, 503, "deadline_exceeded")
    assert response.headers["Retry-After"]
