"""Helpers shared by several test modules (conftest.py holds fixtures only; test modules import from here).

Kept small on purpose: checks of an HTTP response (``assert_error``, ``decode_png``), image bytes the
decoding and placement tests both need (``encoded``, ``with_orientation``), an app serving given
adapters (``app_for``, also behind the ``make_app`` fixture) and the rule for missing system binaries
(``require_binary``). Domain helpers live in their own support modules (live.py, vision_support.py,
text_models.py, serving_support.py, catalogue.py).
"""

from __future__ import annotations

import io
import os
import shutil
from typing import Any

import numpy as np
import pytest
from PIL import Image

from app.http.factory import create_app
from models.registry import ModelRegistry

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def require_binary(name: str) -> str:
    """Path of a system binary; skip locally when missing, but fail under CI=true."""
    path = shutil.which(name)
    if path is None:
        if IN_CI:
            pytest.fail(f"{name} is required in CI but was not found on PATH")
        pytest.skip(f"{name} not installed")
    return path


def app_for(*adapters: Any, registry: ModelRegistry | None = None, **config: Any) -> Any:
    """A Flask app without built-in models, overriding settings with ``config``.

    With ``adapters`` it serves exactly those (already loaded) models; with ``registry`` that registry;
    with neither, the models the settings name (e.g. a ``models_config`` file).
    """
    if adapters:
        if registry is not None:
            raise ValueError("pass adapters or a registry, not both")
        registry = ModelRegistry(list(adapters))
    return create_app({"builtin_models": (), **config}, registry=registry)


def decode_png(data: bytes) -> np.ndarray:
    """RGB pixels of a PNG response body."""
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG"
    return np.asarray(image.convert("RGB"))


def assert_error(response: Any, status: int, code: str, field: str | None = None) -> dict:
    """Check a JSON error response (status, code, message, request id, field) that leaks no internals; return its body."""
    assert response.status_code == status, response.data[:300]
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert body["error"]["code"] == code, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert body["request_id"] == response.headers["X-Request-ID"]
    if field is not None:
        assert body["error"]["field"] == field
    text = response.get_data(as_text=True)
    for leak in ("Traceback", "site-packages", "/work/", "File \""):
        assert leak not in text
    return body


def encoded(image: Image.Image, fmt: str, **save: Any) -> bytes:
    """``image`` saved in format ``fmt`` (extra Pillow save options allowed)."""
    buffer = io.BytesIO()
    image.save(buffer, fmt, **save)
    return buffer.getvalue()


def with_orientation(display: Image.Image, orientation: int, fmt: str = "PNG") -> bytes:
    """Stored pixels rotated so that applying EXIF ``orientation`` gives ``display`` back."""
    stored = display.transpose(Image.Transpose.ROTATE_90 if orientation == 6 else Image.Transpose.ROTATE_270)
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encoded(stored, fmt, exif=exif, **({"quality": 95} if fmt == "JPEG" else {}))
