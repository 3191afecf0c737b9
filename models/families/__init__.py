"""The table of model families attnmap serves: one small module per family.

The registry (which checkpoints load, and as what kind) and the adapters (what is particular
about a family) both read this table, so support cannot drift between them. Adding a family is
one module here that defines ``FAMILY``, one line in ``_MODULES``, a test and a README row.
"""

from __future__ import annotations

from models.families import bert, deit, dinov2, distilbert, electra, roberta, vit
from models.family import Family, FamilyError, ModelKind, attention_modules

__all__ = ["FAMILIES", "Family", "FamilyError", "ModelKind", "attention_modules", "family_for", "supported_types"]

_MODULES = (vit, deit, dinov2, bert, roberta, distilbert, electra)

FAMILIES: tuple[Family, ...] = tuple(module.FAMILY for module in _MODULES)

_BY_TYPE: dict[str, Family] = {model_type: family for family in FAMILIES for model_type in family.model_types}


def family_for(model_type: str | None) -> Family | None:
    """The family serving ``model_type`` (a config's ``model_type``), or None."""
    return _BY_TYPE.get(model_type or "")


def supported_types(kind: ModelKind | None = None) -> list[str]:
    """Every served ``model_type``, of one kind or all, sorted."""
    return sorted(t for family in FAMILIES if kind in (None, family.kind) for t in family.model_types)
