"""Facts every decoder-only (causal) LLM config states, and the memory a pass over it needs.

Which decoder families are served is the family table's business (:mod:`models.families`);
this module reads layer, head and size counts from any of their configs the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class CausalFamilyError(ValueError):
    """The checkpoint is not a causal family attnmap can capture."""


@dataclass(frozen=True)
class CausalShape:
    """Layer and head counts and the position limit, read from a config."""

    model_type: str
    layers: int
    heads: int
    kv_heads: int
    hidden: int
    intermediate: int
    vocab: int
    max_positions: int


def causal_shape(config: Any) -> CausalShape:
    """Counts from a transformers config (GPT-2's ``n_layer``/``n_head`` arrive through its attribute map)."""
    heads = int(config.num_attention_heads)
    kv_heads = int(getattr(config, "num_key_value_heads", None) or heads)
    hidden = int(config.hidden_size)
    intermediate = int(getattr(config, "intermediate_size", None) or getattr(config, "n_inner", None) or 4 * hidden)
    positions = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    if not positions:
        raise CausalFamilyError("the config names no position limit (max_position_embeddings)")
    return CausalShape(model_type=str(config.model_type), layers=int(config.num_hidden_layers), heads=heads,
                       kv_heads=kv_heads, hidden=hidden, intermediate=intermediate, vocab=int(config.vocab_size),
                       max_positions=int(positions))


def activation_bytes(shape: CausalShape, tokens: int, *, backward: bool) -> int:
    """Working memory of one forward pass (inference) or of forward + backward, beyond the weights.

    Inference frees each layer's activations before the next, so a few ``T x hidden`` tensors and
    one ``T x intermediate`` MLP block are live at a time (x3 for gate, up and their product),
    plus the logits of the last position only. A backward pass keeps every layer's saved tensors:
    about ``10 x hidden + 4 x intermediate`` floats per token per layer (SmolLM2-135M: 1.4 MB per
    token; measured 1.15 MB), plus full logits of one position.
    """
    per_layer = 10 * shape.hidden + 4 * shape.intermediate if backward else 0
    transient = 8 * shape.hidden + 3 * shape.intermediate
    return 4 * tokens * (transient + shape.layers * per_layer) + 8 * shape.vocab
