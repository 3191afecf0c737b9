"""Token-axis operations on square attention maps: masking special tokens, merging word pieces."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from app.core.errors import InvalidInput
from app.core.reduce import normalize_rows


def mask_tokens(matrix: np.ndarray, labels: list[str] | None, drop: Sequence[int]) -> tuple[np.ndarray, list[str] | None, list[int]]:
    """Remove the rows and columns of ``drop`` and renormalise the remaining rows to sum 1.

    Returns the new matrix, the kept labels and the kept original positions.
    """
    keep = [i for i in range(matrix.shape[-1]) if i not in set(drop)]
    masked = matrix[np.ix_(keep, keep)]
    kept_labels = [labels[i] for i in keep] if labels is not None else None
    return normalize_rows(np.clip(masked, 0.0, None)), kept_labels, keep


def word_groups(words: Sequence[int | None]) -> list[list[int]]:
    """Positions grouped by word id, in order; tokens without a word (specials) stay alone."""
    groups: list[list[int]] = []
    last: int | None = None
    for position, word in enumerate(words):
        if word is not None and word == last and groups:
            groups[-1].append(position)
        else:
            groups.append([position])
        last = word
    return groups


def merge_words(matrix: np.ndarray, labels: list[str] | None, groups: list[list[int]]) -> tuple[np.ndarray, list[str] | None]:
    """Merge word pieces: attention *to* a word is the sum over its pieces (columns), attention
    *from* a word is the mean over its pieces (rows), so stochastic rows stay stochastic."""
    columns = np.stack([matrix[:, g].sum(axis=1) for g in groups], axis=1)
    merged = np.stack([columns[g].mean(axis=0) for g in groups], axis=0)
    merged_labels = None
    if labels is not None:
        merged_labels = ["".join(_piece(labels[i], first=(k == 0)) for k, i in enumerate(g)) for g in groups]
    return merged, merged_labels


def _piece(label: str, *, first: bool) -> str:
    """Strip WordPiece ``##`` and byte-level ``Ġ`` markers when gluing pieces back together."""
    if not first and label.startswith("##"):
        return label[2:]
    return label.replace("\u0120", "")


def pool_blocks(values: np.ndarray, labels: list[str], max_cells: int) -> tuple[np.ndarray, list[str], int]:
    """Pool runs of consecutive tokens so that at most ``max_cells`` remain on each token axis.

    For display only: beyond a readable number of tick labels, blocks of ``k`` neighbouring
    tokens become one cell (keys summed, queries averaged, as for word pieces, so rows stay
    stochastic) labelled ``first…last``. Returns the pooled map, its labels and ``k``.
    """
    count = values.shape[-1]
    block = -(-count // max_cells)
    groups = [list(range(start, min(start + block, count))) for start in range(0, count, block)]
    names = [labels[g[0]] if len(g) == 1 else f"{labels[g[0]]}\u2026{labels[g[-1]]}" for g in groups]
    if values.ndim == 1:
        return np.add.reduceat(values, [g[0] for g in groups]), names, block
    pooled, _ = merge_words(values, None, groups)
    return pooled, names, block


_LISTED_TOKENS = 40


def _bare(label: str) -> str:
    """A token label without its word-piece markers (``##``, ``Ġ``, ``▁``), lower-cased."""
    text = label[2:] if label.startswith("##") and len(label) > 2 else label
    return text.replace("\u0120", "").replace("\u2581", "").strip().casefold()


def find_token(labels: Sequence[str] | None, text: str, field: str) -> int:
    """The position of the token whose text is ``text``: an exact match first, else the first
    token equal to it ignoring case and word-piece markers (``"He"`` finds ``he`` and ``Ġhe``).

    Not found: a 422 ``unknown_token`` that lists the input's tokens (the first 40 and a count).
    """
    if labels:
        if text in labels:
            return list(labels).index(text)
        wanted = _bare(text)
        for position, label in enumerate(labels):
            if wanted and _bare(label) == wanted:
                return position
    shown = [_printable_label(label) for label in (labels or [])[:_LISTED_TOKENS]]
    listing = ", ".join(f"{i}:{label!r}" for i, label in enumerate(shown))
    more = f" and {len(labels) - _LISTED_TOKENS} more" if labels and len(labels) > _LISTED_TOKENS else ""
    where = f"; the tokens are {listing}{more} (or give a position)" if labels else "; these weights have no token labels (give a position)"
    raise InvalidInput(f"{field} {_printable_label(text)!r} is not one of the input's tokens{where}",
                        code="unknown_token", field=field)


def _printable_label(label: str) -> str:
    text = "".join(ch if ch.isprintable() else "\ufffd" for ch in label)
    return text if len(text) <= 32 else text[:31] + "\u2026"


def received_attention(matrix: np.ndarray) -> np.ndarray:
    """The attention each key token receives: its column's mean over the queries that can see it.

    For a bidirectional map that is every query (the column mean). For a causal map (nothing
    above the diagonal) key ``j`` is seen only by queries ``j..T-1``, so its column sum is divided
    by ``T - j``; a plain mean would make late tokens look ignored only because few queries follow.
    """
    data = matrix.astype(np.float64, copy=False)
    rows, cols = data.shape
    totals = data.sum(axis=0)
    if rows == cols and rows > 1 and not np.triu(data, 1).any():
        return totals / np.arange(rows, 0, -1, dtype=np.float64)
    return totals / rows
