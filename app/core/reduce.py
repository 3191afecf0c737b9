"""Reductions of an attention stack to one 2-D map (pure numpy, float64 internally).

Each method is a small function over already resolved selections (the request plan,
:mod:`app.service.plan`, turns user selections into indices and names the valid range).
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from app.core.errors import InvalidInput

Fusion = Literal["mean", "max", "min"]






def normalize_rows(matrix: np.ndarray) -> np.ndarray:
    """Scale each row to sum 1 (keepdims, so rows never divide by the wrong sum); zero rows stay zero."""
    sums = matrix.sum(axis=-1, keepdims=True)
    return np.divide(matrix, sums, out=np.zeros_like(matrix), where=sums > 0)


def fuse_heads(heads: np.ndarray, head: int | Fusion) -> np.ndarray:
    """``[H, Q, K]`` -> ``[Q, K]``: one head, or the mean/max/min over heads.

    ``mean`` keeps stochastic rows stochastic; ``max`` and ``min`` do not, so their rows are
    renormalised when the input rows were non-negative probabilities.
    """
    # Reduce first, convert after: a float64 copy of every head ([H, T, T]) costs more than the
    # reduction itself on long inputs. max/min pick elements, so they are exact in float32, and
    # the mean accumulates in float64 either way.
    if isinstance(head, int):
        return heads[head].astype(np.float64)
    if head == "mean":
        return heads.mean(axis=0, dtype=np.float64)
    fused = (heads.max(axis=0) if head == "max" else heads.min(axis=0)).astype(np.float64)
    return normalize_rows(fused) if (fused >= 0).all() else fused


def rollout(layers: np.ndarray, head: int | Fusion = "mean", discard_ratio: float = 0.0) -> np.ndarray:
    """Attention rollout over ``[L, H, T, T]`` (Abnar & Zuidema 2020), residual-aware.

    Per layer: fuse heads, optionally drop the smallest ``discard_ratio`` of weights (never the
    first token's self-edge), add the identity for the residual path (0.5 A + 0.5 I), renormalise
    rows with keepdims, and multiply later layers on the left: ``R = A'_L ... A'_1``.
    """
    check_rollout_input(layers)
    identity = np.eye(layers.shape[-1])
    result = identity.copy()
    for layer in layers:
        result = _rollout_step(layer, head, discard_ratio, identity) @ result
    return result


def rollout_row(layers: np.ndarray, row: int, head: int | Fusion = "mean", discard_ratio: float = 0.0) -> np.ndarray:
    """Row ``row`` of :func:`rollout`, with vector-matrix products only.

    ``e_row^T A'_L ... A'_1`` evaluated from the left: the products cost L x T^2 instead of the
    L x T^3 of the full matrix (577 tokens, 24 layers: 8 MFLOP instead of 4.6 GFLOP). What remains
    is fusing and normalising each layer, O(L x H x T^2) as before.
    """
    check_rollout_input(layers)
    identity = np.eye(layers.shape[-1])
    vector = identity[row].copy()
    for layer in layers[::-1]:
        vector = vector @ _rollout_step(layer, head, discard_ratio, identity)
    return vector


def check_rollout_input(layers: np.ndarray) -> None:
    """Rollout is defined for non-negative attention; negative weights are a 422.

    With weights >= 0 every step ``norm(0.5 A + 0.5 I)`` is row-stochastic, so the product stays
    in [0, 1] whatever the magnitudes. A negative weight lets a row sum to nearly zero, and the
    renormalisation then multiplies by up to 1e38 per layer: the product overflows to Inf and NaN.
    """
    if layers.size and float(layers.min()) < 0:
        raise InvalidInput("method 'rollout' needs non-negative attention weights (probabilities); "
                           "these have negative values", code="negative_attention", field="weights")


def check_finite_map(values: np.ndarray, method: str) -> None:
    """A reduced map must be finite before it is rendered or serialised (422 ``numeric_overflow``).

    Inputs are checked finite on the way in; this catches arithmetic that overflows on the way
    (a product of many large relevance scores), so no NaN reaches a colour index or a JSON body.
    """
    if values.size and not np.isfinite(values).all():
        raise InvalidInput(f"method {method!r} overflowed the float64 range on these weights; scale them down "
                           "or pick fewer layers", code="numeric_overflow", field="weights")


def _rollout_step(layer: np.ndarray, head: int | Fusion, discard_ratio: float, identity: np.ndarray) -> np.ndarray:
    """One layer's residual-aware, row-normalised attention ``A' = norm(0.5 A + 0.5 I)``."""
    fused = fuse_heads(layer, head)
    if discard_ratio > 0:
        fused = _discard_smallest(fused, discard_ratio)
    return normalize_rows(0.5 * fused + 0.5 * identity)


def _discard_smallest(matrix: np.ndarray, ratio: float) -> np.ndarray:
    """Zero the smallest ``ratio`` of entries, keeping the [0, 0] (CLS self) edge."""
    flat = matrix.reshape(-1).copy()
    count = int(flat.size * ratio)
    if count == 0:
        return matrix
    order = np.argsort(flat, kind="stable")
    drop = order[:count]
    drop = drop[drop != 0]
    flat[drop] = 0.0
    return flat.reshape(matrix.shape)


def gradient_relevance(layers: np.ndarray, gradients: np.ndarray) -> np.ndarray:
    """Gradient-weighted relevance (Chefer et al. 2021, generic self-attention rule).

    ``R = I``; per layer in forward order ``Abar = mean_h(clamp(grad * A, min=0))`` and
    ``R = R + Abar @ R``. No row normalisation, as in the paper.
    """
    tokens = layers.shape[-1]
    result = np.eye(tokens)
    for attention, gradient in zip(layers, gradients, strict=True):
        weighted = np.clip(attention.astype(np.float64) * gradient.astype(np.float64), 0.0, None).mean(axis=0)
        result = result + weighted @ result
    return result








def head_entropy(heads: np.ndarray, query_row: int | None = None) -> list[float]:
    """Mean row entropy (nats) of each head ``[H, Q, K]``; near-one-hot heads have entropy near 0."""
    if query_row is not None:
        heads = heads[:, query_row : query_row + 1, :]  # slice first: one row per head, not H x Q x K
    probs = normalize_rows(np.clip(heads.astype(np.float64), 0.0, None))
    logs = np.log(np.where(probs > 0, probs, 1.0))
    return [float(v) for v in (-(probs * logs).sum(axis=-1)).mean(axis=-1)]
