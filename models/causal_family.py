"""What attnmap knows about decoder-only (causal) LLM families.

A causal family is served only when transformers routes its attention through the attention
interface at the pinned version: then the capture function sees every layer's queries and keys,
and the forward pass stays on the fused kernel. Families that compute attention inline never
call it, so they are refused at load time with a message that says so (serving them would mean
eager attention over every layer, O(T^2) per layer, which is what this path exists to avoid).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# model_type -> display name. Each routes through transformers' attention interface (checked
# again at load by a self-check forward pass that must reach every layer).
CAUSAL_TYPES: dict[str, str] = {
    "llama": "Llama",
    "mistral": "Mistral",
    "qwen2": "Qwen2",
    "qwen3": "Qwen3",
    "gemma2": "Gemma 2",
    "gemma3_text": "Gemma 3",
    "phi3": "Phi-3",
    "gpt2": "GPT-2",
}

# Known decoder families whose attention is computed inline (the registered function is never
# called): refused with a clear reason rather than served with missing layers.
OUTSIDE_INTERFACE: dict[str, str] = {
    "bloom": "Bloom",
    "falcon": "Falcon",
    "mpt": "MPT",
    "gpt_neo": "GPT-Neo",
}


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


def check_family(model_type: str) -> str:
    """Display name of a supported causal family, else a :class:`CausalFamilyError` saying why not."""
    if model_type in CAUSAL_TYPES:
        return CAUSAL_TYPES[model_type]
    if model_type in OUTSIDE_INTERFACE:
        raise CausalFamilyError(
            f"{OUTSIDE_INTERFACE[model_type]} ({model_type!r}) computes attention outside transformers' attention "
            "interface, so attnmap cannot capture it on the fused path; supported causal families: "
            + ", ".join(CAUSAL_TYPES.values()))
    raise CausalFamilyError(f"model_type {model_type!r} is not a supported causal family "
                            f"(supported: {', '.join(CAUSAL_TYPES.values())})")


def is_causal_type(model_type: str | None) -> bool:
    """True for every decoder family this module knows, served or refused (refusal happens at load)."""
    return model_type in CAUSAL_TYPES or model_type in OUTSIDE_INTERFACE


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
