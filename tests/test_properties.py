"""Property tests (hypothesis) for decoding, reduction and rendering through the API."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from app.core.reduce import fuse_heads, rollout
from app.render.normalize import normalize
from tests.helpers import decode_png

# The ``app`` fixture is built once per test and shared by its examples (like a module-level app, but per test).
SHARED_APP = [HealthCheck.function_scoped_fixture]
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, *SHARED_APP])

shapes = st.one_of(
    st.tuples(st.integers(1, 24), st.integers(1, 24)),
    st.tuples(st.integers(1, 4), st.integers(1, 10), st.integers(1, 10)),
    st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, 8), st.integers(1, 8)),
)
finite = st.floats(allow_nan=False, allow_infinity=False, width=32)


@FAST
@given(arrays(np.float32, shapes, elements=finite), st.integers(16, 700), st.booleans())
def test_any_finite_in_cap_array_gives_a_png_of_the_asked_size(app, array, size, as_npy):
    client = app.test_client()
    if as_npy:
        buffer = io.BytesIO()
        np.save(buffer, array)
        response = client.post("/visualize", data={"weights": (io.BytesIO(buffer.getvalue()), "w.npy"), "size": str(size)},
                               content_type="multipart/form-data")
    else:
        response = client.post("/visualize", json={"weights": array.tolist(), "size": size})
    assert response.status_code == 200, response.data[:200]
    pixels = decode_png(response.data)
    assert max(pixels.shape[:2]) == size


@FAST
@given(arrays(np.float64, shapes, elements=st.floats(allow_nan=True, allow_infinity=True)).filter(lambda a: not np.isfinite(a).all()))
def test_any_nan_or_inf_gives_422(app, array):
    client = app.test_client()
    buffer = io.BytesIO()
    np.save(buffer, array)
    response = client.post("/visualize", data={"weights": (io.BytesIO(buffer.getvalue()), "w.npy")}, content_type="multipart/form-data")
    assert response.status_code == 422
    assert response.get_json()["error"]["code"] == "non_finite_values"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**30), 10**30) | st.floats() | st.text(max_size=5),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=30,
)
field_names = st.sampled_from(["weights", "layer", "head", "method", "query", "view", "size", "colormap", "alpha", "tokens",
                               "format", "annotate", "normalize", "vmin", "vmax", "discard_ratio", "key", "model", "text"])


@settings(max_examples=300, deadline=None, suppress_health_check=SHARED_APP)
@given(st.dictionaries(field_names, json_values, max_size=6))
def test_nothing_ever_gives_a_server_error(app, body):
    client = app.test_client()
    response = client.post("/visualize", json=body)
    assert response.status_code < 500, (body, response.data[:300])
    if response.status_code != 200:
        assert response.get_json()["error"]["code"]


@FAST
@given(arrays(np.float64, st.tuples(st.integers(1, 4), st.integers(1, 4), st.integers(2, 8)).map(lambda s: (s[0], s[1], s[2], s[2])),
              elements=st.floats(0, 1)), st.sampled_from(["mean", "max", "min"]), st.floats(0, 0.95))
def test_rollout_rows_are_stochastic_for_any_attention(layers, fusion, discard):
    result = rollout(layers, fusion, discard)
    assert np.isfinite(result).all()
    np.testing.assert_allclose(result.sum(-1), 1.0, atol=1e-9)


@FAST
@given(arrays(np.float64, st.tuples(st.integers(1, 6), st.integers(1, 6), st.integers(1, 6)), elements=st.floats(0, 1)))
def test_fusion_keeps_shape_and_is_finite(heads):
    for mode in ("mean", "max", "min"):
        fused = fuse_heads(heads, mode)
        assert fused.shape == heads.shape[1:] and np.isfinite(fused).all()


@FAST
@given(arrays(np.float32, st.tuples(st.integers(1, 20), st.integers(1, 20)), elements=finite))
def test_normalize_never_yields_nan(values):
    scaled, low, high = normalize(values)
    assert np.isfinite(scaled).all() and (scaled >= 0).all() and (scaled <= 1).all()
    assert low <= high


@pytest.mark.parametrize("mode", ["minmax", "none"])
def test_normalize_constant(mode):
    scaled, _, _ = normalize(np.full((3, 3), 7.0), mode, 0.0, 1.0)
    assert np.isfinite(scaled).all()


_MULTIPART_PIECES = st.sampled_from([
    b"--b0undary", b"--b0undary--", b"\r\n", b"\r\n\r\n", b"Content-Disposition: form-data", b'; name="layer"',
    b'; name="image"; filename="a.png"', b"; filename*=UTF-8''%E2%9C%93", b'; name="w\\"x"', b"Content-Type: image/png",
    b" ", b";", b"\xff\xfe", b"0", b"-1", b"\x89PNG\r\n\x1a\n", b":", b"\t",
])


@FAST
@given(st.lists(st.one_of(_MULTIPART_PIECES, st.binary(max_size=8)), max_size=40))
def test_no_multipart_body_gives_a_server_error(app, pieces):
    body = b"".join(pieces)
    response = app.test_client().post("/visualize", data=body,
                                      headers={"Content-Type": "multipart/form-data; boundary=b0undary"})
    assert response.status_code in (400, 404, 413, 415, 422), (response.status_code, body[:200])
    assert response.get_json()["error"]["code"]


# --- issue 12: region values, overflowing rollouts, arbitrary Unicode in every text field ----------

any_float = st.one_of(st.floats(), st.integers(-(2**70), 2**70), st.sampled_from([1e308, -1e308, 2**31, 2**63, 1e400]))


def _small_png() -> str:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 56, 3), dtype=np.uint8)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


PNG_B64 = _small_png()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(any_float, min_size=4, max_size=4), st.booleans())
def test_any_region_is_a_png_or_a_422(shapes_app, region, as_form):
    """Huge, infinite, NaN or inverted regions: never a 5xx; the answer is a PNG or a documented 422."""
    client = shapes_app.test_client()
    if as_form:
        response = client.post("/visualize", data={"image": (io.BytesIO(base64.b64decode(PNG_B64)), "a.png"), "model": "shapes-vit",
                                                   "region": ",".join(repr(float(v)) if isinstance(v, float) else str(v) for v in region)},
                               content_type="multipart/form-data")
    else:
        text = "[" + ", ".join(("NaN" if v != v else "Infinity" if v == float("inf") else "-Infinity" if v == float("-inf") else repr(v))
                               for v in region) + "]"
        body = (f'{{"image": "{PNG_B64}", "model": "shapes-vit", "region": {text}}}').encode()
        response = client.post("/visualize", data=body, content_type="application/json")
    assert response.status_code in (200, 422), (region, response.data[:300])
    if response.status_code == 422:
        assert response.get_json()["error"]["code"] in ("out_of_range", "invalid_value", "invalid_type"), response.get_json()
    else:
        assert response.data.startswith(b"\x89PNG")


F32_LIMIT = 3.0000000054977558e38  # 3e38 as float32 represents it
stacks = st.tuples(st.integers(1, 12), st.integers(1, 3), st.integers(2, 6)).map(lambda s: (s[0], s[1], s[2], s[2]))


@FAST
@given(arrays(np.float32, stacks, elements=st.floats(-F32_LIMIT, F32_LIMIT, width=32, allow_subnormal=False)),
       st.sampled_from(["json", "png", "annotate"]))
def test_rollout_over_any_finite_weights_is_finite_or_a_422(app, weights, output):
    """Rollout over finite weights (negative, cancelling, near float32 max): finite values or a 422."""
    body: dict = {"weights": weights.tolist(), "method": "rollout"}
    body |= {"format": "json"} if output == "json" else {"annotate": True, "query": 0} if output == "annotate" else {}
    response = app.test_client().post("/visualize", json=body)
    assert response.status_code in (200, 422), response.data[:300]
    if response.status_code == 422:
        assert response.get_json()["error"]["code"] in ("negative_attention", "numeric_overflow")
    elif output == "json":
        document = json.loads(response.data)
        assert np.isfinite(np.asarray(document["values"], dtype=np.float64)).all()
        assert all(np.isfinite(document["meta"]["value_range"]))


any_text = st.text(st.characters(codec=None, min_codepoint=0, max_codepoint=0x10FFFF), max_size=40)
TEXT_FIELDS = ("model", "text", "text_pair", "query", "key", "colormap", "target_text", "tokens", "<key>")


def _escaped(value: str) -> str:
    """A JSON string literal that keeps lone surrogates as \\u escapes (json.dumps with ensure_ascii does)."""
    return json.dumps(value, ensure_ascii=True)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, *SHARED_APP])
@given(st.sampled_from(TEXT_FIELDS), any_text, st.sampled_from(["png", "json", "annotate", "trace"]))
def test_any_unicode_in_any_text_field_is_never_a_server_error(app, field, value, output):
    """Arbitrary code points, lone surrogates included, in every text field: never a 5xx, always encodable."""
    weights = '"weights": [[[[0.6, 0.4], [0.3, 0.7]]]]'
    extra = {"png": "", "json": ', "format": "json"', "annotate": ', "annotate": true',
             "trace": ', "view": "trace", "query": 0, "key": 1, "annotate": true'}[output]
    if field == "tokens":
        member = f'"tokens": [{_escaped(value)}, "b"]'
    elif field == "<key>":
        member = f"{_escaped(value)}: 1"
    else:
        member = f'"{field}": {_escaped(value)}'
    body = "{" + weights + extra + ", " + member + "}"
    response = app.test_client().post("/visualize", data=body.encode(), content_type="application/json")
    assert response.status_code < 500, (field, value, response.data[:300])
    if response.status_code >= 400:
        document = response.get_json()
        assert document["error"]["code"]
    # whatever happened, the worker still answers
    assert app.test_client().post("/visualize", json={"weights": [[0.5, 0.5], [0.5, 0.5]]}).status_code == 200


@FAST
@given(any_text, any_text)
def test_any_unicode_in_multipart_text_fields(app, text, token):
    data = {"weights": (io.BytesIO(_npy_eye()), "w.npy"), "tokens": json.dumps([token or "a", "b"]), "annotate": "true"}
    response = app.test_client().post("/visualize", data=data, content_type="multipart/form-data")
    assert response.status_code < 500, (token, response.data[:300])


def _npy_eye() -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.eye(2, dtype=np.float32))
    return buffer.getvalue()
