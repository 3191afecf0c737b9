"""Mistral: Llama-like with a sliding attention window (the mask arrives windowed)."""

from models.family import Family
from models.hf_causal import CausalLMAdapter

FAMILY = Family(name="mistral", model_types=("mistral",), kind="text", adapter=CausalLMAdapter,
                gradient_score="next_token_logit", causal=True)
