"""Operators' own decoder LLMs: tiny random Llama, Mistral, Qwen2, Gemma 2 and GPT-2 directories (and a GGUF file).

Each is saved to disk, listed in a models TOML, served through the HTTP API, and compared with an
eager ``output_attentions`` pass over the same weights. Bloom (outside the attention interface) is
refused at load with a message that says why.
"""

from __future__ import annotations

import numpy as np
import pytest

from models.adapter import CaptureRequest, TextInput
from models.registry import ModelLoadError
from tests.causal_support import TINY_FAMILIES, eager_attentions, eager_reference, save_tiny_bloom, save_tiny_causal, smollm2_adapter

TEXT = "The quick brown fox jumps over the lazy dog while the cat watches"


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("causal-models")
    return {f"tiny-{family}": save_tiny_causal(root / family, family) for family in TINY_FAMILIES}


@pytest.fixture(scope="module")
def tiny_causal_client(model_dirs, make_app, tmp_path_factory):
    """One app serving every tiny causal family as a user model (a models.toml, as an operator writes it)."""
    config = tmp_path_factory.mktemp("config") / "models.toml"
    config.write_text("".join(f'[models.{name}]\npath = "{path}"\n\n' for name, path in model_dirs.items()))
    return make_app(models_config=str(config)).test_client()


def values_of(tiny_causal_client, **fields):
    response = tiny_causal_client.post("/visualize", json={"format": "json", **fields})
    assert response.status_code == 200, response.get_json()
    return np.asarray(response.get_json()["values"]), response.get_json()["meta"]


def test_models_lists_every_family_as_causal(tiny_causal_client):
    entries = {entry["name"]: entry for entry in tiny_causal_client.get("/models").get_json()["models"]}
    assert set(entries) == {f"tiny-{family}" for family in TINY_FAMILIES}
    for family in TINY_FAMILIES:
        entry = entries[f"tiny-{family}"]
        assert entry["causal"] is True and entry["layers"] == 2 and entry["heads"] == 4
        assert entry["kv_heads"] == (4 if family == "gpt2" else 2)


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_rows_and_matrices_equal_eager(tiny_causal_client, model_dirs, family):
    ids = list(smollm2_adapter().tokenizer(TEXT)["input_ids"])
    reference = eager_attentions(eager_reference(model_dirs[f"tiny-{family}"]), ids)
    name = f"tiny-{family}"
    # Head 3 sits in the second key/value group: grouped heads must be expanded correctly.
    rows, meta = values_of(tiny_causal_client, model=name, text=TEXT, view="layers", head=3)
    np.testing.assert_allclose(rows, np.stack([layer[3, -1] for layer in reference]), atol=1e-5)
    assert meta["causal"] is True
    matrix, _ = values_of(tiny_causal_client, model=name, text=TEXT, layer=1, head=1)
    np.testing.assert_allclose(matrix, reference[1][1], atol=1e-5)
    row, _ = values_of(tiny_causal_client, model=name, text=TEXT, layer=0, head=0, query=-3)
    np.testing.assert_allclose(row, reference[0][0][-3], atol=1e-5)
    if family in ("mistral", "gemma2", "gemma3"):
        # A sliding window of 4: the last row sees only the last 4 keys in the windowed layer.
        windowed = reference[0][0][-1]
        assert (windowed[:-4] == 0).all() and row.shape == (len(ids),)


def test_generation_on_a_user_model(tiny_causal_client):
    values, meta = values_of(tiny_causal_client, model="tiny-llama", text=TEXT, generate=3, layer=0)
    assert values.shape[0] == len(meta["generated_ids"]) >= 1


def test_families_outside_the_interface_are_refused(make_app, tmp_path):
    config = tmp_path / "models.toml"
    config.write_text(f'[models.tiny-bloom]\npath = "{save_tiny_bloom(tmp_path / "bloom")}"\n')
    with pytest.raises(ModelLoadError, match=r"Bloom.*outside transformers' attention interface"):
        make_app(models_config=str(config))


@pytest.mark.slow
def test_a_single_gguf_file_is_a_user_model(make_app, tmp_path):
    """The smollm2 GGUF itself, allow-listed by path: dequantised at load, same next token as the converted copy."""
    from models.smollm2 import gguf_path

    config = tmp_path / "models.toml"
    config.write_text(f'[models.from-gguf]\npath = "{gguf_path()}"\n')
    gguf_client = make_app(models_config=str(config), warmup=False).test_client()
    (entry,) = gguf_client.get("/models").get_json()["models"]
    assert entry["causal"] is True and entry["family"] == "llama" and entry["dtype"] == "float32"
    values, meta = values_of(gguf_client, model="from-gguf", text="The capital of France is", query="last")
    assert meta["prediction"]["label"] == " Paris"
    reference = smollm2_adapter().capture(TextInput("The capital of France is"),
                                          CaptureRequest(layers=(29,), rows=(-1,))).stack.weights[0, :, 0].mean(axis=0)
    np.testing.assert_allclose(values, reference, atol=1e-5)
