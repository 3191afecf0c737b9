
"""HFTextAdapter with the built-in MiniLM, below the HTTP layer: capture, early stop, gradients, caps."""

import time

import numpy as np
import pytest
import torch

from app.core.errors import InvalidInput
from models import capture
from models.adapter import CaptureRequest, TextInput
from models.hooks import hooks_on
from models.registry import open_model
from models.text_score import mean_pool
from tests.text_models import count_calls, minilm_path, reference_attentions, reference_inputs, reference_model

SENTENCE = "He never smoked, but his grandfather smoked unbelievably many cigarettes."


@pytest.fixture(scope="module")
def adapter():
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")  # must not matter: everything is read from the package folder
        patch.setenv("TRANSFORMERS_OFFLINE", "1")
        return open_model("minilm", minilm_path(), device=torch.device("cpu"), dtype=torch.float32)


@pytest.fixture(scope="module")
def reference():
    return reference_model(minilm_path())


def layer_modules(adapter):
    return list(adapter.model.encoder.layer)


def test_info(adapter):
    info = adapter.info
    assert (info.kind, info.family, info.layers, info.heads, info.max_tokens) == ("text", "bert", 6, 12, 512)
    assert info.labels == () and info.dtype == "float32"


@pytest.mark.parametrize("layers", [(0,), (2,), (5,), (0, 3, 5), tuple(range(6))])
def test_capture_equals_output_attentions(adapter, reference, layers):
    capture = adapter.capture(TextInput(SENTENCE), CaptureRequest(layers=layers))
    expected = reference_attentions(reference, reference_inputs(minilm_path(), SENTENCE))
    stack = capture.stack
    assert stack.weights.dtype == np.float32 and stack.layers == layers and stack.num_layers == 6
    np.testing.assert_allclose(stack.weights, expected[list(layers)], atol=1e-5, rtol=0)


def test_pair_equals_output_attentions_and_marks_segments(adapter, reference):
    capture = adapter.capture(TextInput("He never smoked.", "Unbelievable tokenization"), CaptureRequest(layers=(1,)))
    expected = reference_attentions(reference, reference_inputs(minilm_path(), "He never smoked.", "Unbelievable tokenization"))
    np.testing.assert_allclose(capture.stack.weights[0], expected[1], atol=1e-5, rtol=0)
    stack = capture.stack
    assert stack.tokens == ["[CLS]", "he", "never", "smoked", ".", "[SEP]", "unbelievable", "token", "##ization", "[SEP]"]
    assert stack.special_tokens == (0, 5, 9)
    assert stack.words == (None, 0, 1, 2, 3, None, 4, 5, 5, None)  # second segment's words continue, not restart
    assert stack.meta["segment_boundary"] == 6 and stack.meta["truncated"] is False


def test_early_stop_skips_later_layers_and_removes_hooks(adapter):
    before = hooks_on(adapter.model)
    counts, handles = count_calls(layer_modules(adapter))
    try:
        adapter.capture(TextInput(SENTENCE), CaptureRequest(layers=(1,)))
        assert counts == [1, 1, 0, 0, 0, 0]
        adapter.capture(TextInput(SENTENCE), CaptureRequest(layers=(0, 2)))
        assert counts == [2, 2, 1, 0, 0, 0]
        adapter.capture(TextInput(SENTENCE), CaptureRequest(layers=(5,)))  # last layer: the pass runs to the end
        assert counts == [3, 3, 2, 1, 1, 1]
        adapter.capture(TextInput(SENTENCE), CaptureRequest(layers=(0,), gradient=True))  # gradients need everything
        assert counts == [4, 4, 3, 2, 2, 2]
    finally:
        for handle in handles:
            handle.remove()
    assert hooks_on(adapter.model) == before
    assert capture.open_recordings() == 0 and capture.active_recorder() is None


def test_hooks_removed_when_the_forward_fails(adapter):
    before = hooks_on(adapter.model)

    def explode(*_args):
        raise RuntimeError("boom")

    handle = layer_modules(adapter)[3].register_forward_pre_hook(explode)
    try:
        with pytest.raises(RuntimeError, match="boom"):
            adapter.capture(TextInput(SENTENCE), CaptureRequest(layers=(4,)))
    finally:
        handle.remove()
    assert hooks_on(adapter.model) == before
    assert capture.open_recordings() == 0 and capture.active_recorder() is None
    assert adapter.capture(TextInput(SENTENCE), CaptureRequest(layers=(4,))).stack.weights.shape[0] == 1


def test_early_stop_is_measurably_cheaper(adapter):
    text = " ".join(["word"] * 400)
    request_first, request_last = CaptureRequest(layers=(0,)), CaptureRequest(layers=(5,))

    def best_of(request, runs=5):
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            adapter.capture(TextInput(text), request)
            times.append(time.perf_counter() - started)
        return min(times)

    adapter.capture(TextInput(text), request_first)
    first, last = best_of(request_first), best_of(request_last)
    # One of six layers plus embeddings: about a fifth of the full pass; 0.6 leaves room for a noisy machine.
    assert first < 0.6 * last, (first, last)


def test_estimate_tokens_runs_no_forward(adapter):
    counts, handles = count_calls([adapter.model])
    try:
        assert adapter.estimate_tokens(TextInput("He never smoked."), CaptureRequest(layers=(0,))) == 6
        assert adapter.estimate_tokens(TextInput("He never smoked.", "Unbelievable"), CaptureRequest(layers=(0,))) == 8
    finally:
        for handle in handles:
            handle.remove()
    assert counts == [0]


def test_token_cap_and_truncation(adapter):
    long_text = " ".join(["word"] * 600)  # 602 tokens with [CLS]/[SEP]
    with pytest.raises(InvalidInput) as info:
        adapter.estimate_tokens(TextInput(long_text), CaptureRequest(layers=(0,)))
    assert info.value.code == "too_many_tokens" and "602" in info.value.message and "512" in info.value.message
    with pytest.raises(InvalidInput):
        adapter.capture(TextInput(long_text), CaptureRequest(layers=(0,)))
    request = CaptureRequest(layers=(0,), truncate=True)
    assert adapter.estimate_tokens(TextInput(long_text), request) == 512
    stack = adapter.capture(TextInput(long_text), request).stack
    assert stack.weights.shape == (1, 12, 512, 512)
    assert stack.meta["truncated"] is True and stack.meta["tokens_before_truncation"] == 602
    assert stack.tokens[-1] == "[SEP]"
    # The service cap lowers the model's own limit, never raises it.
    capped = CaptureRequest(layers=(0,), truncate=True, max_tokens=64)
    assert adapter.capture(TextInput(long_text), capped).stack.weights.shape[-1] == 64
    assert adapter.estimate_tokens(TextInput(long_text), CaptureRequest(layers=(0,), truncate=True, max_tokens=4096)) == 512


def _direct_gradients(reference, text, other=None):
    inputs = reference_inputs(minilm_path(), text)
    output = reference(**inputs, output_attentions=True)
    pooled = mean_pool(output.last_hidden_state, inputs["attention_mask"])[0]
    if other is None:
        score = pooled.norm()
    else:
        with torch.no_grad():
            other_inputs = reference_inputs(minilm_path(), other)
            other_pooled = mean_pool(reference(**other_inputs).last_hidden_state, other_inputs["attention_mask"])[0]
        score = torch.nn.functional.cosine_similarity(pooled, other_pooled, dim=0)
    gradients = torch.autograd.grad(score, output.attentions)
    return float(score.detach()), torch.stack([g[0] for g in gradients]).numpy()


@pytest.mark.parametrize("target_text", [None, "A man who smokes."])
def test_gradients_match_direct_autograd(adapter, reference, target_text):
    request = CaptureRequest(layers=tuple(range(6)), gradient=True, target_text=target_text)
    capture = adapter.capture(TextInput("He never smoked."), request)
    score, expected = _direct_gradients(reference, "He never smoked.", target_text)
    assert capture.prediction["score_kind"] == ("embedding_norm" if target_text is None else "cosine_similarity")
    assert capture.prediction["score"] == pytest.approx(score, abs=1e-5)
    assert capture.stack.gradients.shape == capture.stack.weights.shape == (6, 12, 6, 6)
    scale = np.abs(expected).max()
    np.testing.assert_allclose(capture.stack.gradients, expected, atol=1e-5 * max(scale, 1.0), rtol=0)
    assert np.abs(capture.stack.gradients).max() > 0


def test_gradient_works_inside_inference_mode(adapter):
    with torch.inference_mode():
        capture = adapter.capture(TextInput("He never smoked."), CaptureRequest(layers=(0, 1), gradient=True))
    assert capture.stack.gradients is not None and np.isfinite(capture.stack.gradients).all()


def test_target_rules_for_a_sentence_model(adapter):
    with pytest.raises(InvalidInput) as info:
        adapter.estimate_tokens(TextInput("x"), CaptureRequest(layers=(0,), gradient=True, target=1))
    assert info.value.field == "target"
    long_target = " ".join(["word"] * 600)
    with pytest.raises(InvalidInput) as info:
        adapter.estimate_tokens(TextInput("x"), CaptureRequest(layers=(0,), gradient=True, target_text=long_target))
    assert info.value.field == "target_text" and info.value.code == "too_many_tokens"


def test_layers_out_of_range_are_refused_by_the_plan_before_any_forward_pass(make_app, adapter, monkeypatch):
    """The request plan owns the layer check; the adapter is never asked for a layer it lacks."""
    calls = []
    monkeypatch.setattr(adapter, "capture", lambda *args: calls.append(args))
    response = make_app(adapter).test_client().post("/visualize", json={"text": "x y", "model": "minilm", "layer": 6})
    assert response.status_code == 422 and response.get_json()["error"]["code"] == "out_of_range"
    assert calls == []


def test_concurrent_captures_keep_their_own_attention(adapter):
    """Hooks sit on shared modules: two threads must still each get only their own weights."""
    from concurrent.futures import ThreadPoolExecutor

    texts = ["He never smoked.", "The quick brown fox jumps over the lazy dog again and again."]
    requests = [CaptureRequest(layers=(1, 4)), CaptureRequest(layers=(1, 4), truncate=True, max_tokens=12)]
    alone = [adapter.capture(TextInput(t), r).stack.weights for t, r in zip(texts, requests, strict=True)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = [pool.submit(adapter.capture, TextInput(texts[i % 2]), requests[i % 2]) for i in range(12)]
        results = [f.result().stack.weights for f in futures]
    for i, weights in enumerate(results):
        np.testing.assert_array_equal(weights, alone[i % 2])


def test_special_token_strings_in_user_text_stay_text(adapter):
    capture = adapter.capture(TextInput("a [SEP] b [PAD]"), CaptureRequest(layers=(0,)))
    stack = capture.stack
    assert stack.tokens == ["[CLS]", "a", "[", "sep", "]", "b", "[", "pad", "]", "[SEP]"]
    assert stack.special_tokens == (0, 9)
    assert adapter.estimate_tokens(TextInput("a [SEP] b [PAD]"), CaptureRequest(layers=(0,))) == 10


def test_text_that_tokenises_to_nothing(adapter):
    with pytest.raises(InvalidInput) as info:  # the uncased normaliser strips a lone combining accent
        adapter.capture(TextInput("\u0301"), CaptureRequest(layers=(0,)))
    assert (info.value.code, info.value.field) == ("empty_text", "text")
    assert adapter.capture(TextInput("ok", "\u0301"), CaptureRequest(layers=(0,))).stack.tokens == ["[CLS]", "ok", "[SEP]", "[SEP]"]
