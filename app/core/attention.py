"""The value where the raw-weights path and the model path meet."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class AttentionStack:
    """Captured attention of one input, with what is needed to read it.

    ``weights`` is float32 ``[L, H, Q, K]`` for the layers listed in ``layers`` (model layer
    indices, ascending): a model capture may hold only the layers a request needs.
    ``gradients``, when present, has the same shape (d score / d attention, same layer order).
    ``prefix_tokens`` and ``grid`` describe vision inputs (CLS/registers before the patch grid);
    ``special_tokens`` and ``words`` (word id per token) describe text inputs.
    ``query_rows``, when set, are the absolute query positions the ``Q`` axis holds (a causal
    model captures only the rows a request needs: ``[L, H, R, K]``); None means every row.
    ``row_tokens`` labels those rows when they are not the key tokens themselves (generation:
    the token each row produced). ``causal``: keys after a row's own position are masked.
    """

    weights: np.ndarray
    layers: tuple[int, ...]
    num_layers: int
    tokens: list[str] | None = None
    prefix_tokens: int = 0
    grid: tuple[int, int] | None = None
    gradients: np.ndarray | None = None
    special_tokens: tuple[int, ...] = ()
    words: tuple[int | None, ...] | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    query_rows: tuple[int, ...] | None = None
    row_tokens: list[str] | None = None
    causal: bool = False

    @property
    def num_heads(self) -> int:
        """Heads per layer."""
        return int(self.weights.shape[1])

    @property
    def num_queries(self) -> int:
        """Query positions of the input (the key count when only some rows were captured)."""
        return int(self.weights.shape[-1]) if self.query_rows is not None else int(self.weights.shape[-2])

    def row_position(self, query: int) -> int:
        """Index on the ``Q`` axis of absolute query position ``query`` (already in range)."""
        if self.query_rows is None:
            return query
        if query not in self.query_rows:
            raise KeyError(query)
        return self.query_rows.index(query)

    def layer_slice(self, layer: int) -> np.ndarray:
        """Weights ``[H, Q, K]`` of model layer ``layer`` (which must have been captured)."""
        return self.weights[self.layers.index(layer)]

    def layers_up_to(self, layer: int) -> np.ndarray:
        """Weights ``[n, H, Q, K]`` of every captured layer from the first through ``layer``."""
        return self.weights[: self.layers.index(layer) + 1]


def stack_from_array(array: np.ndarray, tokens: list[str] | None = None) -> AttentionStack:
    """Wrap a rank 2-4 array as a full stack ``[L, H, Q, K]`` covering every layer."""
    while array.ndim < 4:
        array = array[np.newaxis]
    return AttentionStack(weights=array, layers=tuple(range(array.shape[0])), num_layers=array.shape[0], tokens=tokens)
