"""From a capture to the map a view shows (reduce), and from that map to PNG bytes (render).

Views: ``heatmap`` (a matrix, or a strip for one query row, or the patch grid for images),
``overlay`` (the patch map over the input image), ``grid`` (every head of one layer) and
``trace`` (one query->key weight across every layer and head).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from app.core.errors import InvalidInput
from app.core.geometry import area_share, region_mass
from app.core.reduce import (
    fuse_heads,
    gradient_relevance,
    head_entropy,
    query_index,
    resolve_head,
    resolve_layer,
    rollout,
    rollout_row,
    select_query,
)
from app.core.tokens import mask_tokens, merge_words, pool_blocks, word_groups
from app.render import annotated, overlay, plain
from app.render.labels import bound_label
from app.render.normalize import normalize
from app.render.photo_png import encode_rgb_up
from app.service.config import Settings
from app.service.schemas import VisualizeOptions
from app.service.timing import StageTimer
from models.adapter import Capture


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


def default_view(capture: Capture) -> str:
    """Overlay for images, heatmap for everything else."""
    return "overlay" if capture.image is not None else "heatmap"


def reduce_for_view(capture: Capture, options: VisualizeOptions, settings: Settings) -> ReducedMap:
    """Apply the request's selection (layer, head, method, query, token options) to the capture."""
    stack = capture.stack
    view = options.view or default_view(capture)
    if view == "overlay" and capture.image is None:
        raise InvalidInput("view 'overlay' needs an image input", code="invalid_value", field="view")
    if view == "trace":
        return _trace(capture, options, settings)
    layer = resolve_layer(options.layer, stack.num_layers)
    head = resolve_head(options.head, stack.num_heads)
    square = stack.weights.shape[-1] == stack.weights.shape[-2]
    if options.method != "attention" and not square:
        raise InvalidInput(f"method {options.method!r} needs square [T, T] attention; these are "
                            f"{stack.weights.shape[-2]} x {stack.weights.shape[-1]}", code="not_square", field="weights")
    if view == "grid":
        return _grid(capture, options, settings, layer)
    labels = stack.tokens
    meta: dict[str, Any] = {}
    query = _default_query(capture, options)
    token_options = stack.grid is None and square and (options.merge_subwords or options.mask_special)
    if options.method in ("attention", "rollout") and not token_options and (query == "cls" or isinstance(query, int)):
        # One query row is all that is shown (a patch map, or a text/weights strip). Attention: fuse
        # only that row of each head (fusion and renormalisation are per row, so the values are the
        # same). Rollout: vector-matrix products from the left instead of the full T^3 product.
        row = query_index(query, stack.weights.shape[-2])
        if options.method == "attention":
            values = fuse_heads(stack.layer_slice(layer)[:, row : row + 1, :], head)[0]
        else:
            values = rollout_row(stack.layers_up_to(layer), row, head, options.discard_ratio)
    else:
        matrix = _matrix(capture, options, layer, head)
        if stack.grid is None and square:
            matrix, labels, meta = _token_options(capture, options, matrix, labels)
        query = _resolve_query(query, labels)
        values = select_query(matrix, query, num_tokens=matrix.shape[0]) if matrix.ndim == 2 else matrix
    if square and stack.grid is None and options.annotate and options.format == "png" and labels \
            and len(labels) > settings.limits.max_labels:
        values, labels, meta["pooled"] = pool_blocks(values, labels, settings.limits.max_labels)
    row_labels = labels if query is None else None
    if stack.grid is not None and values.ndim == 1:
        values = _to_grid(values, stack.prefix_tokens, stack.grid)
        meta["entropy_per_head"] = head_entropy(stack.layer_slice(layer), query_row=0) if options.method == "attention" else None
        if options.region is not None:
            meta.update(_region(values, capture, options.region))
    layers = [layer] if options.method == "attention" else list(range(layer + 1))
    return ReducedMap(values=values, view=view, layers=layers, heads=head, query=query,
                      row_labels=row_labels, col_labels=labels, meta=meta)


def _default_query(capture: Capture, options: VisualizeOptions) -> int | str | None:
    if options.query is not None:
        return options.query
    return "cls" if capture.stack.grid is not None else None


def _resolve_query(query: int | str | None, labels: list[str] | None) -> int | str | None:
    """A query given as token text becomes its (first) position; ``cls``/``mean`` stay as they are."""
    if not isinstance(query, str) or query in ("cls", "mean"):
        return query
    if labels is None or query not in labels:
        raise InvalidInput(f"query {query!r} is not one of the input's tokens", code="unknown_token", field="query")
    return labels.index(query)


def _matrix(capture: Capture, options: VisualizeOptions, layer: int, head: Any) -> np.ndarray:
    stack = capture.stack
    if options.method == "attention":
        return fuse_heads(stack.layer_slice(layer), head)
    if options.method == "rollout":
        return rollout(stack.layers_up_to(layer), head, options.discard_ratio)
    if stack.gradients is None:
        raise InvalidInput("method 'gradient' needs a model input", code="invalid_value", field="method")
    count = stack.layers.index(layer) + 1
    return gradient_relevance(stack.weights[:count], stack.gradients[:count])


def _token_options(capture: Capture, options: VisualizeOptions, matrix: np.ndarray,
                   labels: list[str] | None) -> tuple[np.ndarray, list[str] | None, dict[str, Any]]:
    stack = capture.stack
    meta: dict[str, Any] = {}
    if options.merge_subwords:
        if stack.words is None:
            raise InvalidInput("merge_subwords needs a text model input", code="invalid_value", field="merge_subwords")
        groups = word_groups(stack.words)
        matrix, labels = merge_words(matrix, labels, groups)
        meta["merged_words"] = len(groups)
        specials = [i for i, g in enumerate(groups) if len(g) == 1 and g[0] in stack.special_tokens]
    else:
        specials = list(stack.special_tokens)
    if options.mask_special:
        if not specials and stack.words is None:
            raise InvalidInput("mask_special needs a text model input", code="invalid_value", field="mask_special")
        matrix, labels, kept = mask_tokens(matrix, labels, specials)
        meta["masked_positions"] = [i for i in range(len(kept) + len(specials)) if i not in kept]
    return matrix, labels, meta


def _to_grid(row: np.ndarray, prefix: int, grid: tuple[int, int]) -> np.ndarray:
    patches = row[prefix:]
    if patches.size != grid[0] * grid[1]:
        raise InvalidInput(f"{patches.size} patch tokens do not fill a {grid[0]}x{grid[1]} grid",
                            code="grid_mismatch", field="model")
    return patches.reshape(grid)


def _region(values: np.ndarray, capture: Capture, region: list[float]) -> dict[str, Any]:
    x0, y0, x1, y1 = region
    if not (x1 > x0 and y1 > y0):
        raise InvalidInput("region must be [x0, y0, x1, y1] with x1 > x0 and y1 > y0", code="invalid_value", field="region")
    assert capture.placement is not None
    box = (x0, y0, x1, y1)
    return {"region": [x0, y0, x1, y1], "region_mass": region_mass(values, capture.placement, box),
            "region_area_share": area_share(capture.placement, box)}


def _grid(capture: Capture, options: VisualizeOptions, settings: Settings, layer: int) -> ReducedMap:
    stack = capture.stack
    if stack.num_heads > settings.limits.max_panels:
        raise InvalidInput(f"a grid of {stack.num_heads} heads exceeds the limit of {settings.limits.max_panels} panels",
                            code="too_many_panels", field="view")
    heads = stack.layer_slice(layer).astype(np.float64)
    query = _resolve_query(_default_query(capture, options), stack.tokens)
    panels = []
    for head in heads:
        panel = select_query(head, query, num_tokens=head.shape[0]) if query is not None else head
        if stack.grid is not None and panel.ndim == 1:
            panel = _to_grid(panel, stack.prefix_tokens, stack.grid)
        elif panel.ndim == 1:
            panel = panel.reshape(1, -1)
        panels.append(panel)
    return ReducedMap(values=np.stack(panels), view="grid", layers=[layer], heads=list(range(stack.num_heads)),
                      query=query, col_labels=stack.tokens, meta={"panels": len(panels)})


def _token_position(value: int | str | None, labels: list[str] | None, count: int, name: str) -> int:
    if value is None:
        raise InvalidInput(f"view 'trace' needs {name} (a token index or the exact token text)", code="missing_field", field=name)
    if isinstance(value, str):
        if labels is None or value not in labels:
            raise InvalidInput(f"{name} {value!r} is not one of the input's tokens", code="unknown_token", field=name)
        return labels.index(value)
    if not -count <= value < count:
        raise InvalidInput(f"{name} must be in [{-count}, {count - 1}]; got {value}", code="out_of_range", field=name)
    return value % count


def _trace(capture: Capture, options: VisualizeOptions, settings: Settings) -> ReducedMap:
    stack = capture.stack
    labels = stack.tokens
    query = options.query if options.query not in ("cls", "mean") else 0
    q = _token_position(query, labels, stack.weights.shape[-2], "query")
    k = _token_position(options.key, labels, stack.weights.shape[-1], "key")
    values = stack.weights[:, :, q, k].astype(np.float64)
    meta = {"query_token": labels[q] if labels else q, "key_token": labels[k] if labels else k,
            "query_index": q, "key_index": k}
    return ReducedMap(values=values, view="trace", layers=list(stack.layers), heads=list(range(stack.num_heads)),
                      query=q, row_labels=[f"L{layer}" for layer in stack.layers],
                      col_labels=[f"H{h}" for h in range(stack.num_heads)], meta=meta)


def render_map(reduced: ReducedMap, capture: Capture, options: VisualizeOptions, settings: Settings, timer: StageTimer) -> bytes:
    """Colour, resize and encode a reduced map according to its view."""
    level = settings.png_compression
    limits = settings.limits
    if reduced.view == "overlay":
        return _render_overlay(reduced, capture, options, settings, timer)
    with timer.stage("render"):
        if reduced.view == "grid":
            panels = [normalize(p, options.normalize, options.vmin, options.vmax)[0] for p in reduced.values]
            return plain.grid_png(panels, options.size, options.colormap, level, limits.max_panels)
        scaled, low, high = normalize(reduced.values, options.normalize, options.vmin, options.vmax)
        title = _title(reduced, options)
        if scaled.ndim == 1:
            if options.annotate:
                return annotated.bar_png(reduced.values, reduced.col_labels, size=options.size, colormap=options.colormap,
                                         max_labels=limits.max_labels, title=title, level=level)
            return plain.strip_png(scaled, options.size, options.colormap, level)
        if options.annotate:
            return annotated.annotated_png(scaled, low, high, size=options.size, colormap=options.colormap,
                                           row_labels=reduced.row_labels, col_labels=reduced.col_labels,
                                           max_labels=limits.max_labels, title=title, level=level)
        return plain.heatmap_png(scaled, options.size, options.colormap, level)


def _render_overlay(reduced: ReducedMap, capture: Capture, options: VisualizeOptions, settings: Settings,
                    timer: StageTimer) -> bytes:
    """The overlay, with blending ("render") and PNG compression ("encode") timed apart: on photos
    the encode is the larger part and the benchmark reports them separately."""
    limits = settings.limits
    assert capture.image is not None and capture.placement is not None
    with timer.stage("render"):
        scaled, _, _ = normalize(reduced.values, options.normalize, options.vmin, options.vmax)
        region = options.region
        outline = (region[0], region[1], region[2], region[3]) if region is not None else None
        blended = overlay.overlay_image(capture.image, scaled, capture.placement, alpha=options.alpha,
                                        colormap=options.colormap, interpolation=options.interpolation,
                                        outline=outline, max_side=limits.max_output_side,
                                        max_pixels=limits.max_output_pixels)
    with timer.stage("encode"):
        return encode_rgb_up(blended, settings.png_compression)


def _title(reduced: ReducedMap, options: VisualizeOptions) -> str:
    if reduced.view == "trace":
        # Token text is user input: each side bounded like a label, so the title names both.
        query, key = bound_label(reduced.meta.get("query_token")), bound_label(reduced.meta.get("key_token"))
        return f"{query} \u2192 {key} by layer and head"
    layers = reduced.layers
    where = f"layer {layers[0]}" if len(layers) == 1 else f"layers 0-{layers[-1]}"
    return f"{options.method}, {where}, head {reduced.heads}"
