
"""User text models from local directories: tiny random BERT (classifier), RoBERTa and DistilBERT."""

import json

import numpy as np
import pytest
import torch

from app.core.errors import InvalidInput
from models.adapter import CaptureRequest, TextInput
from models.registry import ModelLoadError, ModelSpec, load_adapter, open_model
from tests.helpers import assert_error, decode_png
from tests.text_models import (
    count_calls,
    reference_attentions,
    reference_chefer,
    reference_inputs,
    reference_model,
    save_tiny_bert_classifier,
    save_tiny_distilbert,
    save_tiny_roberta,
)

CPU = torch.device("cpu")
TEXT = "He never smoked."


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("text-models")
    return {
        "tiny-bert-cls": save_tiny_bert_classifier(root / "bert"),
        "tiny-roberta": save_tiny_roberta(root / "roberta"),
        "tiny-distilbert": save_tiny_distilbert(root / "distilbert"),
    }


@pytest.fixture(scope="module")
def tiny_text_client(make_app, model_dirs, tmp_path_factory):
    """The tiny models loaded the way an operator configures them: a TOML models file."""
    config = tmp_path_factory.mktemp("config") / "models.toml"
    config.write_text("".join(f'[models.{name}]\npath = "{path}"\n\n' for name, path in model_dirs.items()))
    return make_app(models_config=str(config)).test_client()


def values_of(client, **fields):
    response = client.post("/visualize", json={"format": "json", **fields})
    assert response.status_code == 200, response.get_json()
    return np.asarray(response.get_json()["values"]), response.get_json()["meta"]


def test_models_endpoint_describes_each_family(tiny_text_client):
    models = {m["name"]: m for m in tiny_text_client.get("/models").get_json()["models"]}
    assert models["tiny-bert-cls"]["family"] == "bert" and models["tiny-bert-cls"]["labels"] == ["class_0", "class_1", "class_2"]
    assert models["tiny-roberta"]["family"] == "roberta" and models["tiny-roberta"]["max_tokens"] == 38  # 40 - (pad 1 + 1)
    assert models["tiny-distilbert"]["family"] == "distilbert" and models["tiny-distilbert"]["layers"] == 2
    assert all(m["kind"] == "text" and m["heads"] == 4 for m in models.values())


@pytest.mark.parametrize("name", ["tiny-bert-cls", "tiny-roberta", "tiny-distilbert"])
def test_values_equal_output_attentions_and_render(tiny_text_client, model_dirs, name):
    path = model_dirs[name]
    expected = reference_attentions(reference_model(path, classifier=name == "tiny-bert-cls"), reference_inputs(path, TEXT))
    for layer, head in ((0, 1), (-1, "mean")):
        values, _meta = values_of(tiny_text_client, text=TEXT, model=name, layer=layer, head=head)
        heads = expected[layer]
        np.testing.assert_allclose(values, heads.mean(axis=0) if head == "mean" else heads[head], atol=1e-5, rtol=0)
    response = tiny_text_client.post("/visualize", json={"text": TEXT, "model": name, "annotate": True, "merge_subwords": True})
    assert response.status_code == 200 and decode_png(response.data).ndim == 3
    for method in ("rollout", "gradient"):
        assert tiny_text_client.post("/visualize", json={"text": TEXT, "model": name, "method": method}).status_code == 200


def test_roberta_positions_stop_at_the_padding_offset(tiny_text_client):
    text = " ".join(["fox"] * 60)
    response = tiny_text_client.post("/visualize", json={"text": text, "model": "tiny-roberta"})
    assert_error(response, 422, "too_many_tokens", "text")
    assert "38" in response.get_json()["error"]["message"]
    values, meta = values_of(tiny_text_client, text=text, model="tiny-roberta", truncate=True, mask_special=True)
    assert meta["truncated"] is True and meta["tokens_before_truncation"] > 60
    assert values.shape == (36, 36)  # 38 positions minus <s> and </s>
    np.testing.assert_allclose(values.sum(axis=1), 1.0, atol=1e-9)


def test_roberta_pair_and_byte_level_merge(tiny_text_client):
    values, meta = values_of(tiny_text_client, text=TEXT, text_pair="The lazy dog.", model="tiny-roberta", merge_subwords=True)
    assert meta["tokens"][0] == "<s>" and "never" in meta["tokens"] and "Ġnever" not in meta["tokens"]
    np.testing.assert_allclose(values.sum(axis=1), 1.0, atol=1e-6)


def test_classifier_gradient_matches_direct_autograd(model_dirs):
    path = model_dirs["tiny-bert-cls"]
    adapter = open_model("tiny-bert-cls", path, device=CPU, dtype=torch.float32)
    reference = reference_model(path, classifier=True)
    inputs = reference_inputs(path, TEXT, "A smoker.")
    for target in (None, 2):
        capture = adapter.capture(TextInput(TEXT, "A smoker."), CaptureRequest(layers=(0, 1, 2), gradient=True, target=target))
        output = reference(**inputs, output_attentions=True)
        chosen = int(output.logits[0].argmax()) if target is None else target
        gradients = torch.autograd.grad(output.logits[0, chosen], output.attentions)
        expected = torch.stack([g[0] for g in gradients]).numpy()
        np.testing.assert_allclose(capture.stack.gradients, expected, atol=1e-5 * max(1.0, np.abs(expected).max()), rtol=0)
        assert capture.prediction["target"] == chosen and capture.prediction["score_kind"] == "logit"
        assert capture.prediction["score"] == pytest.approx(float(output.logits[0, chosen].detach()), abs=1e-5)
        from app.core.reduce import gradient_relevance

        relevance = gradient_relevance(capture.stack.weights, capture.stack.gradients)
        np.testing.assert_allclose(relevance, reference_chefer(list(output.attentions), list(gradients)), atol=1e-6)


def test_classifier_target_rules_and_prediction(tiny_text_client):
    _values, meta = values_of(tiny_text_client, text=TEXT, model="tiny-bert-cls", method="gradient", target=2)
    assert meta["prediction"]["target"] == 2 and meta["prediction"]["target_label"] == "class_2"
    assert_error(tiny_text_client.post("/visualize", json={"text": TEXT, "model": "tiny-bert-cls", "method": "gradient", "target": 3}),
                 422, "out_of_range", "target")
    assert_error(tiny_text_client.post("/visualize", json={"text": TEXT, "model": "tiny-bert-cls", "method": "gradient",
                                                 "target_text": "x"}), 422, "invalid_value", "target_text")
    _, last = values_of(tiny_text_client, text=TEXT, model="tiny-bert-cls", layer=-1)
    assert last["prediction"]["label"].startswith("class_")  # a finished pass reports its prediction


def test_distilbert_early_stop(model_dirs):
    adapter = open_model("d", model_dirs["tiny-distilbert"], device=CPU, dtype=torch.float32)
    counts, handles = count_calls(list(adapter.model.transformer.layer))
    try:
        adapter.capture(TextInput(TEXT), CaptureRequest(layers=(0,)))
    finally:
        for handle in handles:
            handle.remove()
    assert counts == [1, 0]


@pytest.mark.parametrize("implementation", ["sdpa", "eager"])
def test_attention_that_bypasses_the_capture_engine_fails_the_load_self_check(model_dirs, implementation):
    with pytest.raises(ModelLoadError, match="attn_implementation='attnmap_rows'"):
        open_model("forced", model_dirs["tiny-roberta"], device=CPU, dtype=torch.float32, attn_implementation=implementation)


def test_unusable_directories_fail_to_load(model_dirs, tmp_path):
    config = json.loads((model_dirs["tiny-distilbert"] / "config.json").read_text())
    config["vocab_size"] = 100  # fewer embeddings than the tokenizer has ids
    small = tmp_path / "small"
    small.mkdir()
    for item in model_dirs["tiny-distilbert"].iterdir():
        (small / item.name).write_bytes(item.read_bytes())
    (small / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match="'small'"):
        load_adapter(ModelSpec("small", small), CPU, torch.float32)
    (small / "model.safetensors").unlink()  # no safetensors weights: refused (never falls back to a pickle)
    (small / "config.json").write_text(json.dumps(config | {"vocab_size": 30522}))
    with pytest.raises(ModelLoadError, match="'small'"):
        load_adapter(ModelSpec("small", small), CPU, torch.float32)
    (small / "config.json").write_text(json.dumps(config | {"model_type": "no_such_family", "vocab_size": 30522}))
    with pytest.raises(ModelLoadError, match="not a supported family"):
        load_adapter(ModelSpec("small", small), CPU, torch.float32)


def test_injected_registry_with_a_service_token_cap(make_app, model_dirs):
    adapter = open_model("bert", model_dirs["tiny-bert-cls"], device=CPU, dtype=torch.float32)
    client = make_app(adapter, limits={"max_tokens": 8}).test_client()
    response = client.post("/visualize", json={"text": "one two three four five six seven", "model": "bert"})
    assert_error(response, 422, "too_many_tokens", "text")
    assert "9 tokens" in response.get_json()["error"]["message"] and "at most 8" in response.get_json()["error"]["message"]
    with pytest.raises(InvalidInput):
        adapter.estimate_tokens(TextInput("one two three four five six seven"), CaptureRequest(layers=(0,), max_tokens=8))
    values, meta = values_of(client, text="one two three four five six seven", model="bert", truncate=True)
    assert values.shape == (8, 8) and meta["truncated"] is True
