"""DeiT: CLS and (distilled checkpoints) a distillation token before the patches; like ViT otherwise."""

from models.family import Family
from models.hf_vision import HFVisionAdapter

FAMILY = Family(name="deit", model_types=("deit",), kind="vision", adapter=HFVisionAdapter, interpolate_flag=True)
