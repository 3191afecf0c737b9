"""Where patch cells lie in the original image, and how much map mass falls in a region."""

from __future__ import annotations

import numpy as np

Box = tuple[float, float, float, float]


def cell_boxes(grid: tuple[int, int], placement: Box) -> np.ndarray:
    """``[gh, gw, 4]`` boxes (x0, y0, x1, y1) of each patch cell in image pixel coordinates."""
    rows, cols = grid
    x0, y0, x1, y1 = placement
    xs = np.linspace(x0, x1, cols + 1)
    ys = np.linspace(y0, y1, rows + 1)
    boxes = np.empty((rows, cols, 4))
    boxes[..., 0] = xs[:-1][np.newaxis, :]
    boxes[..., 2] = xs[1:][np.newaxis, :]
    boxes[..., 1] = ys[:-1][:, np.newaxis]
    boxes[..., 3] = ys[1:][:, np.newaxis]
    return boxes


def region_mass(values: np.ndarray, placement: Box, region: Box) -> float:
    """Share of the (non-negative part of the) map's mass inside ``region``.

    Each cell contributes its value times the fraction of its area inside the region, so
    regions that cut through patches are measured fairly.
    """
    boxes = cell_boxes((values.shape[0], values.shape[1]), placement)
    rx0, ry0, rx1, ry1 = region
    overlap_w = np.clip(np.minimum(boxes[..., 2], rx1) - np.maximum(boxes[..., 0], rx0), 0.0, None)
    overlap_h = np.clip(np.minimum(boxes[..., 3], ry1) - np.maximum(boxes[..., 1], ry0), 0.0, None)
    area = (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])
    fraction = np.divide(overlap_w * overlap_h, area, out=np.zeros_like(area), where=area > 0)
    mass = np.clip(values.astype(np.float64), 0.0, None)
    total = float(mass.sum())
    return float((mass * fraction).sum() / total) if total > 0 else 0.0


def area_share(placement: Box, region: Box) -> float:
    """Fraction of the model's input area covered by ``region`` (the chance level for region_mass)."""
    x0, y0, x1, y1 = placement
    rx0, ry0, rx1, ry1 = region
    inter = max(0.0, min(x1, rx1) - max(x0, rx0)) * max(0.0, min(y1, ry1) - max(y0, ry0))
    whole = (x1 - x0) * (y1 - y0)
    return inter / whole if whole > 0 else 0.0
