"""decode -> capture -> reduce -> render: the straight pipeline behind ``POST /visualize``.

No Flask here: the HTTP layer hands over validated options and exactly one source; the request
is resolved once into a :class:`~app.service.plan.Plan`, and the view table says how its map is
reduced and drawn. The result is PNG bytes or a JSON document, with provenance headers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from app.core import deadline
from app.core.attention import AttentionStack, stack_from_array
from app.core.errors import AttnmapError, InvalidInput, Unavailable
from app.core.inputs import ImageInput, TextInput
from app.core.reduce import check_finite_map
from app.service.config import Settings
from app.service.plan import (
    Facts,
    ImageSource,
    Plan,
    Source,
    TextSource,
    WeightsSource,
    check_model_kind,
    check_output,
    check_source,
    resolve,
    source_kind,
)
from app.service.reduction import ReducedMap
from app.service.schemas import VisualizeOptions
from app.service.timing import StageTimer
from app.service.views import view_entry
from models.adapter import Capture, CaptureRequest, ModelAdapter, ModelInfo
from models.device import is_out_of_memory, release_accelerator_memory
from models.hooks import AttentionNotCaptured
from models.registry import ModelRegistry


@dataclass(frozen=True)
class PngResult:
    """Encoded PNG bytes and the provenance headers."""

    png: bytes
    headers: dict[str, str]


@dataclass(frozen=True)
class JsonResult:
    """The JSON document (values and meta) and the provenance headers."""

    document: dict[str, Any]
    headers: dict[str, str]


Result = PngResult | JsonResult


def run(options: VisualizeOptions, source: Source, registry: ModelRegistry, settings: Settings, timer: StageTimer) -> Result:
    """Produce the response for one visualize request: resolve the plan, capture, reduce, render."""
    check_output(options, settings.limits)  # before any work, even before the model is looked up
    kind = source_kind(source)
    check_source(options, kind)
    if isinstance(source, WeightsSource):
        weights = source.weights
        facts = Facts(kind="weights", num_layers=weights.shape[0] if weights.ndim == 4 else 1,
                      num_heads=weights.shape[-3] if weights.ndim >= 3 else 1, square=weights.shape[-1] == weights.shape[-2])
        plan = resolve(options, facts, settings.limits)
        capture = Capture(stack=_raw_stack(weights, options))
    else:
        plan, capture = _capture_from_model(options, source, registry, settings, timer)
    check_deadline(timer, settings)
    entry = view_entry(plan.view)
    with timer.stage("reduce"):
        reduced = entry.reduce(capture, plan, settings.limits)
    check_deadline(timer, settings)
    check_finite_map(reduced.values, plan.method)
    meta = _provenance(plan, capture, reduced)
    if plan.format == "json":
        check_json_output(reduced.values.size, settings)
        document = {"values": reduced.values, "shape": list(reduced.values.shape), "meta": meta}
        return JsonResult(document=document, headers=_headers(meta))
    png = entry.render(reduced, capture, plan, settings, timer)
    if len(png) > settings.limits.max_output_bytes:
        raise InvalidInput("the rendered PNG exceeds the output byte limit; ask for a smaller size",
                           code="output_too_large", field="size")
    return PngResult(png=png, headers=_headers(meta))


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
        raise deadline.exceeded(settings.request_deadline_s)


def _raw_stack(weights: np.ndarray, options: VisualizeOptions) -> AttentionStack:
    """Wrap uploaded weights; token labels must match the key axis."""
    tokens = options.tokens
    if tokens is not None and len(tokens) != weights.shape[-1]:
        raise InvalidInput(f"tokens has {len(tokens)} labels but the weights have {weights.shape[-1]} keys",
                           code="tokens_mismatch", field="tokens")
    return stack_from_array(weights, tokens)


def _model_facts(info: ModelInfo) -> Facts:
    return Facts(kind=info.kind, num_layers=info.layers, num_heads=info.heads, model=info.name, causal=info.causal)


def _decode_input(options: VisualizeOptions, source: ImageSource | TextSource, settings: Settings,
                  causal: bool) -> ImageInput | TextInput:
    if isinstance(source, ImageSource):
        from app.decode.image import decode_image

        return decode_image(source.data, settings.limits)
    from app.decode.text import check_text

    limits = settings.limits
    pair = check_text(options.text_pair, limits, "text_pair") if options.text_pair is not None else None
    if options.target_text is not None:
        check_text(options.target_text, limits, "target_text")
    # Causal LMs capture rows, not T x T, so they take much longer prompts than encoders.
    chars = limits.max_causal_text_chars if causal else None
    return TextInput(check_text(source.text, limits, "text", chars), pair)


def _capture_from_model(options: VisualizeOptions, source: ImageSource | TextSource, registry: ModelRegistry,
                        settings: Settings, timer: StageTimer) -> tuple[Plan, Capture]:
    assert options.model is not None  # check_source: an image or text comes with a model
    adapter = registry.get(options.model)
    facts = _model_facts(adapter.info)
    check_model_kind(facts, source_kind(source))
    plan = resolve(options, facts, settings.limits)
    with timer.stage("decode"):
        inputs = _decode_input(options, source, settings, facts.causal)
    limits = settings.limits
    request = CaptureRequest(layers=plan.layers, gradient=plan.method == "gradient",
                             target=options.target, target_text=options.target_text, truncate=options.truncate,
                             max_tokens=limits.max_causal_tokens if facts.causal else limits.max_tokens,
                             rows=plan.rows, generate=plan.generate)
    tokens = adapter.estimate_tokens(inputs, request)
    _check_budget(adapter, request, tokens, limits.causal_budget_bytes if facts.causal else limits.attention_budget_bytes)
    check_deadline(timer, settings)
    # The forward pass checks the deadline once per layer call, so even a pass longer than the
    # whole deadline (8,192 tokens on a CPU) ends at it, well before Gunicorn's worker timeout.
    with timer.stage("forward"), deadline.within(timer.started + settings.request_deadline_s, settings.request_deadline_s):
        return plan, _guarded_capture(adapter, inputs, request)


def _check_budget(adapter: ModelAdapter, request: CaptureRequest, tokens: int, budget: int) -> None:
    """422 before any forward pass when what the request would materialise exceeds the budget.

    The adapter counts what it will really hold: for a causal row capture that is rows x T per
    captured layer plus the pass's activations, not T^2; the message says how many tokens fit.
    """
    needed = adapter.working_bytes(tokens, request)
    if needed <= budget:
        return
    fitting = adapter.fitting_tokens(request, budget)
    what = "attention" if not adapter.info.causal else "attention and activations"
    hint = ("ask for one query row (query=last or an index) or fewer layers" if adapter.info.causal
            else "use method=attention for one layer")
    raise InvalidInput(
        f"this selection needs about {needed // (1024 * 1024)} MiB of {what} for {tokens} tokens; the budget is "
        f"{budget // (1024 * 1024)} MiB, which fits this selection for at most {fitting} tokens ({hint}, or a shorter input)",
        code="selection_too_large", field="method")


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


def _provenance(plan: Plan, capture: Capture, reduced: ReducedMap) -> dict[str, Any]:
    stack = capture.stack
    low, high = (float(reduced.values.min()), float(reduced.values.max())) if reduced.values.size else (0.0, 0.0)
    meta: dict[str, Any] = {
        "model": plan.model,
        "method": plan.method,
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
        "semantics": "relevance" if plan.method == "gradient" else "attention",
        "normalization": plan.drawing.normalize,
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
