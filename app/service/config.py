"""Service settings, read from ``ATTNMAP_*`` environment variables.

Every limit the service enforces lives here so that operators tune them in one place and the
OpenAPI description, the nginx config and the app agree. ``create_app(test_config)`` can
override any field by name.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

ENV_PREFIX = "ATTNMAP_"

MiB = 1024 * 1024


class Limits(BaseModel):
    """Caps on what one request may ask for; all are checked before any heavy work."""

    model_config = ConfigDict(frozen=True)

    max_body_bytes: int = 16 * MiB
    max_form_parts: int = 64
    max_form_field_bytes: int = 256 * 1024
    max_tensor_elements: int = 4_194_304
    max_tensor_dim: int = 8192
    max_image_bytes: int = 10 * MiB
    max_image_pixels: int = 25_000_000
    min_image_side: int = 8
    max_image_aspect: float = 20.0
    max_text_chars: int = 10_000
    max_tokens: int = 512
    attention_budget_bytes: int = 256 * MiB
    # Causal LMs capture rows, not T x T, so they take long inputs: their own caps and a budget for
    # everything a request materialises (captured rows or matrices, plus activations).
    max_causal_tokens: int = 8192
    max_causal_text_chars: int = 100_000
    max_generate_tokens: int = 64
    causal_budget_bytes: int = 1536 * MiB
    max_panels: int = 64
    max_output_side: int = 4096
    max_output_pixels: int = 16_000_000
    max_output_bytes: int = 8 * MiB
    # format=json: checked before serialising, at the longest a float can print (25 bytes with its comma).
    max_output_json_bytes: int = 16 * MiB
    max_labels: int = 128


class Settings(BaseModel):
    """Everything a worker needs to know at start-up."""

    model_config = ConfigDict(frozen=True)

    device: str = "auto"
    half_precision: bool = False
    models_config: str | None = None
    builtin_models: tuple[str, ...] = ("shapes-vit", "shapes-vit-shortcut", "minilm", "smollm2")
    api_tokens: tuple[str, ...] = ()
    cors_origins: tuple[str, ...] = ()
    proxy_hops: int = 0
    png_compression: int = 1
    request_deadline_s: float = 30.0
    # A worker whose models have not loaded by then ends with WORKER_BOOT_ERROR (0: no deadline).
    model_load_timeout_s: float = Field(default=300.0, ge=0)
    warmup: bool = True
    # Gunicorn's worker count (the same ATTNMAP_WORKERS that gunicorn.conf.py reads): each worker
    # gets an equal share of the CPU cores for torch unless torch_threads says otherwise.
    workers: int = Field(default=2, ge=1)
    torch_threads: int = Field(default=0, ge=0)  # 0: cores // workers, at least 1
    limits: Limits = Field(default_factory=Limits)


def _split(value: str) -> tuple[str, ...]:
    """Split a comma-separated environment value, dropping blanks."""
    return tuple(part.strip() for part in value.split(",") if part.strip())


def _env_value(name: str, raw: str) -> Any:
    """Convert one environment string to the type its field expects."""
    if name in {"builtin_models", "api_tokens", "cors_origins"}:
        return () if raw.strip().lower() in {"", "none"} else _split(raw)
    if name in {"half_precision", "warmup"}:
        return raw.strip().lower() in {"1", "true", "yes", "on"}
    return raw


def load_settings(environ: Mapping[str, str] | None = None, overrides: Mapping[str, Any] | None = None) -> Settings:
    """Build :class:`Settings` from the environment, then apply ``overrides`` (tests use these).

    ``ATTNMAP_CONFIG`` names the TOML models file; ``ATTNMAP_LIMIT_<NAME>`` sets one limit,
    e.g. ``ATTNMAP_LIMIT_MAX_BODY_BYTES=1048576``.
    """
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    limits: dict[str, Any] = {}
    for key, raw in environ.items():
        if not key.startswith(ENV_PREFIX):
            continue
        name = key[len(ENV_PREFIX):].lower()
        if name.startswith("limit_"):
            limits[name[len("limit_"):]] = raw
        elif name == "config":
            values["models_config"] = raw
        elif name in Settings.model_fields and name != "limits":
            values[name] = _env_value(name, raw)
    overrides = dict(overrides or {})
    limits.update(overrides.pop("limits", {}) or {})
    values.update(overrides)
    values["limits"] = Limits.model_validate(limits)
    return Settings.model_validate(values)
