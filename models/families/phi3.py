"""Phi-3: fused qkv projection, grouped heads, optional sliding window."""

from models.family import Family
from models.hf_causal import CausalLMAdapter

FAMILY = Family(name="phi3", model_types=("phi3",), kind="text", adapter=CausalLMAdapter,
                gradient_score="next_token_logit", causal=True)
