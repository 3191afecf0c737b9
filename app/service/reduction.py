"""From a capture to the map a view shows: apply the plan's layer, head, method and query.

Each view has its reducer here (registered in :mod:`app.service.views`). Reducers receive a
resolved :class:`~app.service.plan.Plan` and do not validate it again; only what needs the
captured tokens (a query given as text) is resolved here, through
:func:`~app.service.plan.resolve_token`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from app.core.attention import AttentionStack
from app.core.causal import causal_mask, exclude_first_key, square_mask
from app.core.errors import AttnmapError, InvalidInput
from app.core.geometry import area_share, region_mass
from app.core.reduce import fuse_heads, gradient_relevance, head_entropy, rollout, rollout_row
from app.core.tokens import mask_tokens, merge_words, pool_blocks, word_groups
from app.render.annotated import readable_labels
from app.render.normalize import normalize, token_range_mask
from app.service.config import Limits
from app.service.plan import Plan, resolve_token
from models.adapter import Capture, Picture


@dataclass
class ReducedMap:
    """A map ready to render: ``values`` is 1-D (a query row), 2-D, or ``[panels, ...]`` for grids."""

    values: np.ndarray
    view: str
    layers: list[int]
    heads: Any
    query: Any = None
    row_labels: list[str] | None = None
    col_labels: list[str] | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    # Same shape as ``values`` (1-D or 2-D maps): True for cells a causal model cannot attend to.
    masked: np.ndarray | None = None


def query_row(query: int | str | None, labels: list[str] | None, count: int) -> int | str | None:
    """The plan's query as a row index, ``mean`` (the mean row) or None (the whole matrix)."""
    if query is None or query == "mean":
        return query
    return resolve_token(query, labels, count, "query")


def shown_query(query: int | str | None, row: int | str | None) -> int | str | None:
    """The query as provenance reports it: as given, except token text, which becomes its position."""
    return row if isinstance(query, str) and query not in ("cls", "mean") else query


def select_row(matrix: np.ndarray, row: int | str | None) -> np.ndarray:
    """One row of ``matrix`` (an index, or ``mean``), or the whole matrix for None."""
    if row is None:
        return matrix
    if row == "mean":
        return matrix.mean(axis=0)
    return matrix[row]


def special_positions(stack: AttentionStack, labels: list[str]) -> list[int]:
    """Positions in ``labels`` that hold one of the model's special tokens (found by text, so they
    survive merging word pieces)."""
    tokens = stack.tokens or []
    special = {tokens[i] for i in stack.special_tokens if i < len(tokens)}
    return [i for i, label in enumerate(labels) if label in special]


def colour_range(values: np.ndarray, plan: Plan, special: list[int]) -> dict[str, Any]:
    """``{"colour_range": [low, high]}`` when the colours do not span the values' own range
    (``clip_special``, ``percentile``, ``row``), so a client can label its colour scale; else ``{}``."""
    drawing = plan.drawing
    clipped = special if drawing.clip_special else []
    if not clipped and drawing.normalize not in ("percentile", "row"):
        return {}
    _, low, high = normalize(values, drawing.normalize, drawing.vmin, drawing.vmax, token_range_mask(values.shape, clipped))
    return {"colour_range": [low, high]}


def reduce_matrix_view(capture: Capture, plan: Plan, limits: Limits) -> ReducedMap:
    """``heatmap`` and ``overlay``: a matrix, or one query row (a strip for tokens, a patch grid for images)."""
    stack = capture.stack
    if stack.row_tokens is not None:
        return _generation_view(capture, plan)
    labels = stack.tokens
    meta: dict[str, Any] = {}
    token_options = stack.grid is None and (plan.merge_subwords or plan.mask_special)
    masked: np.ndarray | None = None
    if plan.method in ("attention", "rollout") and not token_options and plan.query is not None and plan.query != "mean":
        # One query row is all that is shown (a patch map, or a text/weights strip). Attention: fuse
        # only that row of each head (fusion and renormalisation are per row, so the values are the
        # same). Rollout: vector-matrix products from the left instead of the full T^3 product.
        position = resolve_token(plan.query, labels, stack.num_queries, "query")
        row = captured_row(stack, position)
        if plan.method == "attention":
            values = fuse_heads(stack.layer_slice(plan.layer)[:, row : row + 1, :], plan.head)[0]
        else:
            values = rollout_row(stack.layers_up_to(plan.layer), row, plan.head, plan.discard_ratio)
        query = shown_query(plan.query, position)
        if stack.causal:
            masked = causal_mask(values.shape[-1], [position])[0]
    else:
        matrix = _matrix(stack, plan)
        if token_options:
            matrix, labels, meta = _token_options(stack, plan, matrix, labels)
        selected = query_row(plan.query, labels, matrix.shape[0])
        values = select_row(matrix, selected)
        query = shown_query(plan.query, selected)
        if stack.causal and matrix.ndim == 2 and matrix.shape[0] == matrix.shape[1]:
            full_mask = square_mask(matrix.shape[0])
            masked = full_mask if values.ndim == 2 else (full_mask[selected] if isinstance(selected, int) else None)
    square = stack.query_rows is None and stack.weights.shape[-1] == stack.weights.shape[-2]
    if labels and stack.grid is None:
        meta["special_positions"] = special_positions(stack, labels)
    readable = readable_labels(plan.drawing.size, limits.max_labels)
    if square and stack.grid is None and plan.drawing.annotate and plan.format == "png" and labels \
            and len(labels) > readable:
        # Display only: more labels than fit at a legible size become blocks of neighbours.
        values, labels, meta["pooled"] = pool_blocks(values, labels, readable)
        meta.pop("special_positions", None)
        # Blocks are runs of neighbours, so a block is masked when its first cell is (keys after the query).
        step = meta["pooled"]
        masked = None if masked is None else (masked[::step, ::step] if masked.ndim == 2 else masked[::step])
    row_labels = labels if query is None else None
    if plan.exclude_sink:
        values, labels, row_labels, masked = _without_sink(values, labels, row_labels, masked, meta, square=values.ndim == 2)
        meta.pop("special_positions", None)
    meta.update(colour_range(values, plan, meta.get("special_positions", [])))
    if stack.grid is not None and values.ndim == 1:
        values = _to_grid(values, stack)
        meta["entropy_per_head"] = head_entropy(stack.layer_slice(plan.layer), query_row=0) if plan.method == "attention" else None
        if plan.drawing.region is not None and capture.picture is not None:
            meta.update(_region(values, capture.picture, plan.drawing.region))
    if stack.causal:
        meta["causal"] = True
    return ReducedMap(values=values, view=plan.view, layers=list(plan.layers), heads=plan.head, query=query,
                      row_labels=row_labels, col_labels=labels, meta=meta, masked=masked)


def captured_row(stack: AttentionStack, position: int) -> int:
    """Index on the stack's query axis of absolute query ``position`` (422 if that row was not captured)."""
    try:
        return stack.row_position(position)
    except KeyError:
        raise InvalidInput(f"query row {position} was not captured for this request", code="invalid_value",
                           field="query") from None


def _without_sink(values: np.ndarray, col_labels: list[str] | None, row_labels: list[str] | None,
                  masked: np.ndarray | None, meta: dict[str, Any], *,
                  square: bool) -> tuple[np.ndarray, list[str] | None, list[str] | None, np.ndarray | None]:
    """Drop the first key (the attention sink) and renormalise rows; meta says how much it held."""
    if values.shape[-1] < 2:
        raise InvalidInput("exclude_sink needs at least two key tokens", code="invalid_value", field="exclude_sink")
    result = exclude_first_key(values, col_labels, row_labels, masked, square=square)
    meta.update(sink_excluded=True, sink_mass=result.sink_mass)
    return result.values, result.col_labels, result.row_labels, result.masked


def reduce_layers(capture: Capture, plan: Plan, limits: Limits) -> ReducedMap:
    """``layers``: one query row in every layer, heads fused by ``head`` (``[L, T]``: where the token looks, layer by layer)."""
    stack = capture.stack
    assert plan.query is not None  # the plan chose one (last for causal models, cls otherwise)
    position = resolve_token(plan.query, stack.tokens, stack.num_queries, "query")
    row = captured_row(stack, position)
    values = np.stack([fuse_heads(stack.layer_slice(layer)[:, row : row + 1, :], plan.head)[0] for layer in stack.layers])
    labels = stack.tokens
    row_labels: list[str] | None = [f"L{layer}" for layer in stack.layers]
    masked = np.repeat(causal_mask(values.shape[-1], [position]), len(stack.layers), axis=0) if stack.causal else None
    meta: dict[str, Any] = {"query_index": position, "query_token": labels[position] if labels else position}
    if plan.exclude_sink:
        values, labels, row_labels, masked = _without_sink(values, labels, row_labels, masked, meta, square=False)
    if stack.causal:
        meta["causal"] = True
    return ReducedMap(values=values, view="layers", layers=list(stack.layers), heads=plan.head, query=position,
                      row_labels=row_labels, col_labels=labels, meta=meta, masked=masked)


def _generation_view(capture: Capture, plan: Plan) -> ReducedMap:
    """One row per generated token: the attention of the step that produced it, over prompt + earlier tokens."""
    stack = capture.stack
    assert stack.query_rows is not None  # generation captures carry their rows' positions
    values = fuse_heads(stack.layer_slice(plan.layer), plan.head)
    labels: list[str] | None = stack.tokens
    row_labels: list[str] | None = stack.row_tokens
    masked: np.ndarray | None = causal_mask(values.shape[-1], stack.query_rows)
    meta: dict[str, Any] = {"causal": True}
    if plan.exclude_sink:
        values, labels, row_labels, masked = _without_sink(values, labels, row_labels, masked, meta, square=False)
    return ReducedMap(values=values, view="heatmap", layers=[plan.layer], heads=plan.head, query="generated",
                      row_labels=row_labels, col_labels=labels, meta=meta, masked=masked)


def _matrix(stack: AttentionStack, plan: Plan) -> np.ndarray:
    if plan.method == "attention":
        return fuse_heads(stack.layer_slice(plan.layer), plan.head)
    if plan.method == "rollout":
        return rollout(stack.layers_up_to(plan.layer), plan.head, plan.discard_ratio)
    # gradient: the plan only allows it for model inputs, whose captures carry gradients; a capture
    # without them is a bug of the model side, reported as such rather than drawn as zeros.
    if stack.gradients is None:
        raise AttnmapError("the model returned no attention gradients", code="gradients_not_captured")
    count = stack.layers.index(plan.layer) + 1
    return gradient_relevance(stack.weights[:count], stack.gradients[:count])


def _token_options(stack: AttentionStack, plan: Plan, matrix: np.ndarray,
                   labels: list[str] | None) -> tuple[np.ndarray, list[str] | None, dict[str, Any]]:
    meta: dict[str, Any] = {}
    if plan.merge_subwords and stack.words is not None:
        groups = word_groups(stack.words)
        matrix, labels = merge_words(matrix, labels, groups)
        meta["merged_words"] = len(groups)
        specials = [i for i, g in enumerate(groups) if len(g) == 1 and g[0] in stack.special_tokens]
    else:
        specials = list(stack.special_tokens)
    if plan.mask_special:
        matrix, labels, kept = mask_tokens(matrix, labels, specials)
        meta["masked_positions"] = [i for i in range(len(kept) + len(specials)) if i not in kept]
    return matrix, labels, meta


def _to_grid(row: np.ndarray, stack: AttentionStack) -> np.ndarray:
    assert stack.grid is not None
    patches = row[stack.prefix_tokens:]
    rows, cols = stack.grid
    if patches.size != rows * cols:
        raise InvalidInput(f"{patches.size} patch tokens do not fill a {rows}x{cols} grid", code="grid_mismatch", field="model")
    return patches.reshape(stack.grid)


def _region(values: np.ndarray, picture: Picture, box: tuple[float, float, float, float]) -> dict[str, Any]:
    return {"region": list(box), "region_mass": region_mass(values, picture.placement, box),
            "region_area_share": area_share(picture.placement, box)}


def reduce_grid(capture: Capture, plan: Plan, limits: Limits) -> ReducedMap:
    """``grid``: every head of one layer, each panel the query row (or the matrix) of that head.

    For a causal model the cells after each query are masked (the same cells in every panel), and
    ``exclude_sink`` drops the first key of every panel and renormalises its rows.
    """
    stack = capture.stack
    heads = stack.layer_slice(plan.layer).astype(np.float64)
    if plan.query is None or plan.query == "mean":
        row: int | str | None = plan.query
        position: int | str | None = plan.query
        if stack.query_rows is not None:
            raise InvalidInput("a grid of whole matrices needs every query row; give a query", code="invalid_value",
                               field="query")
    else:
        position = resolve_token(plan.query, stack.tokens, stack.num_queries, "query")
        row = captured_row(stack, position)
    shown_mask: np.ndarray | None = None
    if stack.causal and row is None:
        shown_mask = square_mask(heads.shape[-1])
    elif stack.causal and isinstance(position, int):
        shown_mask = causal_mask(heads.shape[-1], [position])
    if shown_mask is not None and plan.exclude_sink:
        # The first key goes (and, in a matrix, the first query, which saw only it).
        shown_mask = shown_mask[1:, 1:] if row is None else shown_mask[:, 1:]
    meta: dict[str, Any] = {}
    panels: list[np.ndarray] = []
    sink_masses: list[float] = []
    for head in heads:
        panel = select_row(head, row)
        if plan.exclude_sink:
            head_meta: dict[str, Any] = {}
            panel = _without_sink(panel, None, None, None, head_meta, square=panel.ndim == 2)[0]
            sink_masses.append(head_meta["sink_mass"])
        if stack.grid is not None and panel.ndim == 1:
            panel = _to_grid(panel, stack)
        panels.append(panel.reshape(1, -1) if panel.ndim == 1 else panel)
    labels = stack.tokens[1:] if plan.exclude_sink and stack.tokens else stack.tokens
    if stack.causal:
        meta["causal"] = True
    meta["panels"] = len(panels)
    if plan.exclude_sink:
        # One figure for the whole layer: the mean share the first key held over every head.
        meta.update(sink_excluded=True, sink_mass=float(np.mean(sink_masses)))
    return ReducedMap(values=np.stack(panels), view="grid", layers=[plan.layer], heads=list(range(stack.num_heads)),
                      query=shown_query(plan.query, position), col_labels=labels, meta=meta,
                      masked=shown_mask)


def reduce_trace(capture: Capture, plan: Plan, limits: Limits) -> ReducedMap:
    """``trace``: one query->key weight across every layer and head (``[L, H]``)."""
    stack = capture.stack
    labels = stack.tokens
    # The plan made sure both are given for this view.
    query = 0 if plan.query in (None, "cls", "mean") else plan.query
    q = resolve_token(query, labels, stack.weights.shape[-2], "query")
    k = resolve_token(plan.key if plan.key is not None else 0, labels, stack.weights.shape[-1], "key")
    values = stack.weights[:, :, q, k].astype(np.float64)
    meta = {"query_token": labels[q] if labels else q, "key_token": labels[k] if labels else k,
            "query_index": q, "key_index": k}
    return ReducedMap(values=values, view="trace", layers=list(stack.layers), heads=list(range(stack.num_heads)),
                      query=q, row_labels=[f"L{layer}" for layer in stack.layers],
                      col_labels=[f"H{h}" for h in range(stack.num_heads)], meta=meta)
