"""A visualize request resolved once: what to capture, reduce and draw, with every check in one place.

The HTTP layer hands over the validated options and exactly one :data:`Source`; :func:`resolve`
checks them against the facts of the source (the uploaded tensor's shape, or the model's
description) and the service limits, and returns a :class:`Plan` of resolved values: integer
layer indices, a head index or fusion, the view, the model layers to capture. Capture, reduce
and render receive the plan and never validate again. Only what needs the captured tokens
(a query given as token text, a negative query index) is resolved later, by
:func:`resolve_token`, the one function that does it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from app.core.errors import InvalidInput
from app.core.reduce import Fusion
from app.core.tokens import find_token
from app.render.colormaps import check_colormap
from app.service.config import Limits
from app.service.schemas import Method, View, VisualizeOptions, check_fields_fit_source

SourceKind = Literal["weights", "image", "text"]


@dataclass(frozen=True)
class WeightsSource:
    """Raw attention weights as uploaded: float32, rank 2 to 4."""

    weights: np.ndarray


@dataclass(frozen=True)
class ImageSource:
    """An image's bytes, still encoded."""

    data: bytes


@dataclass(frozen=True)
class TextSource:
    """A text for a text model."""

    text: str


Source = WeightsSource | ImageSource | TextSource


def source_kind(source: Source) -> SourceKind:
    """Which of the three sources this is."""
    if isinstance(source, WeightsSource):
        return "weights"
    return "image" if isinstance(source, ImageSource) else "text"


@dataclass(frozen=True)
class Facts:
    """What the plan is checked against: the source's own shape, or the model's description."""

    kind: Literal["weights", "vision", "text"]
    num_layers: int
    num_heads: int
    square: bool = True
    model: str | None = None
    causal: bool = False


@dataclass(frozen=True)
class Drawing:
    """How the reduced map is drawn (already checked against the output limits)."""

    size: int
    colormap: str
    alpha: float
    annotate: bool
    normalize: Literal["minmax", "none", "row", "percentile"]
    vmin: float
    vmax: float
    interpolation: Literal["nearest", "bilinear", "bicubic"]
    region: tuple[float, float, float, float] | None
    clip_special: bool = False


@dataclass(frozen=True)
class Plan:
    """A request with every selection resolved against its source.

    ``layer`` is the non-negative model layer shown; ``layers`` are the model layers the method
    reads (one for attention; 0..layer for rollout and gradient; all for the trace view), which
    is also what a model capture records. ``query``/``key`` are as given (an index, possibly
    negative, ``cls``, ``mean`` or token text): they need the tokens, see :func:`resolve_token`.
    """

    method: Method
    view: View
    layer: int
    layers: tuple[int, ...]
    head: int | Fusion
    query: int | str | None
    key: int | str | None
    format: Literal["png", "json"]
    drawing: Drawing
    discard_ratio: float
    merge_subwords: bool
    mask_special: bool
    model: str | None
    # Causal models: the query rows to capture (None: full matrices; negative counts from the end),
    # the tokens to generate greedily, and whether the first key (the sink) is dropped.
    rows: tuple[int, ...] | None = None
    generate: int = 0
    exclude_sink: bool = False


def check_output(options: VisualizeOptions, limits: Limits) -> None:
    """Output size caps, the colormap allow-list and the fixed value range, before any work."""
    if options.size > limits.max_output_side:
        raise InvalidInput(f"size must be at most {limits.max_output_side} px; got {options.size}",
                           code="output_too_large", field="size")
    check_colormap(options.colormap)
    if options.normalize == "none" and not options.vmax > options.vmin:
        raise InvalidInput("vmax must be greater than vmin", code="invalid_value", field="vmax")


def check_source(options: VisualizeOptions, kind: SourceKind) -> None:
    """The source, the model name and the source-specific options fit together (before the model is looked up)."""
    check_fields_fit_source(options, kind)
    if kind == "weights":
        if options.model is not None:
            raise InvalidInput("give either weights or a model with an image/text, not both",
                               code="conflicting_sources", field="model")
        if options.method == "gradient":
            raise InvalidInput("method 'gradient' needs a model input (image or text), not raw weights",
                               code="invalid_value", field="method")
        if options.generate:
            raise InvalidInput("generate needs a causal language model and a text, not raw weights",
                               code="invalid_value", field="generate")
    elif options.model is None:
        raise InvalidInput("an image or text needs a model; GET /models lists them", code="missing_field", field="model")


def check_model_kind(facts: Facts, kind: SourceKind) -> None:
    """An image goes to a vision model and a text to a text model."""
    if kind == "image" and facts.kind != "vision":
        raise InvalidInput(f"model {facts.model!r} is a {facts.kind} model; send text", code="wrong_input_kind", field="model")
    if kind == "text" and facts.kind != "text":
        raise InvalidInput(f"model {facts.model!r} is a {facts.kind} model; send an image", code="wrong_input_kind",
                           field="model")


def resolve_layer(layer: int | None, num_layers: int) -> int:
    """A possibly negative layer (default: the last) as ``0..num_layers-1``; out of range is a 422."""
    chosen = -1 if layer is None else layer
    if not -num_layers <= chosen < num_layers:
        raise InvalidInput(f"layer must be in [{-num_layers}, {num_layers - 1}] (negative counts from the end); got {chosen}",
                           code="out_of_range", field="layer")
    return chosen % num_layers


def resolve_head(head: int | Fusion, num_heads: int) -> int | Fusion:
    """A head index (non-negative: -1 is not 'the last head' by accident) or a fusion."""
    if isinstance(head, str):
        return head
    if not 0 <= head < num_heads:
        raise InvalidInput(f"head must be in [0, {num_heads - 1}] or one of mean/max/min; got {head}",
                           code="out_of_range", field="head")
    return head


def resolve(options: VisualizeOptions, facts: Facts, limits: Limits) -> Plan:
    """Resolve and check every selection of ``options`` against ``facts``; any problem is a 422 here."""
    check_output(options, limits)
    view: View = options.view or ("overlay" if facts.kind == "vision" else "heatmap")
    if view == "overlay" and facts.kind != "vision":
        raise InvalidInput("view 'overlay' needs an image input", code="invalid_value", field="view")
    if view == "text" and facts.kind == "vision":
        raise InvalidInput("view 'text' needs a token input (text, or weights with tokens); images have the overlay view",
                           code="invalid_value", field="view")
    if options.method != "attention" and not facts.square:
        raise InvalidInput(f"method {options.method!r} needs square [T, T] attention", code="not_square", field="weights")
    if view == "grid" and facts.num_heads > limits.max_panels:
        raise InvalidInput(f"a grid of {facts.num_heads} heads exceeds the limit of {limits.max_panels} panels",
                           code="too_many_panels", field="view")
    for name, wanted in (("merge_subwords", options.merge_subwords), ("mask_special", options.mask_special)):
        if wanted and facts.kind != "text":
            raise InvalidInput(f"{name} needs a text model input", code="invalid_value", field=name)
    if options.exclude_sink and options.method == "gradient":
        raise InvalidInput("exclude_sink renormalises attention rows; it does not apply to method 'gradient'",
                           code="invalid_value", field="exclude_sink")
    head = resolve_head(options.head, facts.num_heads)
    query = options.query
    if query is None and facts.kind == "vision":
        query = "cls"
    generate = _check_generate(options, facts, limits)
    if view == "layers":
        if options.method != "attention":
            raise InvalidInput("view 'layers' shows attention rows; use method=attention", code="invalid_value", field="method")
        if facts.kind == "vision":
            raise InvalidInput("view 'layers' is for token sequences; use view=trace or overlay for images",
                               code="invalid_value", field="view")
        if query is None:
            query = "last" if facts.causal else "cls"
        if query == "mean":
            raise InvalidInput("view 'layers' needs one query token (an index, cls, last or a token's text)",
                               code="invalid_value", field="query")
    if view in ("trace", "layers"):
        for name, value in (("query", options.query), ("key", options.key)) if view == "trace" else ():
            if value is None:
                raise InvalidInput(f"view 'trace' needs {name} (a token index or the exact token text)",
                                   code="missing_field", field=name)
        layer = facts.num_layers - 1
        layers = tuple(range(facts.num_layers))
    else:
        layer = resolve_layer(options.layer, facts.num_layers)
        layers = (layer,) if options.method == "attention" else tuple(range(layer + 1))
    region = options.region
    drawing = Drawing(size=options.size, colormap=options.colormap, alpha=options.alpha, annotate=options.annotate,
                      normalize=options.normalize, vmin=options.vmin, vmax=options.vmax, interpolation=options.interpolation,
                      region=(region[0], region[1], region[2], region[3]) if region is not None else None,
                      clip_special=options.clip_special)
    if drawing.region is not None and not (drawing.region[2] > drawing.region[0] and drawing.region[3] > drawing.region[1]):
        raise InvalidInput("region must be [x0, y0, x1, y1] with x1 > x0 and y1 > y0", code="invalid_value", field="region")
    return Plan(method=options.method, view=view, layer=layer, layers=layers, head=head, query=query, key=options.key,
                format=options.format, drawing=drawing, discard_ratio=options.discard_ratio,
                merge_subwords=options.merge_subwords, mask_special=options.mask_special, model=options.model,
                rows=_needed_rows(options, view, query) if facts.causal else None, generate=generate,
                exclude_sink=options.exclude_sink)


def _needed_rows(options: VisualizeOptions, view: str, query: int | str | None) -> tuple[int, ...] | None:
    """Query rows a causal capture needs (None: full matrices).

    One row when the view shows one query's attention (an index, ``last`` or ``cls``) with method
    attention and no token option that regroups the matrix; ``view=layers`` always shows one row.
    """
    if options.method != "attention" or view in ("grid", "trace", "text") or options.merge_subwords or options.mask_special:
        return None
    if query == "last":
        return (-1,)
    if query == "cls":
        return (0,)
    if isinstance(query, int):
        return (query,)
    return None


def _check_generate(options: VisualizeOptions, facts: Facts, limits: Limits) -> int:
    """The ``generate`` count, checked against the model kind, the view and the cap."""
    if not options.generate:
        return 0
    if not facts.causal:
        raise InvalidInput("generate needs a causal language model", code="invalid_value", field="generate")
    if options.generate > limits.max_generate_tokens:
        raise InvalidInput(f"generate must be at most {limits.max_generate_tokens}; got {options.generate}",
                           code="out_of_range", field="generate")
    if options.method != "attention" or options.view not in (None, "heatmap"):
        raise InvalidInput("generate shows attention rows as a heatmap: use method=attention and view=heatmap",
                           code="invalid_value", field="generate")
    if options.query is not None:
        raise InvalidInput("generate chooses the rows itself (one per generated token); leave query out",
                           code="invalid_value", field="query")
    return options.generate


def resolve_token(value: int | str, labels: list[str] | None, count: int, name: str) -> int:
    """A token given as an index (negative counts from the end) or as its exact text, as a position.

    ``cls`` is position 0 and ``last`` the last. Token text matches exactly first, then ignoring case and word-piece
    markers (:func:`~app.core.tokens.find_token`; not found: a 422 listing the tokens). Anything
    else is a 422 that names the valid range.
    """
    if value == "cls":
        return 0
    if value == "last":
        return count - 1
    if isinstance(value, str):
        return find_token(labels, value, name)
    if not -count <= value < count:
        raise InvalidInput(f"{name} must be in [{-count}, {count - 1}], 'cls', 'last' or 'mean'; got {value}",
                           code="out_of_range", field=name)
    return value % count
