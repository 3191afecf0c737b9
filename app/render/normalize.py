"""Scaling maps to [0, 1] and to colour indices."""

from __future__ import annotations

from typing import Literal

import numpy as np

from app.render.colormaps import LEVELS

Normalization = Literal["minmax", "none", "row", "percentile"]

# ``percentile``: the top of the colour range is this percentile of the values, so that a few
# dominant cells (the [CLS]/[SEP] or first-token "sink" columns of a long input) are drawn at the
# top colour instead of pressing everything else into the bottom one.
CLIP_PERCENTILE = 99.0


def normalize(values: np.ndarray, mode: Normalization = "minmax", vmin: float = 0.0, vmax: float = 1.0,
              counted: np.ndarray | None = None) -> tuple[np.ndarray, float, float]:
    """Scale to [0, 1] and return ``(scaled, low, high)``.

    - ``minmax`` uses the map's own range (a constant map becomes all zeros, never NaN);
    - ``none`` uses the fixed ``vmin``/``vmax`` so maps are comparable across requests and clips;
    - ``percentile`` runs from the minimum to the 99th percentile and clips what lies above;
    - ``row`` scales each row (each query's distribution) by its own minimum and maximum, so every
      row uses the whole colour range; ``low, high`` are then ``0, 1`` (a share of the row's range).

    ``counted`` (a boolean mask of ``values``' shape) says which cells set the range (the others,
    e.g. special tokens, are clipped to it); it applies to ``minmax`` and ``percentile``.
    Arithmetic is float64 so that ranges near the float32 limits do not overflow.
    """
    data = values.astype(np.float64, copy=False)
    if mode == "row" and data.ndim == 2:
        return _per_row(data), 0.0, 1.0
    sample = data[counted] if counted is not None and counted.any() else data
    if mode == "none":
        low, high = float(vmin), float(vmax)
    elif sample.size == 0:
        low = high = 0.0
    else:
        low = float(sample.min())
        high = float(np.percentile(sample, CLIP_PERCENTILE)) if mode == "percentile" else float(sample.max())
        if mode == "percentile" and high <= low:
            high = float(sample.max())
    span = high - low
    if not np.isfinite(span) or span <= 0:
        scaled = np.zeros_like(data) if mode != "none" else (data > low).astype(np.float64)
        return scaled, low, high
    return np.clip((data - low) / span, 0.0, 1.0), low, high


def _per_row(data: np.ndarray) -> np.ndarray:
    low = data.min(axis=1, keepdims=True)
    span = data.max(axis=1, keepdims=True) - low
    with np.errstate(invalid="ignore", divide="ignore"):
        scaled = np.where(span > 0, (data - low) / np.where(span > 0, span, 1.0), 0.0)
    return np.clip(scaled, 0.0, 1.0)


def token_range_mask(shape: tuple[int, ...], excluded: list[int] | tuple[int, ...]) -> np.ndarray | None:
    """Cells of a token map (1-D row, or square matrix) that set the colour range: every cell whose
    row or column is an ``excluded`` position is left out. ``None`` when nothing is excluded."""
    if not excluded:
        return None
    mask = np.ones(shape, dtype=bool)
    positions = [p for p in excluded if 0 <= p < shape[-1]]
    mask[..., positions] = False
    if len(shape) == 2 and shape[0] == shape[1]:
        mask[positions, :] = False
    return mask


def to_indices(scaled: np.ndarray) -> np.ndarray:
    """[0, 1] -> uint8 colour indices 0..LEVELS-1 (the top value gets the top colour)."""
    return np.rint(scaled * (LEVELS - 1)).astype(np.uint8)
