"""ViT: a CLS token, then the patch grid; position encodings interpolate only when asked."""

from models.family import Family
from models.hf_vision import HFVisionAdapter

FAMILY = Family(name="vit", model_types=("vit",), kind="vision", adapter=HFVisionAdapter, interpolate_flag=True)
