"""Text + the built-in MiniLM through the HTTP API: values, views, token options, limits, hygiene."""

import json

import numpy as np
import pytest

from app.http.state import state
from app.render.annotated import readable_labels
from models import capture
from models.hooks import hooks_on
from tests.helpers import assert_error, decode_png
from tests.text_models import count_calls, minilm_path, reference_attentions, reference_inputs, reference_model, reference_rollout

NEGATION = {"text": "He never smoked.", "model": "minilm"}
PIECES = "Unbelievable tokenization of smokers"


@pytest.fixture(scope="module")
def adapter(minilm_app):
    return state(minilm_app).registry.get("minilm")


@pytest.fixture(scope="module")
def reference():
    """The same checkpoint, loaded directly (eager), for output_attentions references."""
    return reference_model(minilm_path())


@pytest.fixture(scope="module")
def expected(reference):
    """output_attentions for the long test sentence."""
    return reference_attentions(reference, reference_inputs(minilm_path(), "He never smoked, though his grandfather smoked."))


def post(client, **fields):
    return client.post("/visualize", json=fields)


def values_of(client, **fields):
    response = post(client, format="json", **fields)
    assert response.status_code == 200, response.get_json()
    document = response.get_json()
    return np.asarray(document["values"]), document["meta"]


@pytest.mark.parametrize(("layer", "head"), [(0, 0), (1, 7), (-1, 11), (3, "mean"), (4, "max"), (2, "min")])
def test_json_values_equal_output_attentions(minilm_client, expected, layer, head):
    values, meta = values_of(minilm_client, text="He never smoked, though his grandfather smoked.", model="minilm", layer=layer, head=head)
    heads = expected[layer]
    if head == "mean":
        reference = heads.mean(axis=0)
    elif isinstance(head, str):
        fused = heads.max(axis=0) if head == "max" else heads.min(axis=0)
        reference = fused / fused.sum(axis=1, keepdims=True)
    else:
        reference = heads[head]
    np.testing.assert_allclose(values, reference, atol=1e-5, rtol=0)
    assert meta["layers"] == [layer % 6] and meta["heads"] == head and meta["model"] == "minilm"
    assert meta["tokens"][0] == "[CLS]" and len(meta["tokens"]) == values.shape[0]


@pytest.mark.parametrize("layer", [2, 5])
def test_json_rollout_equals_reference(minilm_client, expected, layer):
    values, meta = values_of(minilm_client, text="He never smoked, though his grandfather smoked.", model="minilm",
                             method="rollout", layer=layer)
    np.testing.assert_allclose(values, reference_rollout(expected, layer), atol=1e-5, rtol=0)
    assert meta["layers"] == list(range(layer + 1))
    np.testing.assert_allclose(values.sum(axis=1), 1.0, atol=1e-9)


def test_negation_example_renders(minilm_client):
    response = post(minilm_client, **NEGATION, layer=1)
    assert response.status_code == 200 and response.mimetype == "image/png"
    assert response.headers["X-Attnmap-Model"] == "minilm" and response.headers["X-Attnmap-Layers"] == "1"
    assert decode_png(response.data).shape[:2] == (512, 512)
    annotated = post(minilm_client, **NEGATION, layer=1, annotate=True)
    assert annotated.status_code == 200
    assert decode_png(annotated.data).std() > 0


def test_negation_trace_has_one_value_per_layer_and_head(minilm_client, reference):
    values, meta = values_of(minilm_client, **NEGATION, view="trace", query=2, key="smoked")
    assert values.shape == (6, 12)
    assert (meta["query_token"], meta["key_token"], meta["query_index"], meta["key_index"]) == ("never", "smoked", 2, 3)
    direct = reference_attentions(reference, reference_inputs(minilm_path(), "He never smoked."))
    np.testing.assert_allclose(values, direct[:, :, 2, 3], atol=1e-5, rtol=0)
    picture = post(minilm_client, **NEGATION, view="trace", query=2, key="smoked", annotate=True)
    assert picture.status_code == 200 and picture.mimetype == "image/png"
    assert post(minilm_client, **NEGATION, view="trace", query=2, key=3).status_code == 200
    assert_error(post(minilm_client, **NEGATION, view="trace", query=2, key="smoker"), 422, "unknown_token", "key")


def test_trace_query_by_token_text(minilm_client):
    values, meta = values_of(minilm_client, **NEGATION, view="trace", query="never", key="smoked")
    assert values.shape == (6, 12) and meta["query_index"] == 2


def test_grid_of_heads(minilm_client):
    values, meta = values_of(minilm_client, **NEGATION, view="grid", layer=2)
    assert values.shape == (12, 6, 6) and meta["heads"] == list(range(12))
    assert post(minilm_client, **NEGATION, view="grid", layer=2).status_code == 200


def test_mask_special_renormalises_rows(minilm_client):
    values, meta = values_of(minilm_client, text=PIECES, model="minilm", layer=0, mask_special=True)
    assert "[CLS]" not in meta["tokens"] and "[SEP]" not in meta["tokens"]
    assert values.shape == (len(meta["tokens"]),) * 2
    np.testing.assert_allclose(values.sum(axis=1), 1.0, atol=1e-9)
    assert meta["masked_positions"] == [0, len(meta["tokens"]) + 1]


def test_merge_subwords_keeps_the_matrix_consistent(minilm_client):
    raw, raw_meta = values_of(minilm_client, text=PIECES, model="minilm", layer=0)
    merged, meta = values_of(minilm_client, text=PIECES, model="minilm", layer=0, merge_subwords=True)
    assert raw_meta["tokens"] == ["[CLS]", "unbelievable", "token", "##ization", "of", "smoke", "##rs", "[SEP]"]
    assert meta["tokens"] == ["[CLS]", "unbelievable", "tokenization", "of", "smokers", "[SEP]"]
    np.testing.assert_allclose(merged.sum(axis=1), 1.0, atol=1e-6)
    # Attention to a word is the sum over its pieces, from a word the mean over its pieces.
    groups = [[0], [1], [2, 3], [4], [5, 6], [7]]
    direct = np.array([[raw[np.ix_(rows, cols)].sum(axis=1).mean() for cols in groups] for rows in groups])
    np.testing.assert_allclose(merged, direct, atol=1e-9)
    both, both_meta = values_of(minilm_client, text=PIECES, model="minilm", layer=0, merge_subwords=True, mask_special=True)
    assert both_meta["tokens"] == ["unbelievable", "tokenization", "of", "smokers"]
    np.testing.assert_allclose(both.sum(axis=1), 1.0, atol=1e-9)
    assert post(minilm_client, text=PIECES, model="minilm", merge_subwords=True, annotate=True).status_code == 200


def test_text_pair(minilm_client):
    values, meta = values_of(minilm_client, text="He never smoked.", text_pair="He is a smoker.", model="minilm", layer=0)
    assert meta["segment_boundary"] == 6 and meta["tokens"].count("[SEP]") == 2
    assert values.shape == (len(meta["tokens"]),) * 2


def test_512_tokens_on_one_layer_fit_the_budget(minilm_client, minilm_app, adapter):
    text = " ".join(["word"] * 510)
    budget = state(minilm_app).settings.limits.attention_budget_bytes
    assert adapter.estimate_tokens(*_request(text)) == 512
    assert adapter.attention_bytes(512, 1) <= budget
    values, meta = values_of(minilm_client, text=text, model="minilm", layer=0)
    assert values.shape == (512, 512) and meta["truncated"] is False
    np.testing.assert_allclose(values.sum(axis=1), 1.0, atol=1e-5)
    for extra in ({}, {"annotate": True}, {"query": 0}, {"query": 0, "annotate": True}):
        response = post(minilm_client, text=text, model="minilm", layer=0, **extra)
        assert response.status_code == 200, response.get_json()
        # Past the labels that fit at a legible size (36 at 512 px) the labelled display pools
        # blocks of neighbours and says so.
        fit = readable_labels(512, state(minilm_app).settings.limits.max_labels)
        assert fit == 36
        assert response.headers.get("X-Attnmap-Pooled") == (str(-(-512 // fit)) if extra.get("annotate") else None)


def test_display_pooling_keeps_rows_stochastic():
    from app.core.tokens import pool_blocks

    rng = np.random.default_rng(0)
    matrix = rng.random((300, 300))
    matrix /= matrix.sum(axis=1, keepdims=True)
    labels = [f"t{i}" for i in range(300)]
    pooled, names, block = pool_blocks(matrix, labels, 128)
    assert block == 3 and pooled.shape == (100, 100) and names[0] == "t0\u2026t2" and names[-1] == "t297\u2026t299"
    np.testing.assert_allclose(pooled.sum(axis=1), 1.0)
    row, _, _ = pool_blocks(matrix[5], labels, 128)
    np.testing.assert_allclose(row.sum(), 1.0)


def _request(text):
    from models.adapter import CaptureRequest, TextInput

    return TextInput(text), CaptureRequest(layers=(0,), max_tokens=512)


def test_over_the_token_cap(minilm_client):
    text = " ".join(["word"] * 600)
    assert_error(post(minilm_client, text=text, model="minilm"), 422, "too_many_tokens", "text")
    assert "602" in post(minilm_client, text=text, model="minilm").get_json()["error"]["message"]
    values, meta = values_of(minilm_client, text=text, model="minilm", layer=0, truncate=True)
    assert values.shape == (512, 512)
    assert meta["truncated"] is True and meta["tokens_before_truncation"] == 602


def test_over_budget_is_refused_before_any_forward_pass(make_app, adapter):
    client = make_app(adapter, limits={"attention_budget_bytes": 1024 * 1024}).test_client()
    before = hooks_on(adapter.model)
    counts, handles = count_calls([adapter.model])
    try:
        text = " ".join(["word"] * 300)
        response = post(client, text=text, model="minilm", method="rollout")
        assert_error(response, 422, "selection_too_large", "method")
        assert "302 tokens" in response.get_json()["error"]["message"]
        assert_error(post(client, text=text, model="minilm", view="trace", query=1, key=2), 422, "selection_too_large")
        assert counts == [0]
        assert post(client, text="He never smoked.", model="minilm", method="rollout").status_code == 200
        assert counts == [1]
    finally:
        for handle in handles:
            handle.remove()
    assert hooks_on(adapter.model) == before


@pytest.mark.parametrize("target_text", [None, "A man who smokes a lot."])
def test_gradient_method(minilm_client, target_text):
    fields = {"method": "gradient", "layer": -1} | ({"target_text": target_text} if target_text else {})
    values, meta = values_of(minilm_client, **NEGATION, **fields)
    assert values.shape == (6, 6) and np.isfinite(values).all()
    assert meta["semantics"] == "relevance" and meta["layers"] == list(range(6))
    assert meta["prediction"]["score_kind"] == ("cosine_similarity" if target_text else "embedding_norm")
    assert post(minilm_client, **NEGATION, **fields).status_code == 200


def test_gradient_target_needs_a_classifier(minilm_client):
    assert_error(post(minilm_client, **NEGATION, method="gradient", target=1), 422, "invalid_value", "target")


def test_models_lists_minilm(minilm_client):
    models = {m["name"]: m for m in minilm_client.get("/models").get_json()["models"]}
    assert models["minilm"]["kind"] == "text" and models["minilm"]["layers"] == 6 and models["minilm"]["heads"] == 12
    assert models["minilm"]["max_tokens"] == 512


def raw_post(client, body: str):
    return client.post("/visualize", data=body.encode("utf-8"), content_type="application/json")


@pytest.mark.parametrize(("body", "code", "field"), [
    ('{"text": "' + "a" * 10_001 + '", "model": "minilm"}', "text_too_long", "text"),
    ('{"text": "", "model": "minilm"}', "empty_text", "text"),
    ('{"text": "  \\n\\t  ", "model": "minilm"}', "empty_text", "text"),
    ('{"text": "\\u200b\\u200d", "model": "minilm"}', "empty_text", "text"),
    ('{"text": "\\ud800", "model": "minilm"}', "invalid_text", "text"),
    ('{"text": "smoked \\udc00 never", "model": "minilm"}', "invalid_text", "text"),
    ('{"text": "nul\\u0000byte", "model": "minilm"}', "invalid_text", "text"),
    ('{"text": "\\u001b[31mred", "model": "minilm"}', "invalid_text", "text"),
    ('{"text": "abc\\u202edcb", "model": "minilm"}', "invalid_text", "text"),
    ('{"text": "abc\\u2066isolate\\u2069", "model": "minilm"}', "invalid_text", "text"),
    ('{"text": "Z' + "\\u0336" * 40 + 'algo", "model": "minilm"}', "invalid_text", "text"),
    ('{"text": "fine", "text_pair": "\\ud83d", "model": "minilm"}', "invalid_text", "text_pair"),
    ('{"text": "fine", "text_pair": " ", "model": "minilm"}', "empty_text", "text_pair"),
    ('{"text": "\\u0301", "model": "minilm", "mask_special": true}', "empty_text", "text"),
    ('{"text": "fine", "method": "gradient", "target_text": "\\u202e", "model": "minilm"}', "invalid_text", "target_text"),
])
def test_text_hygiene(minilm_client, body, code, field):
    response = raw_post(minilm_client, body)
    assert_error(response, 422, code, field)
    assert "\ud800" not in response.get_data(as_text=True)


def test_accepted_unusual_text(minilm_client):
    for text in ["windows\r\nline breaks", "emoji 👩‍👩‍👧 and naïve café", "עברית\u200f mixed", "e\u0301" * 30]:
        response = raw_post(minilm_client, json.dumps({"text": text, "model": "minilm", "annotate": True}))
        assert response.status_code == 200, (text, response.get_json())


def test_dollar_tokens_are_literal_labels(minilm_client):
    text = "$x^$ costs $\\frac{1}$ and 50% of $y_"
    response = post(minilm_client, text=text, model="minilm", annotate=True)
    assert response.status_code == 200, response.get_json()
    _, meta = values_of(minilm_client, text=text, model="minilm")
    assert "$" in meta["tokens"] and "^" in meta["tokens"]
    bar = post(minilm_client, text=text, model="minilm", annotate=True, query=1)
    assert bar.status_code == 200


@pytest.mark.parametrize("fields", [{"layer": -1}, {"layer": 0}, {"method": "rollout"}, {"method": "gradient"}])
def test_minilm_requests_run_on_the_fused_path_never_eager(minilm_client, adapter, fields):
    """The built-in model serves on transformers' SDPA; eager attention never runs, values still equal eager."""
    assert adapter.model.config._attn_implementation == capture.ATTENTION_NAME
    with capture.count_eager_calls(adapter.model) as eager:
        response = post(minilm_client, text="He never smoked.", model="minilm", format="json", **fields)
    assert response.status_code == 200, response.get_json()
    assert eager.count == 0
    assert capture.open_recordings() == 0 and hooks_on(adapter.model) == 0
