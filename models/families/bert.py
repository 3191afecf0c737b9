"""BERT (the built-in MiniLM is one): position ids from 0, segment ids when the checkpoint has them."""

from models.family import Family
from models.hf_text import HFTextAdapter

FAMILY = Family(name="bert", model_types=("bert",), kind="text", adapter=HFTextAdapter, gradient_score="encoder_score")
