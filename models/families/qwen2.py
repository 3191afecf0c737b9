"""Qwen2: grouped key/value heads with q/k/v biases; optional sliding window."""

from models.family import Family
from models.hf_causal import CausalLMAdapter

FAMILY = Family(name="qwen2", model_types=("qwen2",), kind="text", adapter=CausalLMAdapter,
                gradient_score="next_token_logit", causal=True)
