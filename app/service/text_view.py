"""``view=text``: the input as running text, each token coloured by one query row or by the
attention it receives. Works on any attention stack with token labels (text encoders, decoder
LLMs, raw weights with ``tokens``); nothing here knows a model family.

The reduce step gives a 1-D value per key token; the render step lays the tokens out with
:mod:`app.render.text` and paints them. The JSON answer carries the layout's token boxes, so a
client can map a click on the PNG (same ``size``) to a token.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from app.core.errors import InvalidInput
from app.core.reduce import fuse_heads, query_index, resolve_head, resolve_layer, rollout_row, select_query
from app.core.tokens import received_attention
from app.render import text as text_render
from app.render.normalize import normalize, token_range_mask
from app.service.config import Settings
from app.service.schemas import VisualizeOptions
from app.service.views import ReducedMap, _matrix, _resolve_query, _token_options, colour_range
from models.adapter import Capture


def reduce_text(capture: Capture, options: VisualizeOptions, settings: Settings) -> ReducedMap:
    """The value of every key token: row ``query`` of the selected map, or the attention each
    token receives (``received_attention``) when no query is given."""

    stack = capture.stack
    if stack.grid is not None:
        raise InvalidInput("view 'text' needs a token input (text, or weights with tokens); "
                            "images have the overlay view", code="invalid_value", field="view")
    layer = resolve_layer(options.layer, stack.num_layers)
    head = resolve_head(options.head, stack.num_heads)
    keys = stack.weights.shape[-1]
    labels = list(stack.tokens) if stack.tokens else [str(i) for i in range(keys)]
    square = stack.weights.shape[-2] == keys
    if options.method != "attention" and not square:
        raise InvalidInput(f"method {options.method!r} needs square [T, T] attention", code="not_square", field="weights")
    meta: dict[str, Any] = {}
    query = options.query
    token_options = square and (options.merge_subwords or options.mask_special)
    if options.method in ("attention", "rollout") and not token_options and (query == "cls" or isinstance(query, int)):
        # One query row is all the view shows: fuse (or roll out) only that row, as views.py does.
        row = query_index(query, stack.weights.shape[-2])
        if options.method == "attention":
            values = fuse_heads(stack.layer_slice(layer)[:, row : row + 1, :], head)[0]
        else:
            values = rollout_row(stack.layers_up_to(layer), row, head, options.discard_ratio)
        query = row
    else:
        matrix = _matrix(capture, options, layer, head)
        if square:
            matrix, new_labels, meta = _token_options(capture, options, matrix, labels)
            labels = list(new_labels) if new_labels is not None else labels
        query = _resolve_query(query, labels)
        if query is None:
            values = received_attention(matrix)
            meta["received"] = True
        else:
            values = select_query(matrix, query, num_tokens=matrix.shape[0])
            if isinstance(query, int | str) and query != "mean":
                query = query_index(query, matrix.shape[0])
    special_labels = {stack.tokens[i] for i in stack.special_tokens if stack.tokens and i < len(stack.tokens)}
    meta["special_positions"] = [i for i, label in enumerate(labels) if label in special_labels]
    meta.update(colour_range(np.asarray(values, dtype=np.float64), options, meta["special_positions"]))
    layers = [layer] if options.method == "attention" else list(range(layer + 1))
    reduced = ReducedMap(values=np.asarray(values, dtype=np.float64), view="text", layers=layers, heads=head,
                         query=query, row_labels=None, col_labels=labels, meta=meta)
    if options.format == "json":
        reduced.meta.update(text_json_meta(reduced, options, settings))
    return reduced


def clipped_positions(reduced: ReducedMap, options: VisualizeOptions) -> list[int]:
    """Positions left out of the colour range: the special tokens when ``clip_special`` is set."""
    return list(reduced.meta.get("special_positions", [])) if options.clip_special else []


def text_layout(reduced: ReducedMap, options: VisualizeOptions, settings: Settings) -> text_render.TextLayout:
    """The wrapped layout at the request's ``size`` (the image width), widened for long inputs."""
    limits = settings.limits
    try:
        return text_render.fit_layout(reduced.col_labels or [], options.size, max_side=limits.max_output_side,
                                      max_pixels=limits.max_output_pixels,
                                      special=reduced.meta.get("special_positions", ()))
    except text_render.TextTooLong as exc:
        raise InvalidInput(str(exc), code="output_too_large", field="size") from None


def render_text(reduced: ReducedMap, options: VisualizeOptions, settings: Settings) -> bytes:
    """PNG of the text view (title, colour scale, wrapped coloured tokens)."""
    layout = text_layout(reduced, options, settings)
    clipped = clipped_positions(reduced, options)
    counted = token_range_mask(reduced.values.shape, clipped)
    scaled, low, high = normalize(reduced.values, options.normalize, options.vmin, options.vmax, counted)
    note = "red dashes: special, not in range" if clipped else ""
    query = reduced.query if isinstance(reduced.query, int) else None
    return text_render.text_png(layout, scaled, low=low, high=high, colormap=options.colormap,
                                title=text_title(reduced, options), query=query, clipped=clipped, note=note,
                                level=settings.png_compression)


def text_title(reduced: ReducedMap, options: VisualizeOptions) -> str:
    """What the colours mean: which row, or received attention; method, layer(s) and head."""
    layers = reduced.layers
    where = f"layer {layers[0]}" if len(layers) == 1 else f"layers 0-{layers[-1]}"
    labels = reduced.col_labels or []
    if isinstance(reduced.query, int) and reduced.query < len(labels):
        what = f"attention from \u201c{labels[reduced.query]}\u201d (#{reduced.query})"
    elif reduced.query == "mean":
        what = "mean attention over every query"
    else:
        what = "attention each token receives"
    return f"{what}; {options.method}, {where}, head {reduced.heads}; {len(labels)} tokens"


def text_json_meta(reduced: ReducedMap, options: VisualizeOptions, settings: Settings) -> dict[str, Any]:
    """The layout for JSON answers: each token's box in the PNG of the same request."""
    layout = text_layout(reduced, options, settings)
    return {"image_size": [layout.width, layout.height], "boxes": [list(box) for box in layout.boxes],
            "clipped_positions": clipped_positions(reduced, options)}
