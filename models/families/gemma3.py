"""Gemma 3 (text): local/global layers with per-type rotary bases."""

from models.family import Family
from models.hf_causal import CausalLMAdapter

FAMILY = Family(name="gemma3", model_types=("gemma3_text",), kind="text", adapter=CausalLMAdapter,
                gradient_score="next_token_logit", causal=True)
