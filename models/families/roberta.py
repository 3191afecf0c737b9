"""RoBERTa and its multilingual relatives: position ids start after the padding index.

Their first ``pad_token_id + 1`` position embeddings can never be used, so the token limit is
``max_position_embeddings - (pad_token_id + 1)``.
"""

from typing import Any

from models.family import Family
from models.hf_text import HFTextAdapter


def padding_offset(config: Any) -> int:
    """Position embeddings below ``pad_token_id + 1`` are never used."""
    return int(config.pad_token_id if config.pad_token_id is not None else 1) + 1


FAMILY = Family(name="roberta", model_types=("roberta", "xlm-roberta", "camembert"), kind="text", adapter=HFTextAdapter,
                position_offset=padding_offset, gradient_score="encoder_score")
