"""ELECTRA discriminators and classifiers: a BERT-shaped encoder."""

from models.family import Family
from models.hf_text import HFTextAdapter

FAMILY = Family(name="electra", model_types=("electra",), kind="text", adapter=HFTextAdapter, gradient_score="encoder_score")
