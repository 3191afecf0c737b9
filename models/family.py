"""What a model family declares, and the facts read from any Hugging Face model the same way.

The table of families itself is :mod:`models.families`.

A family is data: the ``model_type`` values it serves, its kind, the adapter that runs it, and
the few facts that really differ between families (where position ids start, whether the vision
embeddings need a flag to interpolate, the score gradient methods differentiate). Facts that
transformers states for every model are read from the model and its config, never from class
names: the attention modules are the modules of the class the model records as ``attentions``
(``_can_record_outputs``), and the layer count is ``config.num_hidden_layers``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from torch import nn

from models.adapter import ModelKind

GradientScore = Literal["class_logit", "encoder_score", "next_token_logit"]


class FamilyError(ValueError):
    """The checkpoint does not have the structure its family promises."""


def no_position_offset(config: Any) -> int:
    """Position ids start at 0 (BERT, DistilBERT, ELECTRA)."""
    return 0


@dataclass(frozen=True)
class Family:
    """One model family: which checkpoints it serves and what is particular about them.

    ``adapter`` builds the adapter (``adapter(name, path, family=..., device=..., dtype=...,
    description=...)``); ``position_offset(config)`` is how many position embeddings can never
    be used (RoBERTa-likes start after the padding index); ``interpolate_flag`` is set for vision
    families whose embeddings interpolate position encodings only when asked; ``gradient_score``
    names what gradient methods differentiate; ``causal`` marks decoder-only language models.
    """

    name: str
    model_types: tuple[str, ...]
    kind: ModelKind
    adapter: Callable[..., Any]
    position_offset: Callable[[Any], int] = no_position_offset
    interpolate_flag: bool = False
    gradient_score: GradientScore = "class_logit"
    causal: bool = False


def attention_modules(model: nn.Module, num_layers: int) -> list[nn.Module]:
    """Each layer's attention module in layer order, as transformers records ``attentions``.

    The class comes from the model's own ``_can_record_outputs`` table (the modules whose
    outputs transformers collects as attention weights); there must be exactly one per layer.
    """
    recorded = _recorded_attention_class(model)
    if recorded is None:
        raise FamilyError("the model does not say which modules record attention weights")
    modules = [module for module in model.modules() if isinstance(module, recorded)]
    if len(modules) != num_layers:
        raise FamilyError(f"found {len(modules)} {recorded.__name__} modules for {num_layers} layers")
    return modules


def _recorded_attention_class(model: nn.Module) -> type[nn.Module] | None:
    """The module class behind ``attentions`` in the recording table of the model or its base model."""
    for owner in (model, getattr(model, "base_model", None)):
        table = getattr(owner, "_can_record_outputs", None) or {}
        entry = table.get("attentions")
        if entry is None:
            continue
        # An entry is a module class, or an OutputRecorder that names one (``target_class``).
        target = getattr(entry, "target_class", entry)
        if isinstance(target, type) and issubclass(target, nn.Module):
            return target
    return None
