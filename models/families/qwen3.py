"""Qwen3: grouped heads with q/k RMS norms."""

from models.family import Family
from models.hf_causal import CausalLMAdapter

FAMILY = Family(name="qwen3", model_types=("qwen3",), kind="text", adapter=CausalLMAdapter,
                gradient_score="next_token_logit", causal=True)
