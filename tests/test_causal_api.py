"""The built-in smollm2 (a decoder LLM) through the HTTP API: next-token map, views, generation, sinks, long context.

Every test shares one loaded smollm2 (tests/causal_support.py); references come from the same
weights run eagerly with ``output_attentions``.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import psutil
import pytest
import torch
import transformers.models.llama.modeling_llama as modeling_llama

from app.render.colormaps import masked_colour, palette
from tests.causal_support import CAPITAL, eager_attentions, eager_smollm2, smollm2_adapter, smollm2_app, token_ids
from tests.helpers import assert_error, decode_png

MiB = 1024 * 1024
# What one 4,096-token query=last request over every layer may add to a worker's resident memory
# (README, "Decoder LLMs"): rows (30 x 9 x 4,096 floats) plus one layer's activations at a time,
# measured at about 0.2-0.5 GB; the budget leaves room for allocator slack.
LONG_REQUEST_BUDGET = 1024 * MiB


def post(client, **fields):
    return client.post("/visualize", json={"model": "smollm2", **fields})


def values_of(client, **fields):
    response = post(client, format="json", **fields)
    assert response.status_code == 200, response.get_json()
    document = response.get_json()
    return np.asarray(document["values"], dtype=np.float64), document["meta"]


def long_text(tokens: int) -> str:
    """A text of exactly ``tokens`` smollm2 tokens."""
    tokenizer = smollm2_adapter().tokenizer
    sentence = ("Attention maps show which earlier words a language model reads when it writes the next one; "
                "long documents test whether a tool can still draw them. ")
    ids = tokenizer(sentence * (tokens // 20 + 10))["input_ids"][:tokens]
    text = tokenizer.decode(ids)
    assert len(tokenizer(text)["input_ids"]) == tokens
    return text


def test_capital_of_france_png_and_next_token(smollm2_client):
    response = post(smollm2_client, text=CAPITAL, query="last")
    assert response.status_code == 200
    assert response.mimetype == "image/png"
    assert decode_png(response.data).shape[1] == 512
    values, meta = values_of(smollm2_client, text=CAPITAL, query="last")
    assert meta["prediction"]["label"] == " Paris"
    assert meta["prediction"]["score_kind"] == "probability" and meta["prediction"]["index"] is not None
    assert 0.5 < meta["prediction"]["probability"] <= 1
    assert meta["causal"] is True
    assert meta["key_tokens"] == ["The", " capital", " of", " France", " is"]
    assert values.shape == (5,) and values.sum() == pytest.approx(1.0, abs=1e-5)


def test_models_describes_smollm2(smollm2_client):
    (entry,) = smollm2_client.get("/models").get_json()["models"]
    assert entry["name"] == "smollm2" and entry["kind"] == "text" and entry["causal"] is True
    assert (entry["layers"], entry["heads"], entry["kv_heads"], entry["max_tokens"]) == (30, 9, 3, 8192)
    assert entry["device"] == "cpu" and entry["dtype"] == "float32"


def test_negative_query_and_multipart_match_last(smollm2_client):
    last, _ = values_of(smollm2_client, text=CAPITAL, query="last", layer=7, head=4)
    minus_one, _ = values_of(smollm2_client, text=CAPITAL, query=-1, layer=7, head=4)
    form = smollm2_client.post("/visualize", data={"model": "smollm2", "text": CAPITAL, "query": "-1", "layer": "7", "head": "4",
                                           "format": "json"}, content_type="multipart/form-data")
    assert form.status_code == 200, form.get_json()
    np.testing.assert_array_equal(last, minus_one)
    np.testing.assert_array_equal(last, np.asarray(form.get_json()["values"]))
    second, _ = values_of(smollm2_client, text=CAPITAL, query=-2, layer=7, head=4)
    expected = eager_attentions(eager_smollm2(), token_ids(CAPITAL))[7][4]
    np.testing.assert_allclose(last, expected[-1], atol=1e-5)
    np.testing.assert_allclose(second, expected[-2], atol=1e-5)
    assert_error(post(smollm2_client, text=CAPITAL, query=5), 422, "out_of_range", "query")


def test_causal_heatmap_masks_the_future(smollm2_client):
    text = "The capital of France is a city called"
    values, meta = values_of(smollm2_client, text=text, layer=5)
    count = len(token_ids(text))
    assert values.shape == (count, count) and meta["causal"] is True
    expected = eager_attentions(eager_smollm2(), token_ids(text))[5].mean(axis=0)
    np.testing.assert_allclose(values, expected, atol=1e-5)
    assert (np.triu(values, 1) == 0).all()
    # Plain PNG: 8 x 8 cells of 64 px; every cell above the diagonal is the masked colour, which is
    # no colour of the colormap (not its low end), and no cell on or below the diagonal is.
    pixels = decode_png(post(smollm2_client, text=text, layer=5, size=512).data)
    mask_rgb = np.asarray(masked_colour("viridis"))
    colours = palette("viridis")[:255].astype(int)
    assert np.abs(colours - mask_rgb).sum(axis=1).min() > 90
    cell = 512 // count
    for row in range(count):
        for col in range(count):
            centre = pixels[row * cell + cell // 2, col * cell + cell // 2].astype(int)
            assert (np.array_equal(centre, mask_rgb)) == (col > row), (row, col, centre)
    # Annotated: the masked colour fills the upper triangle of the axes too.
    annotated = decode_png(post(smollm2_client, text=text, layer=5, annotate=True).data)
    assert (np.abs(annotated.astype(int) - mask_rgb).sum(axis=2) == 0).sum() > 0.1 * annotated.shape[0] * annotated.shape[1]
    # A colormap whose top is white gets another masked colour.
    gray = decode_png(post(smollm2_client, text=text, layer=5, colormap="gray").data)
    assert tuple(gray[cell // 2, (count - 1) * cell + cell // 2]) == masked_colour("gray") != (255, 255, 255)


def test_layers_view_is_the_last_row_in_every_layer(smollm2_client):
    values, meta = values_of(smollm2_client, text=CAPITAL, view="layers", head=3)
    expected = np.stack([layer[3, -1] for layer in eager_attentions(eager_smollm2(), token_ids(CAPITAL))])
    assert values.shape == (30, 5) and meta["view"] == "layers" and meta["tokens"][0] == "L0"
    np.testing.assert_allclose(values, expected, atol=1e-5)
    earlier, _ = values_of(smollm2_client, text=CAPITAL, view="layers", query=2, head="mean")
    expected_mean = np.stack([layer[:, 2].mean(axis=0) for layer in eager_attentions(eager_smollm2(), token_ids(CAPITAL))])
    np.testing.assert_allclose(earlier, expected_mean, atol=1e-5)
    assert (earlier[:, 3:] == 0).all()
    png = post(smollm2_client, text=CAPITAL, view="layers", annotate=True)
    assert png.status_code == 200 and decode_png(png.data).shape[0] >= 400


def test_generation_rows_equal_eager_over_the_generated_sequence(smollm2_client):
    values, meta = values_of(smollm2_client, text=CAPITAL, generate=6, layer=-1, head=2)
    generated = meta["generated_ids"]
    assert meta["generated_tokens"][0] == " Paris" and meta["generated_text"].startswith(" Paris")
    assert len(generated) == 6 and values.shape == (6, 5 + 6 - 1)
    assert meta["tokens"] == meta["generated_tokens"]  # rows are the generated tokens
    prompt = token_ids(CAPITAL)
    reference = eager_attentions(eager_smollm2(), prompt + generated[:-1])[-1][2]
    # Row i is the step that produced generated token i: query position len(prompt) - 1 + i.
    np.testing.assert_allclose(values, reference[len(prompt) - 1 :], atol=1e-5)
    png = post(smollm2_client, text=CAPITAL, generate=6, annotate=True)
    assert png.status_code == 200
    assert_error(post(smollm2_client, text=CAPITAL, generate=65), 422, "out_of_range", "generate")
    assert_error(post(smollm2_client, text=CAPITAL, generate=2, query="last"), 422, "invalid_value", "query")


def test_exclude_sink_renormalises_rows(smollm2_client):
    plain, _ = values_of(smollm2_client, text=CAPITAL, query="last")
    without, meta = values_of(smollm2_client, text=CAPITAL, query="last", exclude_sink=True)
    assert meta["sink_excluded"] is True and meta["sink_mass"] == pytest.approx(plain[0], abs=1e-6)
    assert plain[0] > 0.5  # the first token is a sink in smollm2's last layer
    np.testing.assert_allclose(without, plain[1:] / plain[1:].sum(), atol=1e-9)
    assert meta["key_tokens"] == [" capital", " of", " France", " is"]
    matrix, _ = values_of(smollm2_client, text=CAPITAL, layer=4, exclude_sink=True)
    assert matrix.shape == (4, 4)
    np.testing.assert_allclose(matrix.sum(axis=1), 1.0, atol=1e-9)
    rows, _ = values_of(smollm2_client, text=CAPITAL, view="layers", exclude_sink=True)
    np.testing.assert_allclose(rows.sum(axis=1), 1.0, atol=1e-9)


def test_grid_of_heads_is_causal_masked_and_can_drop_the_sink(smollm2_client):
    reference = eager_attentions(eager_smollm2(), token_ids(CAPITAL))[6]
    panels, meta = values_of(smollm2_client, text=CAPITAL, view="grid", layer=6, query=2)
    assert panels.shape == (9, 1, 5) and meta["causal"] is True
    np.testing.assert_allclose(panels[:, 0], reference[:, 2], atol=1e-5)
    assert (panels[:, 0, 3:] == 0).all()
    last, _ = values_of(smollm2_client, text=CAPITAL, view="grid", layer=6, query="last")
    np.testing.assert_allclose(last[:, 0], reference[:, -1], atol=1e-5)
    matrices, _ = values_of(smollm2_client, text=CAPITAL, view="grid", layer=6)
    np.testing.assert_allclose(matrices, reference, atol=1e-5)
    without, meta = values_of(smollm2_client, text=CAPITAL, view="grid", layer=6, query="last", exclude_sink=True)
    assert meta["sink_excluded"] is True and without.shape == (9, 1, 4)
    np.testing.assert_allclose(without[:, 0], reference[:, -1, 1:] / reference[:, -1, 1:].sum(axis=1, keepdims=True),
                               atol=1e-5)
    assert meta["sink_mass"] == pytest.approx(float(reference[:, -1, 0].mean()), abs=1e-5)
    # The PNG: a matrix per head, the upper triangle in the masked colour (white on viridis), the
    # gaps between panels black so the white triangles do not run into them.
    pixels = decode_png(post(smollm2_client, text=CAPITAL, view="grid", layer=6).data)
    assert masked_colour("viridis") == (255, 255, 255)
    assert (pixels == 255).all(axis=2).mean() > 0.2
    third = pixels.shape[1] // 3
    gap_columns = [col for col in range(third - 4, third + 4) if (pixels[:, col] == 0).all()]
    assert gap_columns, "no black gap between the first and second column of panels"


def test_gradient_is_next_token_relevance(smollm2_client):
    values, meta = values_of(smollm2_client, text=CAPITAL, method="gradient", query="last")
    assert meta["semantics"] == "relevance" and meta["prediction"]["target_label"] == " Paris"
    assert values.shape == (5,) and np.isfinite(values).all() and values.max() > 0
    other, meta_other = values_of(smollm2_client, text=CAPITAL, method="gradient", query="last", target=token_ids(" London")[0])
    assert meta_other["prediction"]["target_label"] == " London"
    assert not np.allclose(values, other)
    assert_error(post(smollm2_client, text=CAPITAL, method="gradient", target=10**6), 422, "out_of_range", "target")


def test_query_last_never_calls_eager_attention(smollm2_client, monkeypatch):
    calls = {"eager": 0, "sdpa": 0}
    eager = modeling_llama.eager_attention_forward
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def counting_eager(*args, **kwargs):
        calls["eager"] += 1
        return eager(*args, **kwargs)

    def counting_sdpa(*args, **kwargs):
        calls["sdpa"] += 1
        return sdpa(*args, **kwargs)

    monkeypatch.setattr(modeling_llama, "eager_attention_forward", counting_eager)
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", counting_sdpa)
    response = post(smollm2_client, text=CAPITAL, query="last", view="layers", format="json")
    assert response.status_code == 200
    assert calls["eager"] == 0
    assert calls["sdpa"] >= 30  # every layer's output came from the fused kernel


def _peak_rss_during(action) -> tuple[int, int, object]:
    """(baseline RSS, peak RSS while ``action`` runs, its result), sampled every 20 ms."""
    process = psutil.Process()
    baseline = process.memory_info().rss
    peak = [baseline]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], process.memory_info().rss)
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        result = action()
    finally:
        done.set()
        sampler.join()
    return baseline, peak[0], result


@pytest.mark.slow
def test_4096_tokens_last_row_over_every_layer_within_memory():
    """Served whole and within the documented memory budget. How long it takes is the benchmark's job
    (bench/llm_capture.py, against the 30 s default deadline): a timed test would only measure the load
    of the machine running the suite, so this app's deadline is out of the way."""
    patient = smollm2_app(request_deadline_s=600.0).test_client()
    text = long_text(4096)
    baseline, peak, response = _peak_rss_during(lambda: post(patient, text=text, view="layers", format="json"))
    assert response.status_code == 200, response.get_json()
    document = response.get_json()
    assert document["shape"] == [30, 4096]
    assert peak - baseline <= LONG_REQUEST_BUDGET, f"worker grew by {(peak - baseline) / MiB:.0f} MiB"


def test_a_forward_pass_longer_than_the_deadline_stops_at_it(monkeypatch):
    """The deadline holds inside the forward pass (checked at each layer call), not only between stages:
    a pass that would run past it ends with the 503 early, instead of running on towards Gunicorn's
    worker timeout; the worker then serves the next request."""
    from app.core import deadline
    from models import capture

    checks = []
    real_check = deadline.check
    monkeypatch.setattr(deadline, "check", lambda: (checks.append(1), real_check())[1])
    hurried = smollm2_app(request_deadline_s=0.5).test_client()
    response = post(hurried, text=long_text(2048), query="last", format="json")  # about 12 s of forward pass here
    assert_error(response, 503, "deadline_exceeded")
    assert response.headers["Retry-After"]
    assert len(checks) < smollm2_adapter().info.layers, "the pass ran through every layer before stopping"
    assert capture.open_recordings() == 0
    values, meta = values_of(smollm2_app().test_client(), text=CAPITAL, query="last")
    assert meta["prediction"]["label"] == " Paris" and values.shape == (5,)


def test_over_budget_is_refused_before_any_forward_pass(monkeypatch):
    adapter = smollm2_adapter()
    budgeted = smollm2_app(limits={"causal_budget_bytes": 48 * MiB}).test_client()
    calls = []
    monkeypatch.setattr(adapter.model, "forward", lambda *a, **k: calls.append(1))
    text = long_text(1024)
    response = post(budgeted, text=text, layer=3)  # a full 1,024 x 1,024 matrix per head
    assert_error(response, 422, "selection_too_large", "method")
    message = response.get_json()["error"]["message"]
    assert "1024 tokens" in message and "at most" in message
    fitting = int(message.split("at most ")[1].split(" ")[0])
    assert 0 < fitting < 1024
    assert calls == []
    assert_error(post(budgeted, text=long_text(300), method="gradient"), 422, "selection_too_large")
    assert calls == []


def test_token_cap_and_encoder_only_fields(smollm2_client):
    assert_error(post(smollm2_client, text=long_text(8193)), 422, "too_many_tokens", "text")
    assert_error(post(smollm2_client, text=CAPITAL, text_pair="x"), 422, "invalid_value", "text_pair")
    assert_error(post(smollm2_client, text=CAPITAL, target_text="x", method="gradient"), 422, "invalid_value", "target_text")
