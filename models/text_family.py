"""What differs between the Hugging Face text encoder families attnmap serves.

Only three things: where each layer's self-attention module sits, how many positions the model
can really take, and whether the checkpoint carries a classification head. Everything else
(tokenising, capture, scores) is shared by :mod:`models.hf_text`.
"""

from __future__ import annotations

from typing import Any

from torch import nn

# Families whose position ids start after the padding index (RoBERTa's "padding_idx + 1"
# convention): their last pad_token_id + 1 position embeddings can never be used.
_PADDING_OFFSET_TYPES = {"roberta", "xlm-roberta", "camembert"}

# The self-attention class of each family, by name: in eager mode (transformers 5.x) its
# forward returns ``(context, attention_probs)`` with probs shaped [batch, heads, query, key].
SELF_ATTENTION_CLASSES = {
    "bert": "BertSelfAttention",
    "roberta": "RobertaSelfAttention",
    "xlm-roberta": "XLMRobertaSelfAttention",
    "camembert": "CamembertSelfAttention",
    "electra": "ElectraSelfAttention",
    "distilbert": "DistilBertSelfAttention",
}


class FamilyError(ValueError):
    """The checkpoint is not a text encoder family this adapter understands."""


def position_limit(config: Any) -> int:
    """Longest input (special tokens included) whose position ids stay inside the embedding table.

    Going past it is an index error on CPU and a device-side assert that poisons the whole CUDA
    context on a GPU, so the token cap is never allowed above this number.
    """
    limit = int(config.max_position_embeddings)
    if config.model_type in _PADDING_OFFSET_TYPES:
        limit -= int(config.pad_token_id if config.pad_token_id is not None else 1) + 1
    return limit


def has_classification_head(config: Any) -> bool:
    """True when the checkpoint was saved from a ``*ForSequenceClassification`` model."""
    return any(name.endswith("ForSequenceClassification") for name in (config.architectures or ()))


def _layer_list(base: nn.Module) -> nn.ModuleList:
    """The ModuleList of transformer blocks: ``encoder.layer`` (BERT-likes) or ``transformer.layer`` (DistilBERT)."""
    for container in ("encoder", "transformer"):
        layers = getattr(getattr(base, container, None), "layer", None)
        if isinstance(layers, nn.ModuleList):
            return layers
    raise FamilyError("no encoder.layer or transformer.layer list of blocks")


def attention_modules(model: nn.Module, model_type: str) -> list[nn.Module]:
    """Each layer's self-attention module, in layer order.

    ``attention.self`` in BERT-likes (the outer ``attention`` adds the output projection and
    residual); ``attention`` itself in DistilBERT. The class name is checked so that a renamed
    or restructured family fails at load time instead of capturing the wrong tensor.
    """
    expected = SELF_ATTENTION_CLASSES.get(model_type)
    if expected is None:
        raise FamilyError(f"model_type {model_type!r} is not a supported text family ({', '.join(SELF_ATTENTION_CLASSES)})")
    base = getattr(model, "base_model", model)
    modules = []
    for index, block in enumerate(_layer_list(base)):
        attention = getattr(block, "attention", None)
        module = getattr(attention, "self", attention)
        if not isinstance(module, nn.Module) or type(module).__name__ != expected:
            found = type(module).__name__ if module is not None else "nothing"
            raise FamilyError(f"layer {index}: expected {expected}, found {found}")
        modules.append(module)
    if not modules:
        raise FamilyError("the model has no layers")
    return modules
