"""Scaling maps to [0, 1] and to colour indices."""

from __future__ import annotations

from typing import Literal

import numpy as np

from app.render.colormaps import LEVELS

Normalization = Literal["minmax", "none"]


def normalize(values: np.ndarray, mode: Normalization = "minmax", vmin: float = 0.0, vmax: float = 1.0) -> tuple[np.ndarray, float, float]:
    """Scale to [0, 1] and return ``(scaled, low, high)``.

    ``minmax`` uses the map's own range (a constant map becomes all zeros, never NaN);
    ``none`` uses the fixed ``vmin``/``vmax`` so maps are comparable across requests and clips.
    Arithmetic is float64 so that ranges near the float32 limits do not overflow.
    """
    data = values.astype(np.float64, copy=False)
    if mode == "minmax":
        low, high = float(data.min()), float(data.max())
    else:
        low, high = float(vmin), float(vmax)
    span = high - low
    if not np.isfinite(span) or span <= 0:
        scaled = np.zeros_like(data) if mode == "minmax" else (data > low).astype(np.float64)
        return scaled, low, high
    return np.clip((data - low) / span, 0.0, 1.0), low, high


def to_indices(scaled: np.ndarray) -> np.ndarray:
    """[0, 1] -> uint8 colour indices 0..LEVELS-1 (the top value gets the top colour)."""
    return np.rint(scaled * (LEVELS - 1)).astype(np.uint8)
