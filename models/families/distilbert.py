"""DistilBERT: no segment ids; its blocks sit in ``transformer.layer``."""

from models.family import Family
from models.hf_text import HFTextAdapter

FAMILY = Family(name="distilbert", model_types=("distilbert",), kind="text", adapter=HFTextAdapter,
                gradient_score="encoder_score")
