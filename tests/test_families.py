"""The table of model families: what the registry serves is exactly what the table declares."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from models.families import FAMILIES, attention_modules, family_for, supported_types
from models.family import FamilyError
from models.registry import ModelLoadError, ModelSpec, family_of, infer_kind, open_model
from tests.text_models import save_tiny_roberta

CPU = torch.device("cpu")


def test_each_model_type_belongs_to_one_family() -> None:
    served = [model_type for family in FAMILIES for model_type in family.model_types]
    assert len(served) == len(set(served))
    assert sorted(served) == supported_types()
    for family in FAMILIES:
        for model_type in family.model_types:
            assert family_for(model_type) is family


def test_the_table_covers_the_documented_families() -> None:
    assert set(supported_types("vision")) == {"vit", "deit", "dinov2", "dinov2_with_registers"}
    assert {"bert", "roberta", "xlm-roberta", "camembert", "distilbert", "electra"} <= set(supported_types("text"))


def write_config(directory: Path, model_type: str) -> ModelSpec:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps({"model_type": model_type}))
    return ModelSpec("m", directory)


def test_registry_and_kind_read_the_table(tmp_path: Path) -> None:
    assert infer_kind(write_config(tmp_path / "a", "dinov2")) == "vision"
    assert infer_kind(write_config(tmp_path / "b", "camembert")) == "text"
    with pytest.raises(ModelLoadError, match=r"not a supported family.*supported: .*bert"):
        family_of(write_config(tmp_path / "c", "no_such_family"))
    with pytest.raises(ModelLoadError, match=r"outside transformers' attention interface"):
        family_of(write_config(tmp_path / "d", "bloom"))
    # Encoders too: relative-position attention computed inline, refused with the reason (not "unsupported").
    for model_type, name in (("deberta-v2", "DeBERTa-v2"), ("swinv2", "SwinV2")):
        with pytest.raises(ModelLoadError, match=rf"{name} .*outside transformers' attention interface.*vit"):
            family_of(write_config(tmp_path / model_type, model_type))


def test_a_configured_kind_must_agree_with_the_family(tmp_path: Path) -> None:
    spec = write_config(tmp_path / "a", "vit")
    with pytest.raises(ModelLoadError, match="kind 'text' was configured"):
        family_of(ModelSpec(spec.name, spec.path, "text"))


def test_camembert_loads_through_the_roberta_family(tmp_path: Path) -> None:
    """Before the table, the text family code knew CamemBERT but the registry refused it."""
    roberta = save_tiny_roberta(tmp_path / "roberta")
    config = json.loads((roberta / "config.json").read_text())
    config.update(model_type="camembert", architectures=["CamembertModel"])
    (roberta / "config.json").write_text(json.dumps(config))
    adapter = open_model("camembert", roberta, device=CPU, dtype=torch.float32)
    assert adapter.info.family == "camembert"
    # Positions start after the padding index: 40 embeddings, pad id 1 -> 38 usable positions.
    assert adapter.info.max_tokens == 38


def test_attention_modules_come_from_what_transformers_records() -> None:
    from transformers import BertConfig, BertModel

    model = BertModel(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=3, num_attention_heads=2,
                                 intermediate_size=20))
    modules = attention_modules(model, 3)
    assert [type(m).__name__ for m in modules] == ["BertSelfAttention"] * 3
    with pytest.raises(FamilyError, match="3 BertSelfAttention modules for 4 layers"):
        attention_modules(model, 4)
    with pytest.raises(FamilyError, match="does not say"):
        attention_modules(torch.nn.Linear(2, 2), 1)
