"""From a reduced map to PNG bytes: colour, resize and encode it as its view draws it.

Each view has its renderer here (registered in :mod:`app.service.views`); the pixel work itself
is in the pure :mod:`app.render` modules.
"""

from __future__ import annotations

from app.render import annotated, overlay, plain
from app.render.normalize import normalize, token_range_mask
from app.render.photo_png import encode_rgb_up
from app.service.config import Settings
from app.service.plan import Plan
from app.service.reduction import ReducedMap
from app.service.timing import StageTimer
from models.adapter import Capture

_AXIS_TITLES = {"trace": ("layer", "head"), "layers": ("layer", "key")}


def render_matrix(reduced: ReducedMap, capture: Capture, plan: Plan, settings: Settings, timer: StageTimer) -> bytes:
    """A heatmap (matrix), a strip (one row) or, annotated, a labelled figure with a colour bar."""
    drawing = plan.drawing
    level = settings.png_compression
    with timer.stage("render"):
        clipped = reduced.meta.get("special_positions", []) if drawing.clip_special else []
        scaled, low, high = normalize(reduced.values, drawing.normalize, drawing.vmin, drawing.vmax,
                                      token_range_mask(reduced.values.shape, clipped))
        title = title_of(reduced, plan)
        if scaled.ndim == 1:
            if drawing.annotate:
                return annotated.bar_png(reduced.values, reduced.col_labels, size=drawing.size, colormap=drawing.colormap,
                                         max_labels=settings.limits.max_labels, title=title, level=level)
            return plain.strip_png(scaled, drawing.size, drawing.colormap, level, masked=reduced.masked)
        if drawing.annotate:
            return annotated.annotated_png(scaled, low, high, size=drawing.size, colormap=drawing.colormap,
                                           row_labels=reduced.row_labels, col_labels=reduced.col_labels,
                                           max_labels=settings.limits.max_labels, title=title, level=level,
                                           axis_titles=_AXIS_TITLES.get(reduced.view, ("query", "key")), masked=reduced.masked)
        return plain.heatmap_png(scaled, drawing.size, drawing.colormap, level, masked=reduced.masked)


def render_grid(reduced: ReducedMap, capture: Capture, plan: Plan, settings: Settings, timer: StageTimer) -> bytes:
    """Every head of a layer as panels of one image (the plan capped the panel count)."""
    drawing = plan.drawing
    with timer.stage("render"):
        panels = [normalize(p, drawing.normalize, drawing.vmin, drawing.vmax)[0] for p in reduced.values]
        return plain.grid_png(panels, drawing.size, drawing.colormap, settings.png_compression, masked=reduced.masked)


def render_overlay(reduced: ReducedMap, capture: Capture, plan: Plan, settings: Settings, timer: StageTimer) -> bytes:
    """The patch map blended over the input image.

    Blending ("render") and PNG compression ("encode") are timed apart: on photos the encode is
    the larger part and the benchmark reports them separately.
    """
    drawing = plan.drawing
    limits = settings.limits
    picture = capture.picture
    if picture is None:  # the plan allows overlays only for image inputs, whose captures carry the picture
        return render_matrix(reduced, capture, plan, settings, timer)
    with timer.stage("render"):
        scaled, _, _ = normalize(reduced.values, drawing.normalize, drawing.vmin, drawing.vmax)
        blended = overlay.overlay_image(picture.pixels, scaled, picture.placement, alpha=drawing.alpha,
                                        colormap=drawing.colormap, interpolation=drawing.interpolation,
                                        outline=drawing.region, max_side=limits.max_output_side,
                                        max_pixels=limits.max_output_pixels)
    with timer.stage("encode"):
        return encode_rgb_up(blended, settings.png_compression)


def title_of(reduced: ReducedMap, plan: Plan) -> str:
    """The figure title of an annotated map."""
    if reduced.view == "trace":
        return f"{reduced.meta.get('query_token')} \u2192 {reduced.meta.get('key_token')} by layer and head"
    if reduced.view == "layers":
        return f"query {reduced.meta.get('query_token')!r} by layer, head {reduced.heads}"
    if reduced.query == "generated":
        return f"generated tokens (rows), layer {reduced.layers[0]}, head {reduced.heads}"
    layers = reduced.layers
    where = f"layer {layers[0]}" if len(layers) == 1 else f"layers 0-{layers[-1]}"
    title = f"{plan.method}, {where}, head {reduced.heads}"
    if reduced.meta.get("pooled"):
        title += f" ({reduced.meta['pooled']} tokens pooled per cell)"
    if plan.drawing.clip_special and reduced.meta.get("special_positions"):
        title += "; special tokens outside the colour range"
    return title
