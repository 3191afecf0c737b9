"""Attention capture on the fused path: one function registered with transformers' attention interface.

Every layer's output comes from transformers' own SDPA function, as on the plain fused path. Only
for the layers a request records, the function also computes ``softmax(Q_rows K^T * scaling
[+ tanh softcap] + mask)`` for only the query rows the request needs, so capturing the last row of
every layer costs about one fused forward pass plus O(rows x T) per recorded layer, and full
``T x T`` matrices exist only for the layers that ask for them. A layer recorded in full takes its
output from that matrix (one matmul, cheaper than SDPA on top of it; equal to SDPA's output to
float rounding, ~1e-7); a layer recorded by rows keeps SDPA's output exactly.

Capture API (a contract for the adapters; changes are listed in /work/coord/STATUS.md):

- :data:`ATTENTION_NAME` (``"attnmap_rows"``, neutral: a name holding "sdpa", "flash" or "flex"
  triggers transformers' own support checks) and :func:`register` (idempotent) put the function
  into ``AttentionInterface`` and transformers' SDPA mask builder into ``AttentionMaskInterface``
  under that name. Without the mask entry transformers builds no mask at all for a custom name and
  padding and sliding windows vanish from the layer outputs too.
- Adapters load with ``attn_implementation=ATTENTION_NAME`` (after :func:`register`) and then call
  :func:`use_capture`, which also works on a model loaded otherwise (it switches the config) and
  tags each attention module with its layer index (``module.layer_idx`` where every module has a
  distinct one, otherwise the order of the interface modules in ``named_modules()``).
- :class:`CaptureSpec` says what to record; :func:`recording` activates it for the current thread
  or task only (a ``ContextVar``), so concurrent requests never mix and the path with no recording
  active is exactly transformers' SDPA.
- :class:`Recorder` holds the result: ``weights[layer]`` is ``[B, H, R, Tk]`` (R = recorded rows of
  the latest call; R = Tq for a full matrix), ``row_index[layer]`` the query positions of those
  rows, ``calls[layer]`` the calls seen, and with ``per_step`` ``steps[layer]`` one
  :class:`Step` per call (``stacked_steps`` lays them on one key axis). ``check`` raises
  :class:`~models.hooks.AttentionNotCaptured` when a wanted layer never called the function
  (families outside the interface: Bloom, Falcon, MPT, GPT-Neo, DeBERTa-v2, SwinV2);
  :func:`routes_through_interface` tells at load time.
- :func:`attention_bytes` sizes what a spec materialises, for the memory estimate before a pass.
- :func:`count_eager_calls` proves that a forward pass never ran transformers' eager attention.

Exactness: the rows equal eager ``output_attentions`` (softmax in float32, masked scores filled with
``finfo.min`` so a fully masked padded row is eager's uniform row, not NaN). Layers SDPA cannot
compute exactly (Gemma 2's softcapping, where SDPA raises; GPT-OSS sink logits ``s_aux``, which SDPA
ignores) are computed exactly in row blocks, recorded or not. Dropout is never applied to
recorded weights (attnmap runs models in eval mode).
"""

from __future__ import annotations

import contextvars
import dataclasses
import inspect
import sys
import threading
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple

import torch
from torch import nn

from app.core import deadline
from models.hooks import AttentionNotCaptured

ATTENTION_NAME = "attnmap_rows"

# Each interface module carries its layer index under this attribute (set by use_capture).
_LAYER_ATTR = "_attnmap_layer"
# Upper bound on score elements per block when a full matrix or an exact layer is computed in
# row blocks: 2**24 float32 scores is 64 MiB of working memory, whatever the length.
BLOCK_ELEMENTS = 1 << 24

__all__ = [
    "ATTENTION_NAME", "BLOCK_ELEMENTS", "AttentionNotCaptured", "CaptureSpec", "EagerCalls", "Recorder", "Step",
    "active_recorder", "attention_bytes", "check_layers", "class_routes_through_interface", "count_eager_calls", "index_layers",
    "open_recordings", "recording", "register", "routes_through_interface", "use_capture",
]


# -- what to record ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class CaptureSpec:
    """What one forward pass (or one ``generate``) records.

    ``layers``: layer indices to record. ``rows``: query row indices to record in each call
    (negative counts from the end, ``(-1,)`` is the last token; duplicates are dropped, order
    kept); ``None`` records the full ``Tq x Tk`` matrix. ``full_layers``: layers recorded in full
    even when ``rows`` is given (they must also be in ``layers``). ``per_step``: keep every call's
    rows (``Recorder.steps``), e.g. each decode step of ``generate`` with a KV cache, whose single
    query row is that step's token. ``keep_graph``: recorded weights stay in the autograd graph
    (the layer output of a recorded layer is computed from them), so
    ``torch.autograd.grad(score, recorder.weights[layer])`` works. ``stop_early``: end the forward
    pass right after the last recorded layer (use :meth:`Recorder.run`); the model returns nothing.
    """

    layers: frozenset[int]
    rows: tuple[int, ...] | None = None
    full_layers: frozenset[int] = frozenset()
    per_step: bool = False
    keep_graph: bool = False
    stop_early: bool = False

    def __post_init__(self) -> None:
        # Accept any iterable from callers, store the declared immutable types.
        object.__setattr__(self, "layers", frozenset(int(i) for i in self.layers))
        object.__setattr__(self, "full_layers", frozenset(int(i) for i in self.full_layers))
        if self.rows is not None:
            object.__setattr__(self, "rows", tuple(dict.fromkeys(int(r) for r in self.rows)))
            if not self.rows:
                raise ValueError("rows must name at least one query row, or be None for the full matrix")
        if not self.full_layers <= self.layers:
            raise ValueError(f"full_layers {sorted(self.full_layers - self.layers)} are not among the recorded layers")
        if self.stop_early and (self.per_step or self.keep_graph):
            raise ValueError("stop_early cannot be combined with per_step or keep_graph (they need the whole pass)")

    def wants_full(self, layer: int) -> bool:
        """Whether ``layer`` is recorded as the full matrix."""
        return self.rows is None or layer in self.full_layers


class Step(NamedTuple):
    """One call's recorded rows in ``per_step`` mode.

    ``weights`` is ``[B, H, R, Tk]``; ``key_start`` is the absolute position of key column 0 (keys a
    sliding-window cache dropped come before it); ``query_start`` the absolute position of this
    call's first query, so absolute query positions are ``query_start + rows``.
    """

    weights: torch.Tensor
    rows: tuple[int, ...]
    key_start: int
    query_start: int


class _StopForward(Exception):
    """Ends a forward pass after the last recorded layer; caught by Recorder.run and recording()."""


class Recorder:
    """Per-request capture state: what the registered function recorded while a spec was active."""

    def __init__(self, spec: CaptureSpec) -> None:
        self.spec = spec
        self.weights: dict[int, torch.Tensor] = {}
        self.row_index: dict[int, tuple[int, ...]] = {}
        self.steps: dict[int, list[Step]] = {}
        self.calls: dict[int, int] = {}
        self.unindexed_calls = 0  # calls from interface modules use_capture never tagged
        self.stopped = False
        self._seen: dict[int, int] = {}  # queries seen per layer: the absolute length so far
        self._last = max(spec.layers) if spec.layers else None

    def run(self, forward: Callable[[], Any]) -> Any:
        """Call ``forward()``; an early stop (``spec.stop_early``) returns None instead of the model output."""
        try:
            return forward()
        except _StopForward:
            self.stopped = True
            return None

    def check(self, expected_layers: Collection[int] | None = None) -> None:
        """Raise AttentionNotCaptured unless every expected layer (default: the recorded ones) was recorded."""
        expected = set(self.spec.layers if expected_layers is None else expected_layers)
        missing = sorted(expected - set(self.weights))
        if missing:
            seen = sorted(self.calls)
            raise AttentionNotCaptured(
                f"layers {missing} never reached the attention function {ATTENTION_NAME!r} (layers seen: {seen}); "
                "the model does not route its attention through transformers' attention interface"
            )

    def stacked_steps(self, layer: int) -> torch.Tensor:
        """All steps' rows of ``layer`` as ``[B, H, S, K]`` on one absolute key axis (zeros where a key was not visible).

        ``K`` is the absolute length after the last step; rows come in call order (the prefill's
        recorded rows, then one per decode step for ``rows=(-1,)``).
        """
        steps = self.steps.get(layer)
        if not steps:
            raise AttentionNotCaptured(f"layer {layer} recorded no steps")
        width = max(step.query_start + max(step.rows) + 1 for step in steps)
        first = steps[0].weights
        total = sum(step.weights.shape[2] for step in steps)
        out = first.new_zeros((first.shape[0], first.shape[1], total, width))
        at = 0
        for step in steps:
            rows = step.weights.shape[2]
            keys = min(step.weights.shape[3], width - step.key_start)
            out[:, :, at:at + rows, step.key_start:step.key_start + keys] = step.weights[..., :keys]
            at += rows
        return out

    def clear(self) -> None:
        """Drop every recorded tensor (activations are freed at once)."""
        self.weights.clear()
        self.steps.clear()

    # -- called by the attention function ----------------------------------------------------

    def _advance(self, layer: int, queries: int, keys: int) -> tuple[int, int]:
        """Count a call; return (query_start, key_start) on the absolute axis."""
        self.calls[layer] = self.calls.get(layer, 0) + 1
        query_start = self._seen.get(layer, 0)
        seen = query_start + queries
        self._seen[layer] = seen
        return query_start, max(0, seen - keys)

    def _store(self, layer: int, weights: torch.Tensor, rows: tuple[int, ...], query_start: int, key_start: int) -> None:
        stored = weights if self.spec.keep_graph else weights.detach()
        self.weights[layer] = stored
        self.row_index[layer] = rows
        if self.spec.per_step:
            self.steps.setdefault(layer, []).append(Step(stored, rows, key_start, query_start))


_ACTIVE: contextvars.ContextVar[Recorder | None] = contextvars.ContextVar("attnmap_recorder", default=None)
_OPEN_LOCK = threading.Lock()
_open = 0


@contextmanager
def recording(spec: CaptureSpec) -> Iterator[Recorder]:
    """Record what ``spec`` asks for in forward passes run inside this block, in this thread/task only.

    An early stop that escapes the forward call is swallowed here too (code after the block runs).
    """
    global _open
    recorder = Recorder(spec)
    token = _ACTIVE.set(recorder)
    with _OPEN_LOCK:
        _open += 1
    try:
        yield recorder
    except _StopForward:
        recorder.stopped = True
    finally:
        _ACTIVE.reset(token)
        with _OPEN_LOCK:
            _open -= 1


def active_recorder() -> Recorder | None:
    """The recorder active in the current context, if any (None on the plain path)."""
    return _ACTIVE.get()


def open_recordings() -> int:
    """Recordings active right now in any thread (a leak check: zero between requests)."""
    with _OPEN_LOCK:
        return _open


# -- registration and layer indices -------------------------------------------------------


_registered = False
_routes_cache: dict[type, bool] = {}


def register() -> None:
    """Register the attention function and the SDPA mask builder under ATTENTION_NAME (idempotent)."""
    global _registered
    if _registered:
        return
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(ATTENTION_NAME, attention_forward)
    AttentionMaskInterface.register(ATTENTION_NAME, sdpa_mask)
    _registered = True


def _calls_interface(cls: type) -> bool:
    """Whether a module class's forward dispatches through ``ALL_ATTENTION_FUNCTIONS`` (read from its source)."""
    cached = _routes_cache.get(cls)
    if cached is None:
        forward = getattr(cls, "forward", None)
        try:
            source = inspect.getsource(forward) if forward is not None else ""
        except (OSError, TypeError):
            source = ""
        cached = "ALL_ATTENTION_FUNCTIONS" in source
        _routes_cache[cls] = cached
    return cached


def index_layers(model: nn.Module) -> dict[int, nn.Module]:
    """The modules that call the attention interface, by layer index; tags each with its index.

    ``module.layer_idx`` when every such module has a distinct integer one (decoders, BERT-likes),
    otherwise their order in ``named_modules()`` (ViT, DINOv2, DistilBERT).
    """
    modules = [m for m in model.modules() if _calls_interface(type(m))]
    indices = [getattr(m, "layer_idx", None) for m in modules]
    table: dict[int, nn.Module]
    if modules and all(isinstance(i, int) for i in indices) and len(set(indices)) == len(indices):
        table = {int(i): m for i, m in zip(indices, modules, strict=True)}  # type: ignore[arg-type]
    else:
        table = dict(enumerate(modules))
    for index, module in table.items():
        setattr(module, _LAYER_ATTR, index)
    return dict(sorted(table.items()))


def check_layers(model: nn.Module, attention_modules: Collection[nn.Module]) -> dict[int, nn.Module]:
    """Tag the layers (:func:`index_layers`) and prove they are the family's attention modules, in order.

    ``attention_modules`` are the adapter's per-layer modules; each interface module must be one of
    them or inside it (ViT's outer ``attention`` holds the module that calls the interface).
    Raises AttentionNotCaptured otherwise, or when the model never routes through the interface.
    """
    if not routes_through_interface(model):
        raise AttentionNotCaptured("this model does not route its attention through transformers' attention "
                                   "interface, so its weights cannot be captured on the fused path")
    layers = index_layers(model)
    expected = list(attention_modules)
    same = list(layers) == list(range(len(expected))) and all(
        any(inner is module for module in outer.modules()) for inner, outer in zip(layers.values(), expected, strict=True))
    if not same:
        raise AttentionNotCaptured(f"the {len(layers)} modules reaching the attention interface are not the model's "
                                   f"{len(expected)} attention layers")
    return layers


def routes_through_interface(model: nn.Module) -> bool:
    """Whether the model's attention goes through transformers' attention interface at all.

    False for Bloom, Falcon, MPT, GPT-Neo, DeBERTa-v2, SwinV2 (pinned transformers): they accept
    any ``attn_implementation`` and never call the registered function. Loaders refuse those.
    """
    return any(_calls_interface(type(m)) for m in model.modules())


def class_routes_through_interface(model_class: type) -> bool:
    """Before loading: whether a model class's modeling file dispatches attention through the interface.

    Some families outside it (GPT-Neo) even fail to build with a custom ``attn_implementation``
    (a KeyError in their own class table), so loaders ask this first and refuse with a clear message.
    """
    module = sys.modules.get(model_class.__module__)
    try:
        source = inspect.getsource(module) if module is not None else ""
    except (OSError, TypeError):
        return False
    return "ALL_ATTENTION_FUNCTIONS.get_interface(" in source


def use_capture(model: nn.Module) -> None:
    """Switch a loaded model to ATTENTION_NAME (if needed) and tag its attention layers with their indices.

    Raises AttentionNotCaptured when the model does not route through the interface.
    """
    register()
    if not routes_through_interface(model):
        raise AttentionNotCaptured(f"{type(model).__name__} does not route its attention through transformers' "
                                   "attention interface")
    config = getattr(model, "config", None)
    if config is not None and getattr(config, "_attn_implementation", None) != ATTENTION_NAME:
        model.set_attn_implementation(ATTENTION_NAME)  # type: ignore[operator]
    index_layers(model)


def _layer_of(module: nn.Module) -> int | None:
    layer = getattr(module, _LAYER_ATTR, None)
    if layer is None:
        layer = getattr(module, "layer_idx", None)
    return layer if isinstance(layer, int) else None


# -- the attention function ---------------------------------------------------------------


class _Scores:
    """Everything needed to compute the softmax weights of any set of query rows of one call."""

    def __init__(self, module: nn.Module, query: torch.Tensor, key: torch.Tensor, attention_mask: torch.Tensor | None,
                 scaling: float | None, is_causal: bool | None, softcap: float | None, sinks: torch.Tensor | None,
                 position_bias: torch.Tensor | None) -> None:
        self.query, self.key = query, key
        self.scaling = float(scaling) if scaling is not None else query.shape[-1] ** -0.5
        self.softcap = softcap
        self.sinks = sinks
        q_length, kv_length = query.shape[2], key.shape[2]
        causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
        # The rule transformers' SDPA function applies: with no mask, a causal module runs SDPA's
        # is_causal (upper-left aligned; keys beyond Tq are cropped for a fresh static cache), and a
        # single query row (decoding) attends to every key.
        self.causal = bool(q_length > 1 and attention_mask is None and causal)
        self.mask = attention_mask[..., :kv_length] if attention_mask is not None else None
        self.bias = position_bias[..., :kv_length] if position_bias is not None else None
        self.groups = query.shape[1] // key.shape[1]

    def weights(self, rows: slice | torch.Tensor) -> torch.Tensor:
        """Softmax weights ``[B, H, R, Tk]`` of the query rows ``rows``: a contiguous block (a slice, no copy) or positions."""
        query, key = self.query, self.key
        batch, heads, q_length, dim = query.shape
        selected = query[:, :, rows] if isinstance(rows, slice) else query.index_select(2, rows)
        count, keys = selected.shape[2], key.shape[2]
        if self.groups > 1:
            # Grouped key/value heads: fold each group's query heads into rows instead of repeating keys.
            scores = (selected.reshape(batch, key.shape[1], self.groups * count, dim) @ key.transpose(-1, -2))
            scores = scores.view(batch, heads, count, keys)
        else:
            scores = selected @ key.transpose(-1, -2)
        scores = scores * self.scaling
        if self.softcap is not None:
            scores = torch.tanh(scores / self.softcap) * self.softcap
        floor = torch.finfo(scores.dtype).min
        if self.bias is not None:
            scores = scores + _rows_of(self.bias, rows)
        if self.mask is not None:
            mask = _rows_of(self.mask, rows)
            scores = scores.masked_fill(~mask, floor) if mask.dtype == torch.bool else scores + mask
        elif self.causal:
            positions = torch.arange(q_length, device=query.device)[rows] if isinstance(rows, slice) else rows
            visible = positions[:, None] >= torch.arange(keys, device=query.device)[None, :]
            scores = scores.masked_fill(~visible, floor)
        if self.sinks is not None:
            # GPT-OSS: one learned sink logit per head joins the softmax and is dropped after it.
            sink = self.sinks.to(scores.dtype).reshape(1, -1, 1, 1).expand(scores.shape[0], heads, count, 1)
            combined = torch.cat([scores, sink], dim=-1)
            combined = combined - combined.max(dim=-1, keepdim=True).values
            return torch.softmax(combined.float(), dim=-1)[..., :-1].to(query.dtype)
        return torch.softmax(scores.float(), dim=-1).to(query.dtype)


def _rows_of(mask: torch.Tensor, rows: slice | torch.Tensor) -> torch.Tensor:
    """The mask rows for the selected queries (a mask broadcast over queries is returned as is)."""
    if mask.shape[2] == 1:
        return mask
    return mask[:, :, rows] if isinstance(rows, slice) else mask.index_select(2, rows)


def _apply(weights: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """``weights @ value`` with grouped value heads, without repeating them: ``[B, H, R, Dv]``."""
    batch, heads, rows, keys = weights.shape
    groups = heads // value.shape[1]
    weights = weights.to(value.dtype)
    if groups == 1:
        return weights @ value
    out = weights.reshape(batch, value.shape[1], groups * rows, keys) @ value
    return out.view(batch, heads, rows, value.shape[-1])


def _block_rows(scores: _Scores) -> int:
    batch, heads = scores.query.shape[:2]
    return max(1, BLOCK_ELEMENTS // max(1, batch * heads * scores.key.shape[2]))


def _exact_output(scores: _Scores, value: torch.Tensor) -> torch.Tensor:
    """The layer output computed from the weights in row blocks (``[B, Tq, H, Dv]``), never holding the matrix."""
    query = scores.query
    batch, heads, q_length, _ = query.shape
    out = query.new_empty((batch, heads, q_length, value.shape[-1]), dtype=value.dtype)
    step = _block_rows(scores)
    for start in range(0, q_length, step):
        block = scores.weights(slice(start, min(q_length, start + step)))
        out[:, :, start:start + block.shape[2]] = _apply(block, value)
    return out.transpose(1, 2).contiguous()


def _full_weights(scores: _Scores) -> torch.Tensor:
    """The full ``[B, H, Tq, Tk]`` matrix, in one piece when it fits a block, else preallocated and filled in row blocks.

    (Blocks concatenated with torch.cat would hold the matrix twice at the peak.)
    """
    query = scores.query
    batch, heads, q_length, _ = query.shape
    step = _block_rows(scores)
    if step >= q_length:
        return scores.weights(slice(None))
    full = query.new_empty((batch, heads, q_length, scores.key.shape[2]))
    for start in range(0, q_length, step):
        end = min(q_length, start + step)
        full[:, :, start:end] = scores.weights(slice(start, end))
    return full


def attention_forward(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                      attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                      is_causal: bool | None = None, **kwargs: Any) -> tuple[torch.Tensor, None]:
    """The registered function: SDPA's output for every layer, plus the recorded rows of the wanted ones."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    # Once per layer call: a pass that would outlive the request's deadline stops here with its 503.
    deadline.check()
    softcap = kwargs.get("softcap")
    sinks = kwargs.get("s_aux")
    exact = softcap is not None or sinks is not None
    recorder = _ACTIVE.get()
    layer = _layer_of(module)
    if recorder is not None and layer is None:
        recorder.unindexed_calls += 1
    recorded = recorder is not None and layer is not None and layer in recorder.spec.layers
    if recorder is not None and layer is not None and not recorded:
        recorder._advance(layer, query.shape[2], key.shape[2])

    def fused() -> torch.Tensor:
        output, _ = sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                           scaling=scaling, is_causal=is_causal, **kwargs)
        return output

    if not recorded and not exact:
        return fused(), None  # the plain path: exactly transformers' SDPA
    scores = _Scores(module, query, key, attention_mask, scaling, is_causal, softcap, sinks, kwargs.get("position_bias"))
    if not recorded:
        return _exact_output(scores, value), None
    assert recorder is not None and layer is not None
    spec = recorder.spec
    q_length = query.shape[2]
    query_start, key_start = recorder._advance(layer, q_length, key.shape[2])
    if spec.wants_full(layer):
        rows = tuple(range(q_length))
        # keep_graph: one piece, not blocks: blocks copied into a preallocated matrix would be held
        # twice (the copy and each block saved by autograd).
        weights = scores.weights(slice(None)) if spec.keep_graph else _full_weights(scores)
        # The matrix exists anyway: the layer output from it costs one matmul, less than SDPA on
        # top (equal to SDPA's to float rounding), and is exact for softcap and sink layers.
        output = _apply(weights, value).transpose(1, 2).contiguous()
    else:
        rows = _positions(spec.rows or (), q_length, layer)
        index = torch.tensor(rows, device=query.device)
        weights = scores.weights(index)
        output = _exact_output(scores, value) if exact else fused()
        if spec.keep_graph:
            # The recorded rows' outputs come from the recorded weights, so the gradient reaches them.
            output = output.index_copy(1, index, _apply(weights, value).transpose(1, 2).to(output.dtype))
    recorder._store(layer, weights, rows, query_start, key_start)
    if spec.stop_early and layer == recorder._last:
        raise _StopForward
    return output, None


def _positions(rows: tuple[int, ...], q_length: int, layer: int) -> tuple[int, ...]:
    """Absolute query positions of ``rows`` in a call with ``q_length`` queries (negatives from the end)."""
    positions = tuple(dict.fromkeys(r + q_length if r < 0 else r for r in rows))
    if any(not 0 <= p < q_length for p in positions):
        raise ValueError(f"layer {layer}: query rows {list(rows)} are outside the {q_length} queries of this call")
    return positions


# -- memory estimate ----------------------------------------------------------------------


def attention_bytes(rows: int | Collection[int] | None, tokens: int, layers: int | Collection[int], heads: int, *,
                    full_layers: int | Collection[int] = 0, batch: int = 1, itemsize: int = 4) -> int:
    """Bytes of the weights a spec keeps: ``rows x tokens`` per head and layer, ``tokens^2`` for full layers.

    ``rows`` is a count or the row indices (None: every layer full). ``full_layers`` (a count or
    the layers) are among ``layers`` and counted at ``tokens^2``. Working memory on top is bounded:
    at most :data:`BLOCK_ELEMENTS` float32 scores per block (x3 for the score, mask and softmax
    temporaries); a ``keep_graph`` full layer is computed in one piece, so budget its scores twice.
    """
    count = layers if isinstance(layers, int) else len(layers)
    full = full_layers if isinstance(full_layers, int) else len(full_layers)
    if rows is None:
        full, per_row_layers = count, 0
    else:
        per_row = min(tokens, rows if isinstance(rows, int) else len(set(rows)))
        per_row_layers = (count - full) * per_row
    return batch * heads * itemsize * tokens * (per_row_layers + full * tokens)


# -- proving the fused path ---------------------------------------------------------------


class EagerCalls:
    """How often transformers' eager attention ran while :func:`count_eager_calls` was active."""

    def __init__(self) -> None:
        self.count = 0


@contextmanager
def count_eager_calls(model: nn.Module) -> Iterator[EagerCalls]:
    """Count calls of the eager attention function of every modeling module ``model`` uses (a test helper).

    The modeling files look their ``eager_attention_forward`` up at call time, so replacing it in
    each module for the duration counts every eager call (and changes nothing else).
    """
    counter = EagerCalls()
    modules = {sys.modules.get(type(m).__module__) for m in model.modules() if _calls_interface(type(m))}
    patched: list[tuple[Any, Any]] = []

    def wrap(original: Any) -> Any:
        def counting(*args: Any, **kwargs: Any) -> Any:
            counter.count += 1
            return original(*args, **kwargs)
        return counting

    for module in modules:
        original = getattr(module, "eager_attention_forward", None)
        if original is not None:
            patched.append((module, original))
            module.eager_attention_forward = wrap(original)  # type: ignore[union-attr]
    try:
        yield counter
    finally:
        for module, original in patched:
            module.eager_attention_forward = original
