"""Llama (the built-in smollm2 is one): rotary positions, grouped key/value heads."""

from models.family import Family
from models.hf_causal import CausalLMAdapter

FAMILY = Family(name="llama", model_types=("llama",), kind="text", adapter=CausalLMAdapter,
                gradient_score="next_token_logit", causal=True)
