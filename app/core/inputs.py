"""Decoded model inputs: what the decoders produce and the model adapters consume."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class ImageInput:
    """A decoded RGB image (uint8 ``[H, W, 3]``, EXIF orientation applied)."""

    pixels: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TextInput:
    """A validated text, optionally with a second segment."""

    text: str
    text_pair: str | None = None
