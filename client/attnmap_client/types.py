"""Value types the client returns: plain frozen dataclasses built from the API's JSON."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ModelInfo:
    """One entry of ``GET /models``."""

    name: str
    kind: str
    """``"vision"`` or ``"text"``."""
    family: str
    layers: int
    heads: int
    device: str
    dtype: str
    input_size: tuple[int, ...] | None = None
    patch_size: int | None = None
    prefix_tokens: int = 0
    max_tokens: int | None = None
    labels: tuple[str, ...] = ()
    description: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)
    """Fields a newer server sends that this client does not know yet."""

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ModelInfo:
        """Build from one item of the ``models`` list."""
        known = {"name", "kind", "family", "layers", "heads", "device", "dtype", "input_size", "patch_size",
                 "prefix_tokens", "max_tokens", "labels", "description"}
        size = data.get("input_size")
        return cls(
            name=str(data["name"]), kind=str(data["kind"]), family=str(data["family"]), layers=int(data["layers"]),
            heads=int(data["heads"]), device=str(data["device"]), dtype=str(data["dtype"]),
            input_size=tuple(int(v) for v in size) if size is not None else None,
            patch_size=int(data["patch_size"]) if data.get("patch_size") is not None else None,
            prefix_tokens=int(data.get("prefix_tokens") or 0),
            max_tokens=int(data["max_tokens"]) if data.get("max_tokens") is not None else None,
            labels=tuple(str(v) for v in data.get("labels") or ()),
            description=str(data.get("description") or ""),
            extra={k: v for k, v in data.items() if k not in known},
        )


@dataclass(frozen=True)
class Health:
    """``GET /healthz``: the process answers."""

    status: str


@dataclass(frozen=True)
class Readiness:
    """``GET /readyz`` when ready (a 503 raises :class:`~attnmap_client.errors.ServiceUnavailableError`)."""

    status: str
    models: tuple[str, ...]


@dataclass(frozen=True)
class AttentionMap:
    """``POST /visualize`` with ``format=json``: the reduced map as numbers, with its provenance."""

    values: list[Any]
    """Nested lists of floats (the map before resizing or colouring)."""
    shape: tuple[int, ...]
    meta: Mapping[str, Any]
    request_id: str | None = None

    @property
    def region_mass(self) -> float | None:
        """Share of the map inside the requested ``region`` (None when no region was sent)."""
        value = self.meta.get("region_mass")
        return float(value) if value is not None else None

    @property
    def area_share(self) -> float | None:
        """Share of the model's input the region covers: the chance level of :attr:`region_mass`."""
        value = self.meta.get("region_area_share")
        return float(value) if value is not None else None

    @property
    def prediction(self) -> Mapping[str, Any] | None:
        """The model's prediction (classifiers).

        ``{"label", "index", "probability", "score_kind", "score", "target", "target_label"}`` (openapi.yaml's
        Prediction); older servers sent ``{"label", "index", "score"}`` for images.
        """
        value = self.meta.get("prediction")
        return value if isinstance(value, Mapping) else None

    @property
    def tokens(self) -> list[str] | None:
        """Token labels (text models)."""
        value = self.meta.get("tokens")
        return list(value) if isinstance(value, list) else None


@dataclass(frozen=True)
class RenderedMap:
    """``POST /visualize`` with ``format=png``: the picture, with the provenance headers."""

    png: bytes
    headers: Mapping[str, str]
    """Response headers, lower-cased names."""
    request_id: str | None = None

    @property
    def method(self) -> str | None:
        """``X-Attnmap-Method``."""
        return self.headers.get("x-attnmap-method")

    @property
    def layers(self) -> list[int]:
        """``X-Attnmap-Layers`` as integers."""
        raw = self.headers.get("x-attnmap-layers", "")
        return [int(v) for v in raw.split(",") if v.strip().lstrip("-").isdigit()]

    @property
    def heads(self) -> str | None:
        """``X-Attnmap-Heads``: a head index or the fusion (``mean``, ``max``, ``min``)."""
        return self.headers.get("x-attnmap-heads")

    @property
    def region_mass(self) -> float | None:
        """``X-Attnmap-Region-Mass`` (only when a region was sent)."""
        raw = self.headers.get("x-attnmap-region-mass")
        return float(raw) if raw is not None else None

    @property
    def value_range(self) -> tuple[float, float] | None:
        """``X-Attnmap-Value-Range``: min and max of the reduced map."""
        raw = self.headers.get("x-attnmap-value-range")
        if raw is None or "," not in raw:
            return None
        low, high = raw.split(",", 1)
        return float(low), float(high)
