"""Aggregates over an audit's measurements and the CI gate (pure functions)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def quantile(values: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile with linear interpolation (numpy's default); None for no values."""
    ordered = sorted(values)
    if not ordered:
        return None
    position = (len(ordered) - 1) * q
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def describe(values: Sequence[float]) -> dict[str, float | None]:
    """Mean, standard deviation, min, 10th percentile, median, 90th percentile and max."""
    if not values:
        return {"mean": None, "std": None, "min": None, "p10": None, "median": None, "p90": None, "max": None}
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
    return {"mean": mean, "std": std, "min": min(values), "p10": quantile(values, 0.1),
            "median": quantile(values, 0.5), "p90": quantile(values, 0.9), "max": max(values)}


def gate(values: Sequence[float], threshold: float, max_share: float, *, below: bool = False) -> dict[str, Any]:
    """How many values pass ``threshold`` (above it, or below it with ``below``) and whether that share exceeds ``max_share``.

    Fails when ``count / len(values) > max_share``: ``--max-share 0`` tolerates none.
    No values: the gate cannot pass (an audit that measured nothing proves nothing).
    """
    count = sum(1 for v in values if (v < threshold if below else v > threshold))
    share = count / len(values) if values else None
    return {"threshold": threshold, "direction": "below" if below else "above", "max_share": max_share,
            "count": count, "share": share, "failed": share is None or share > max_share}


def histogram(values: Sequence[float], bins: int = 20, low: float = 0.0, high: float = 1.0) -> list[int]:
    """Counts of ``values`` in ``bins`` equal bins over [low, high] (the last bin includes ``high``)."""
    counts = [0] * bins
    width = (high - low) / bins
    for value in values:
        index = int((value - low) / width) if width > 0 else 0
        counts[min(max(index, 0), bins - 1)] += 1
    return counts
