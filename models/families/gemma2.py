"""Gemma 2: attention-logit softcapping and alternating sliding/global layers (the engine computes softcapped layers exactly)."""

from models.family import Family
from models.hf_causal import CausalLMAdapter

FAMILY = Family(name="gemma2", model_types=("gemma2",), kind="text", adapter=CausalLMAdapter,
                gradient_score="next_token_logit", causal=True)
