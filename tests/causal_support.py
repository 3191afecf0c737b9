"""Helpers for the causal-LM tests: one shared smollm2, tiny random decoders saved to disk, eager references.

Loading smollm2 costs seconds, so every test module gets the same adapter (``smollm2_adapter``,
cached per process) and builds cheap apps around it. The eager reference model is loaded from
the same converted folder with ``attn_implementation="eager"`` and ``output_attentions``: the
way bertviz, inseq and LIT read attention.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    BloomConfig,
    BloomForCausalLM,
    Gemma2Config,
    Gemma2ForCausalLM,
    Gemma3ForCausalLM,
    Gemma3TextConfig,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Phi3Config,
    Phi3ForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)

from app.http.factory import create_app
from models.registry import ModelRegistry

CAPITAL = "The capital of France is"


@cache
def smollm2_dir() -> Path:
    """The converted float32 folder (``make test`` runs the conversion first)."""
    from models.smollm2 import convert

    return convert()


@cache
def smollm2_adapter() -> Any:
    """The served adapter, loaded once per test process."""
    from models.registry import open_model

    return open_model("smollm2", smollm2_dir(), device=torch.device("cpu"), dtype=torch.float32,
                      description="SmolLM2-135M-Instruct causal LM")


def smollm2_app(**config: Any) -> Any:
    """An app serving the shared smollm2 adapter, with ``config`` overriding settings."""
    return create_app({"builtin_models": (), **config}, registry=ModelRegistry([smollm2_adapter()]))


@cache
def eager_smollm2() -> Any:
    """The same weights with eager attention, for reference attention maps."""
    return AutoModelForCausalLM.from_pretrained(smollm2_dir(), attn_implementation="eager", local_files_only=True,
                                                dtype=torch.float32).eval()


def eager_attentions(model: Any, ids: list[int]) -> list[np.ndarray]:
    """Every layer's ``[H, T, T]`` attention from an eager ``output_attentions`` pass."""
    with torch.inference_mode():
        output = model(input_ids=torch.tensor([ids]), output_attentions=True, use_cache=False)
    return [layer[0].float().numpy() for layer in output.attentions]


def token_ids(text: str) -> list[int]:
    """smollm2's token ids of ``text`` (no BOS: its tokenizer adds none)."""
    return list(smollm2_adapter().tokenizer(text)["input_ids"])


TINY = {"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "max_position_embeddings": 256}


def _configs(vocab: int) -> dict[str, Any]:
    return {
        "llama": (LlamaConfig(vocab_size=vocab, **TINY), LlamaForCausalLM),
        "mistral": (MistralConfig(vocab_size=vocab, sliding_window=4, **TINY), MistralForCausalLM),
        "qwen2": (Qwen2Config(vocab_size=vocab, **TINY), Qwen2ForCausalLM),
        "gemma2": (Gemma2Config(vocab_size=vocab, head_dim=8, sliding_window=4, attn_logit_softcapping=5.0,
                                final_logit_softcapping=30.0, query_pre_attn_scalar=8, **TINY), Gemma2ForCausalLM),
        "gpt2": (GPT2Config(vocab_size=vocab, n_embd=32, n_layer=2, n_head=4, n_positions=256), GPT2LMHeadModel),
        "qwen3": (Qwen3Config(vocab_size=vocab, head_dim=8, **TINY), Qwen3ForCausalLM),
        "phi3": (Phi3Config(vocab_size=vocab, pad_token_id=0, **TINY), Phi3ForCausalLM),
        "gemma3": (Gemma3TextConfig(vocab_size=vocab, head_dim=8, sliding_window=4, query_pre_attn_scalar=8,
                                    layer_types=["sliding_attention", "full_attention"], **TINY), Gemma3ForCausalLM),
    }


TINY_FAMILIES = ("llama", "mistral", "qwen2", "gemma2", "gpt2", "qwen3", "phi3", "gemma3")


def save_tiny_causal(directory: Path, family: str) -> Path:
    """A random tiny decoder of ``family`` with smollm2's tokenizer, saved as safetensors."""
    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir(), local_files_only=True)
    torch.manual_seed(0)
    config, cls = _configs(len(tokenizer))[family]
    model = cls(config).eval()
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def save_tiny_bloom(directory: Path) -> Path:
    """A family outside the attention interface (refused at load)."""
    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir(), local_files_only=True)
    BloomForCausalLM(BloomConfig(vocab_size=len(tokenizer), hidden_size=32, n_layer=2, n_head=4)).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def eager_reference(directory: Path) -> Any:
    """A saved tiny model loaded with eager attention."""
    config = AutoConfig.from_pretrained(directory, local_files_only=True)
    return AutoModelForCausalLM.from_pretrained(directory, config=config, attn_implementation="eager",
                                                local_files_only=True).eval()
