"""Tiny random models of every family the capture engine serves, saved to disk and loaded back.

Each builder returns a config small enough (2 layers, hidden 32) that a forward pass takes
milliseconds; :func:`save_tiny` writes a seeded random model to a directory so tests load it
the way attnmap does (``from_pretrained`` with an ``attn_implementation``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

VOCAB = 99
_DECODER = {"vocab_size": VOCAB, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 64,
            "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}
_ENCODER = {"vocab_size": VOCAB, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 4, "max_position_embeddings": 64, "pad_token_id": 1}
_VISION = {"image_size": 32, "patch_size": 8, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
           "num_attention_heads": 4}


def _gpt2() -> Any:
    from transformers import GPT2Config
    return GPT2Config(vocab_size=VOCAB, n_positions=64, n_embd=32, n_layer=2, n_head=4, bos_token_id=1, eos_token_id=2)


def _llama() -> Any:
    from transformers import LlamaConfig
    return LlamaConfig(**_DECODER)


def _mistral() -> Any:
    from transformers import MistralConfig
    return MistralConfig(**_DECODER, sliding_window=4)  # tests use sequences of 9+ tokens


def _qwen2() -> Any:
    from transformers import Qwen2Config
    return Qwen2Config(**_DECODER)


def _qwen3() -> Any:
    from transformers import Qwen3Config
    return Qwen3Config(**_DECODER, head_dim=8)


def _gemma2() -> Any:
    from transformers import Gemma2Config
    return Gemma2Config(**_DECODER, head_dim=8, sliding_window=4, attn_logit_softcapping=5.0,
                        final_logit_softcapping=30.0, query_pre_attn_scalar=8)


def _gemma3() -> Any:
    from transformers import Gemma3TextConfig
    return Gemma3TextConfig(**_DECODER, head_dim=8, sliding_window=4, query_pre_attn_scalar=8,
                            layer_types=["sliding_attention", "full_attention"])


def _phi3() -> Any:
    from transformers import Phi3Config
    return Phi3Config(**_DECODER)


def _gpt_oss() -> Any:
    from transformers import GptOssConfig
    return GptOssConfig(**{**_DECODER, "intermediate_size": 32}, head_dim=8, num_local_experts=2, num_experts_per_tok=1,
                        sliding_window=4, layer_types=["sliding_attention", "full_attention"],
                        rope_parameters={"rope_type": "default", "rope_theta": 10000.0})


def _bert() -> Any:
    from transformers import BertConfig
    return BertConfig(**_ENCODER)


def _roberta() -> Any:
    from transformers import RobertaConfig
    return RobertaConfig(**_ENCODER)


def _xlm_roberta() -> Any:
    from transformers import XLMRobertaConfig
    return XLMRobertaConfig(**_ENCODER)


def _electra() -> Any:
    from transformers import ElectraConfig
    return ElectraConfig(**_ENCODER, embedding_size=16)


def _distilbert() -> Any:
    from transformers import DistilBertConfig
    return DistilBertConfig(vocab_size=VOCAB, dim=32, hidden_dim=64, n_layers=2, n_heads=4, max_position_embeddings=64,
                            pad_token_id=0)


def _vit() -> Any:
    from transformers import ViTConfig
    return ViTConfig(**_VISION)


def _deit() -> Any:
    from transformers import DeiTConfig
    return DeiTConfig(**_VISION)


def _dinov2() -> Any:
    from transformers import Dinov2Config
    return Dinov2Config(**_VISION)


def _gpt_neo() -> Any:
    from transformers import GPTNeoConfig
    return GPTNeoConfig(vocab_size=VOCAB, max_position_embeddings=64, hidden_size=32, num_layers=2, num_heads=4,
                        attention_types=[[["global", "local"], 1]], window_size=4)


def _bloom() -> Any:
    from transformers import BloomConfig
    return BloomConfig(vocab_size=VOCAB, hidden_size=32, n_layer=2, n_head=4)


CAUSAL: dict[str, Callable[[], Any]] = {
    "gpt2": _gpt2, "llama": _llama, "mistral": _mistral, "qwen2": _qwen2, "qwen3": _qwen3,
    "gemma2": _gemma2, "gemma3": _gemma3, "phi3": _phi3, "gpt_oss": _gpt_oss,
}
TEXT_ENCODERS: dict[str, Callable[[], Any]] = {
    "bert": _bert, "roberta": _roberta, "xlm-roberta": _xlm_roberta, "electra": _electra, "distilbert": _distilbert,
}
VISION: dict[str, Callable[[], Any]] = {"vit": _vit, "deit": _deit, "dinov2": _dinov2}
OUTSIDE: dict[str, Callable[[], Any]] = {"gpt_neo": _gpt_neo, "bloom": _bloom}


def model_class(family: str) -> Any:
    """The class a family is saved and loaded with (causal LM head for decoders, base model otherwise)."""
    import transformers
    if family == "gemma3":
        return transformers.Gemma3ForCausalLM
    if family in CAUSAL or family in OUTSIDE:
        return transformers.AutoModelForCausalLM
    return transformers.AutoModel


def save_tiny(family: str, folder: Path) -> Path:
    """Write a seeded random tiny model of ``family`` to ``folder`` (safetensors) and return it."""
    builders = {**CAUSAL, **TEXT_ENCODERS, **VISION, **OUTSIDE}
    config = builders[family]()
    torch.manual_seed(0)
    cls = model_class(family)
    model = cls.from_config(config) if hasattr(cls, "from_config") else cls(config)
    # Random init leaves some norms at exactly one and biases at zero; perturb every parameter so
    # that q/k norms, biases and scalars all take part in the comparison.
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.2)
    model.save_pretrained(folder)
    return folder


def load(folder: Path, family: str, attn_implementation: str) -> Any:
    """Load a saved tiny model in eval mode with the given attention implementation."""
    return model_class(family).from_pretrained(folder, attn_implementation=attn_implementation).eval()


def text_inputs(batch: int = 1, length: int = 10, seed: int = 1) -> torch.Tensor:
    """Random token ids avoiding the special ids 0-2."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(3, VOCAB, (batch, length), generator=generator)


def pixel_inputs(seed: int = 1) -> torch.Tensor:
    """A random 32x32 image batch of one."""
    return torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(seed))
