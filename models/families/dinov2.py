"""DINOv2, with or without register tokens; it interpolates position encodings by itself."""

from models.family import Family
from models.hf_vision import HFVisionAdapter

FAMILY = Family(name="dinov2", model_types=("dinov2", "dinov2_with_registers"), kind="vision", adapter=HFVisionAdapter)
