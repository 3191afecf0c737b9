"""What is special about reading a causal (decoder) model's attention: the mask and the sink.

Pure numpy. In a causal model each query sees only the keys at or before its own position, so
the cells after it are not "low attention" but impossible; renderers draw them in a masked
colour. Most decoder LLMs also park a large share of every row on the first token (the
attention sink: 63% of SmolLM2's last row in its last layer), which flattens every other
pattern; :func:`exclude_first_key` drops that key and renormalises the rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from app.core.reduce import normalize_rows


def causal_mask(keys: int, positions: Sequence[int]) -> np.ndarray:
    """Bool ``[len(positions), keys]``: True where the key comes after the row's query position."""
    return np.arange(keys)[np.newaxis, :] > np.asarray(positions, dtype=np.int64)[:, np.newaxis]


def square_mask(size: int) -> np.ndarray:
    """Bool ``[size, size]`` upper triangle (above the diagonal): the masked half of a causal matrix.

    Also right for a matrix whose tokens were merged into consecutive groups or partly dropped:
    order is kept, so group j lies wholly after group i exactly when j > i.
    """
    return np.triu(np.ones((size, size), dtype=bool), k=1)


@dataclass(frozen=True)
class SinkExcluded:
    """A map without its first key: values renormalised per row, labels and mask cut to match."""

    values: np.ndarray
    col_labels: list[str] | None
    row_labels: list[str] | None
    masked: np.ndarray | None
    sink_mass: float


def exclude_first_key(values: np.ndarray, col_labels: list[str] | None, row_labels: list[str] | None,
                      masked: np.ndarray | None, *, square: bool) -> SinkExcluded:
    """Drop key 0 (and, for a square matrix, query 0, which then sees nothing) and renormalise rows.

    ``sink_mass`` is the mean share of each shown row that sat on the first key before removal.
    A row that put all its mass on the first key becomes all zeros (nothing left to show).
    """
    matrix = values.reshape(1, -1) if values.ndim == 1 else values
    mask = None if masked is None else (masked.reshape(1, -1) if masked.ndim == 1 else masked)
    if square:
        matrix = matrix[1:]
        mask = None if mask is None else mask[1:]
        row_labels = None if row_labels is None else row_labels[1:]
    sums = matrix.sum(axis=-1)
    shares = np.divide(matrix[:, 0], sums, out=np.zeros_like(sums, dtype=np.float64), where=sums > 0)
    kept = normalize_rows(matrix[:, 1:].astype(np.float64))
    mask = None if mask is None else mask[:, 1:]
    if values.ndim == 1:
        kept = kept[0]
        mask = None if mask is None else mask[0]
    return SinkExcluded(values=kept, col_labels=None if col_labels is None else col_labels[1:], row_labels=row_labels,
                        masked=mask, sink_mass=float(shares.mean()) if shares.size else 0.0)
