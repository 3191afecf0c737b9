"""``view=text``: the input as running text, each token coloured by one query row or by the
attention it receives. Works on any attention stack with token labels (text encoders, decoder
LLMs, raw weights with ``tokens``); nothing here knows a model family.

The reducer gives a 1-D value per key token; the renderer lays the tokens out with
:mod:`app.render.text` and paints them. The JSON answer carries the layout's token boxes, so a
client can map a click on the PNG (same ``size``) to a token. Registered in
:mod:`app.service.views`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from app.core.errors import InvalidInput
from app.core.reduce import fuse_heads, rollout_row
from app.core.tokens import received_attention
from app.render import text as text_render
from app.render.normalize import normalize, token_range_mask
from app.service.config import Limits, Settings
from app.service.plan import Plan, resolve_token
from app.service.reduction import (
    ReducedMap,
    _matrix,
    _token_options,
    colour_range,
    query_row,
    select_row,
    shown_query,
    special_positions,
)
from app.service.timing import StageTimer
from models.adapter import Capture


def reduce_text(capture: Capture, plan: Plan, limits: Limits) -> ReducedMap:
    """The value of every key token: row ``query`` of the selected map, or the attention each
    token receives (:func:`~app.core.tokens.received_attention`) when no query is given."""
    stack = capture.stack
    keys = stack.weights.shape[-1]
    labels: list[str] | None = list(stack.tokens) if stack.tokens else [str(i) for i in range(keys)]
    meta: dict[str, Any] = {}
    token_options = plan.merge_subwords or plan.mask_special
    query: Any
    if plan.method in ("attention", "rollout") and not token_options and plan.query is not None and plan.query != "mean":
        # One query row is all the view shows: fuse (or roll out) only that row, as the heatmap does.
        row = resolve_token(plan.query, labels, stack.weights.shape[-2], "query")
        if plan.method == "attention":
            values = fuse_heads(stack.layer_slice(plan.layer)[:, row : row + 1, :], plan.head)[0]
        else:
            values = rollout_row(stack.layers_up_to(plan.layer), row, plan.head, plan.discard_ratio)
        query = row
    else:
        matrix = _matrix(stack, plan)
        if token_options:
            matrix, labels, meta = _token_options(stack, plan, matrix, labels)
        selected = query_row(plan.query, labels, matrix.shape[0])
        if selected is None:
            values = received_attention(matrix)
            meta["received"] = True
        else:
            values = select_row(matrix, selected)
        query = selected if isinstance(selected, int) else shown_query(plan.query, selected)
    shown_labels = labels or []
    values = np.asarray(values, dtype=np.float64)
    meta["special_positions"] = special_positions(stack, shown_labels)
    meta.update(colour_range(values, plan, meta["special_positions"]))
    reduced = ReducedMap(values=values, view="text", layers=list(plan.layers), heads=plan.head,
                         query=query, row_labels=None, col_labels=shown_labels, meta=meta)
    if plan.format == "json":
        reduced.meta.update(text_json_meta(reduced, plan, limits))
    return reduced


def clipped_positions(reduced: ReducedMap, plan: Plan) -> list[int]:
    """Positions left out of the colour range: the special tokens when ``clip_special`` is set."""
    return list(reduced.meta.get("special_positions", [])) if plan.drawing.clip_special else []


def text_layout(reduced: ReducedMap, plan: Plan, limits: Limits) -> text_render.TextLayout:
    """The wrapped layout at the request's ``size`` (the image width), widened for long inputs."""
    try:
        return text_render.fit_layout(reduced.col_labels or [], plan.drawing.size, max_side=limits.max_output_side,
                                      max_pixels=limits.max_output_pixels,
                                      special=reduced.meta.get("special_positions", ()))
    except text_render.TextTooLong as exc:
        raise InvalidInput(str(exc), code="output_too_large", field="size") from None


def render_text(reduced: ReducedMap, capture: Capture, plan: Plan, settings: Settings, timer: StageTimer) -> bytes:
    """PNG of the text view (title, colour scale, wrapped coloured tokens)."""
    drawing = plan.drawing
    with timer.stage("render"):
        layout = text_layout(reduced, plan, settings.limits)
        clipped = clipped_positions(reduced, plan)
        counted = token_range_mask(reduced.values.shape, clipped)
        scaled, low, high = normalize(reduced.values, drawing.normalize, drawing.vmin, drawing.vmax, counted)
        note = "red dashes: special, not in range" if clipped else ""
        query = reduced.query if isinstance(reduced.query, int) else None
        return text_render.text_png(layout, scaled, low=low, high=high, colormap=drawing.colormap,
                                    title=text_title(reduced, plan), query=query, clipped=clipped, note=note,
                                    level=settings.png_compression)


def text_title(reduced: ReducedMap, plan: Plan) -> str:
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
    return f"{what}; {plan.method}, {where}, head {reduced.heads}; {len(labels)} tokens"


def text_json_meta(reduced: ReducedMap, plan: Plan, limits: Limits) -> dict[str, Any]:
    """The layout for JSON answers: each token's box in the PNG of the same request."""
    layout = text_layout(reduced, plan, limits)
    return {"image_size": [layout.width, layout.height], "boxes": [list(box) for box in layout.boxes],
            "clipped_positions": clipped_positions(reduced, plan)}
