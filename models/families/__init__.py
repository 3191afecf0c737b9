"""The table of model families attnmap serves: one small module per family.

The registry (which checkpoints load, and as what kind) and the adapters (what is particular
about a family) both read this table, so support cannot drift between them. Adding a family is
one module here that defines ``FAMILY``, one line in ``_MODULES``, a test and a README row.
"""

from __future__ import annotations

from models.families import (
    bert,
    deit,
    dinov2,
    distilbert,
    electra,
    gemma2,
    gemma3,
    gpt2,
    llama,
    mistral,
    phi3,
    qwen2,
    qwen3,
    roberta,
    vit,
)
from models.family import Family, FamilyError, ModelKind, attention_modules

__all__ = ["FAMILIES", "OUTSIDE_INTERFACE", "Family", "FamilyError", "ModelKind", "attention_modules", "family_for",
           "refused_family", "supported_types"]

_MODULES = (vit, deit, dinov2, bert, roberta, distilbert, electra, llama, mistral, qwen2, qwen3, gemma2, gemma3, phi3, gpt2)

# Families whose attention transformers computes inline at the pinned version (decoders, and two
# encoders with relative-position attention): the capture function is never called, so serving
# them would mean eager O(T^2) attention in every layer. They are refused at load with this reason.
OUTSIDE_INTERFACE: dict[str, str] = {"bloom": "Bloom", "falcon": "Falcon", "mpt": "MPT", "gpt_neo": "GPT-Neo",
                                     "deberta-v2": "DeBERTa-v2", "swinv2": "SwinV2"}

FAMILIES: tuple[Family, ...] = tuple(module.FAMILY for module in _MODULES)

_BY_TYPE: dict[str, Family] = {model_type: family for family in FAMILIES for model_type in family.model_types}


def family_for(model_type: str | None) -> Family | None:
    """The family serving ``model_type`` (a config's ``model_type``), or None."""
    return _BY_TYPE.get(model_type or "")


def supported_types(kind: ModelKind | None = None) -> list[str]:
    """Every served ``model_type``, of one kind or all, sorted."""
    return sorted(t for family in FAMILIES if kind in (None, family.kind) for t in family.model_types)


def refused_family(model_type: str | None) -> str | None:
    """Why a known family is refused (it bypasses transformers' attention interface), or None."""
    name = OUTSIDE_INTERFACE.get(model_type or "")
    if name is None:
        return None
    served = ", ".join(family.name for family in FAMILIES)
    return (f"{name} ({model_type!r}) computes attention outside transformers' attention interface, so attnmap cannot "
            f"capture it on the fused path; supported families: {served}")
