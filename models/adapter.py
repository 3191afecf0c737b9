"""The interface every model family implements (setup once per worker, then capture per request).

Only adapters know model families. The web layer hands them decoded inputs and a
:class:`CaptureRequest`; they hand back a :class:`Capture` holding an
:class:`~app.core.attention.AttentionStack` plus what rendering needs (the image and where the
model's input came from in it).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from app.core.attention import AttentionStack
from app.core.inputs import ImageInput, TextInput

ModelKind = Literal["vision", "text"]


@dataclass(frozen=True)
class ModelInfo:
    """What ``GET /models`` says about a loaded model."""

    name: str
    kind: ModelKind
    family: str
    layers: int
    heads: int
    device: str
    dtype: str
    input_size: tuple[int, int] | None = None
    patch_size: int | None = None
    prefix_tokens: int = 0
    max_tokens: int | None = None
    labels: tuple[str, ...] = ()
    description: str = ""
    # Decoder LLMs: every query sees only the keys before it; key/value heads are grouped (GQA).
    causal: bool = False
    kv_heads: int | None = None

    def as_json(self) -> dict[str, Any]:
        """JSON-ready description."""
        return {
            "name": self.name, "kind": self.kind, "family": self.family, "layers": self.layers,
            "heads": self.heads, "device": self.device, "dtype": self.dtype,
            "input_size": list(self.input_size) if self.input_size else None,
            "patch_size": self.patch_size, "prefix_tokens": self.prefix_tokens,
            "max_tokens": self.max_tokens, "labels": list(self.labels), "description": self.description,
            "causal": self.causal, "kv_heads": self.kv_heads if self.kv_heads is not None else self.heads,
        }


@dataclass(frozen=True)
class CaptureRequest:
    """What a request needs from the forward pass.

    ``layers`` are the model layer indices to capture (ascending); capture stops after the last
    one unless ``gradient`` is set (gradients need the whole graph up to the output).
    ``target`` is the class index for gradients (None: the predicted class); ``target_text`` a
    second text whose similarity is the score for sentence-embedding models.
    ``max_tokens`` is the service's token cap (text adapters use the smaller of it and the
    model's position limit; None: the model's limit alone).
    ``rows`` are the query positions whose attention rows are wanted (negative counts from the
    end; None: full matrices). Causal adapters capture only those rows on the fused path.
    ``generate`` asks a causal model for that many greedy tokens; the capture then holds, for each
    generated token, the row that produced it. ``target`` is a token id for causal gradients.
    """

    layers: tuple[int, ...]
    gradient: bool = False
    target: int | None = None
    target_text: str | None = None
    truncate: bool = False
    max_tokens: int | None = None
    rows: tuple[int, ...] | None = None
    generate: int = 0


Placement = tuple[float, float, float, float]


@dataclass(frozen=True)
class Picture:
    """The input image of a vision capture and where the model's input came from in it.

    ``placement`` is ``(x0, y0, x1, y1)``: the part of the original image the patch grid covers.
    """

    pixels: np.ndarray
    placement: Placement


@dataclass
class Capture:
    """Result of a forward pass: the attention stack, and the picture for vision inputs."""

    stack: AttentionStack
    picture: Picture | None = None
    prediction: dict[str, Any] | None = None
    preprocessing: dict[str, Any] = field(default_factory=dict)


class ModelAdapter(ABC):
    """One loaded model of one family, owned by one worker process."""

    info: ModelInfo
    # The torch module this adapter owns (loaded once per worker, shared by its requests).
    model: Any
    # (model, every module of it), listed once for the per-request hook count.
    _listed_modules: tuple[Any, tuple[Any, ...]] | None = None

    @abstractmethod
    def capture(self, inputs: ImageInput | TextInput, request: CaptureRequest) -> Capture:
        """Run a hooked forward pass and return the requested layers' attention."""

    @abstractmethod
    def estimate_tokens(self, inputs: ImageInput | TextInput, request: CaptureRequest) -> int:
        """Sequence length the input will have, computed without a forward pass."""

    def warm_up(self) -> None:  # noqa: B027 - optional hook, most adapters need nothing more
        """Run one small forward pass so the first request does not pay for lazy initialisation."""

    def hook_count(self) -> int:
        """Forward hooks currently registered on the model (0 between requests; a leak shows up here)."""
        from models.hooks import hooks_on_modules

        model = self.model
        # The module tree is fixed once a model is loaded, and this runs after every model request:
        # list it once instead of walking it each time.
        modules = self._listed_modules
        if modules is None or modules[0] is not model:
            modules = (model, tuple(model.modules()))
            self._listed_modules = modules
        return hooks_on_modules(modules[1])

    def attention_bytes(self, tokens: int, layers: int) -> int:
        """Memory of ``layers`` captured layers: L x H x T^2 float32 (gradients double it)."""
        return layers * self.info.heads * tokens * tokens * 4

    def working_bytes(self, tokens: int, request: CaptureRequest) -> int:
        """Memory a request will materialise, checked against the budget before any forward pass."""
        return self.attention_bytes(tokens, len(request.layers)) * (2 if request.gradient else 1)

    def fitting_tokens(self, request: CaptureRequest, budget: int) -> int:
        """Longest input whose :meth:`working_bytes` stays within ``budget`` (0: none does)."""
        low, high = 0, max(1, self.info.max_tokens or 8192)
        while low < high:
            middle = (low + high + 1) // 2
            if self.working_bytes(middle, request) <= budget:
                low = middle
            else:
                high = middle - 1
        return low
