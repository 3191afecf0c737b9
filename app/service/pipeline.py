"""decode -> capture -> reduce -> render: the straight pipeline behind ``POST /visualize``.

No Flask here: the HTTP layer hands over validated options and decoded sources, and gets back
either PNG bytes with provenance headers or a JSON document.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from app.core.attention import AttentionStack, stack_from_array
from app.core.errors import AttnmapError, InvalidInput, Unavailable
from app.core.reduce import check_finite_map, resolve_head, resolve_layer
from app.render.colormaps import check_colormap
from app.service.config import Settings
from app.service.schemas import VisualizeOptions
from app.service.timing import StageTimer
from app.service.views import ReducedMap, reduce_for_view, render_map
from models.adapter import Capture, CaptureRequest, ImageInput, ModelAdapter, TextInput
from models.device import is_out_of_memory, release_accelerator_memory
from models.hooks import AttentionNotCaptured
from models.registry import ModelRegistry


@dataclass
class Source:
    """Exactly one of: raw weights, an image (bytes) or a text, as the request gave it."""

    weights: np.ndarray | None = None
    image_bytes: bytes | None = None
    text: str | None = None


@dataclass
class Result:
    """What the HTTP layer sends: PNG bytes or a JSON document, plus headers."""

    png: bytes | None = None
    document: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)


def check_output_limits(options: VisualizeOptions, settings: Settings) -> None:
    """Output size caps and the colormap allow-list, before any work."""
    limits = settings.limits
    if options.size > limits.max_output_side:
        raise InvalidInput(f"size must be at most {limits.max_output_side} px; got {options.size}",
                            code="output_too_large", field="size")
    check_colormap(options.colormap)
    if options.normalize == "none" and not options.vmax > options.vmin:
        raise InvalidInput("vmax must be greater than vmin", code="invalid_value", field="vmax")


def run(options: VisualizeOptions, source: Source, registry: ModelRegistry, settings: Settings, timer: StageTimer) -> Result:
    """Produce the response for one visualize request."""
    check_output_limits(options, settings)
    capture: Capture
    if source.weights is not None:
        if options.model is not None:
            raise InvalidInput("give either weights or a model with an image/text, not both",
                                code="conflicting_sources", field="model")
        if options.method == "gradient":
            raise InvalidInput("method 'gradient' needs a model input (image or text), not raw weights",
                                code="invalid_value", field="method")
        capture = Capture(stack=_raw_stack(source.weights, options))
        model_name = None
    else:
        capture = _capture_from_model(options, source, registry, settings, timer)
        model_name = options.model
    check_deadline(timer, settings)
    with timer.stage("reduce"):
        reduced = reduce_for_view(capture, options, settings)
    check_deadline(timer, settings)
    check_finite_map(reduced.values, options.method)
    meta = _provenance(model_name, capture, reduced, options)
    if options.format == "json":
        check_json_output(reduced.values.size, settings)
        document = {"values": reduced.values, "shape": list(reduced.values.shape), "meta": meta}
        return Result(document=document, headers=_headers(meta))
    png = render_map(reduced, capture, options, settings, timer)
    if len(png) > settings.limits.max_output_bytes:
        raise InvalidInput("the rendered PNG exceeds the output byte limit; ask for a smaller size",
                            code="output_too_large", field="size")
    return Result(png=png, headers=_headers(meta))


# The longest text orjson writes for one float64 ("-2.2250738585072014e-308") plus its comma.
JSON_BYTES_PER_VALUE = 25


def check_json_output(values: int, settings: Settings) -> None:
    """422 ``output_too_large`` when a JSON answer could exceed its byte cap, before it is serialised."""
    limit = settings.limits.max_output_json_bytes
    if values * JSON_BYTES_PER_VALUE > limit:
        raise InvalidInput(f"format=json would hold {values} values (up to {values * JSON_BYTES_PER_VALUE} bytes); "
                           f"the limit is {limit} bytes: pick a query row, a layer or png", code="output_too_large",
                           field="format")


def check_deadline(timer: StageTimer, settings: Settings) -> None:
    """503 when a request has run past the app deadline, checked between stages.

    The deadline sits below Gunicorn's timeout, so a slow request ends with a clear answer
    instead of its worker being killed (which would also cost a model reload).
    """
    if timer.elapsed() > settings.request_deadline_s:
        raise Unavailable(f"the request ran past the {settings.request_deadline_s:g} s deadline; "
                                 "ask for less (fewer layers, a smaller size) or retry", code="deadline_exceeded")


def _raw_stack(weights: np.ndarray, options: VisualizeOptions) -> AttentionStack:
    """Wrap uploaded weights; token labels must match the key axis."""
    tokens = options.tokens
    if tokens is not None and len(tokens) != weights.shape[-1]:
        raise InvalidInput(f"tokens has {len(tokens)} labels but the weights have {weights.shape[-1]} keys",
                            code="tokens_mismatch", field="tokens")
    return stack_from_array(weights, tokens)


def _needed_layers(options: VisualizeOptions, num_layers: int) -> tuple[int, ...]:
    """Model layers a request needs: one for attention/grid, all up to the chosen one otherwise."""
    if options.view == "trace":
        return tuple(range(num_layers))
    layer = resolve_layer(options.layer, num_layers)
    if options.method == "attention":
        return (layer,)
    return tuple(range(layer + 1))


def _capture_from_model(options: VisualizeOptions, source: Source, registry: ModelRegistry,
                        settings: Settings, timer: StageTimer) -> Capture:
    if options.model is None:
        raise InvalidInput("an image or text needs a model; GET /models lists them", code="missing_field", field="model")
    adapter = registry.get(options.model)
    info = adapter.info
    inputs: ImageInput | TextInput
    with timer.stage("decode"):
        if source.image_bytes is not None:
            if info.kind != "vision":
                raise InvalidInput(f"model {info.name!r} is a {info.kind} model; send text", code="wrong_input_kind", field="model")
            from app.decode.image import decode_image

            inputs = decode_image(source.image_bytes, settings.limits)
        else:
            if info.kind != "text":
                raise InvalidInput(f"model {info.name!r} is a {info.kind} model; send an image", code="wrong_input_kind", field="model")
            from app.decode.text import check_text

            assert source.text is not None
            inputs = TextInput(check_text(source.text, settings.limits, "text"),
                               check_text(options.text_pair, settings.limits, "text_pair") if options.text_pair is not None else None)
            if options.target_text is not None:
                check_text(options.target_text, settings.limits, "target_text")
    if isinstance(options.head, int):
        resolve_head(options.head, info.heads)
    request = CaptureRequest(layers=_needed_layers(options, info.layers), gradient=options.method == "gradient",
                             target=options.target, target_text=options.target_text, truncate=options.truncate,
                             max_tokens=settings.limits.max_tokens)
    tokens = adapter.estimate_tokens(inputs, request)
    needed = adapter.attention_bytes(tokens, len(request.layers)) * (2 if request.gradient else 1)
    budget = settings.limits.attention_budget_bytes
    if needed > budget:
        raise InvalidInput(
            f"this selection needs about {needed // (1024 * 1024)} MiB of attention for {tokens} tokens; the budget is "
            f"{budget // (1024 * 1024)} MiB (use method=attention for one layer, or a shorter input)",
            code="selection_too_large", field="method")
    check_deadline(timer, settings)
    with timer.stage("forward"):
        return _guarded_capture(adapter, inputs, request)


def _guarded_capture(adapter: ModelAdapter, inputs: ImageInput | TextInput, request: CaptureRequest) -> Capture:
    """Translate the model side's failures into API errors at this one boundary."""
    try:
        return adapter.capture(inputs, request)
    except AttnmapError:
        raise
    except AttentionNotCaptured:
        raise AttnmapError("the model did not return attention weights", code="attention_not_captured") from None
    except Exception as exc:
        if is_out_of_memory(exc):
            release_accelerator_memory()
            raise Unavailable("the accelerator is out of memory; retry shortly",
                                     code="gpu_out_of_memory", retry_after=2) from None
        raise


def _provenance(model: str | None, capture: Capture, reduced: ReducedMap, options: VisualizeOptions) -> dict[str, Any]:
    stack = capture.stack
    low, high = (float(reduced.values.min()), float(reduced.values.max())) if reduced.values.size else (0.0, 0.0)
    meta: dict[str, Any] = {
        "model": model,
        "method": options.method,
        "view": reduced.view,
        "layers": list(reduced.layers),
        "heads": reduced.heads,
        "query": reduced.query,
        "num_layers": stack.num_layers,
        "num_heads": stack.num_heads,
        "tokens": reduced.row_labels if reduced.row_labels is not None else stack.tokens,
        "key_tokens": reduced.col_labels,
        "prefix_tokens_dropped": stack.prefix_tokens if stack.grid else 0,
        "grid": list(stack.grid) if stack.grid else None,
        "value_range": [low, high],
        "semantics": "relevance" if options.method == "gradient" else "attention",
        "normalization": options.normalize,
    }
    meta.update(reduced.meta)
    meta.update(stack.meta)
    if capture.prediction is not None:
        meta["prediction"] = capture.prediction
    if capture.preprocessing:
        meta["preprocessing"] = capture.preprocessing
    return meta


def _headers(meta: dict[str, Any]) -> dict[str, str]:
    """Provenance as ``X-Attnmap-*`` headers (ASCII only; long lists summarised)."""
    def text(value: Any) -> str:
        if isinstance(value, list | tuple):
            return ",".join(str(v) for v in value) if len(value) <= 64 else f"{len(value)} values"
        return str(value)

    headers = {
        "X-Attnmap-Method": text(meta["method"]),
        "X-Attnmap-View": text(meta["view"]),
        "X-Attnmap-Layers": text(meta["layers"]),
        "X-Attnmap-Heads": text(meta["heads"]),
        "X-Attnmap-Value-Range": f"{meta['value_range'][0]:.6g},{meta['value_range'][1]:.6g}",
        "X-Attnmap-Prefix-Tokens": text(meta["prefix_tokens_dropped"]),
    }
    if meta.get("model"):
        headers["X-Attnmap-Model"] = text(meta["model"])
    if meta.get("grid"):
        headers["X-Attnmap-Grid"] = text(meta["grid"])
    if meta.get("query") is not None:
        headers["X-Attnmap-Query"] = text(meta["query"])
    if "region_mass" in meta:
        headers["X-Attnmap-Region-Mass"] = f"{meta['region_mass']:.6f}"
    if meta.get("pooled"):
        headers["X-Attnmap-Pooled"] = text(meta["pooled"])
    return {name: value.encode("ascii", "replace").decode("ascii") for name, value in headers.items()}
