"""GPT-2: learned absolute positions, one key/value head per query head."""

from models.family import Family
from models.hf_causal import CausalLMAdapter

FAMILY = Family(name="gpt2", model_types=("gpt2",), kind="text", adapter=CausalLMAdapter,
                gradient_score="next_token_logit", causal=True)
