"""Shared fixtures: Flask's factory pattern (``app`` / ``client``), and helpers for live processes."""

from __future__ import annotations

import io
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from app.http.factory import create_app

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def require_binary(name: str) -> str:
    """Path of a system binary; skip locally when missing, but fail under CI=true."""
    path = shutil.which(name)
    if path is None:
        if IN_CI:
            pytest.fail(f"{name} is required in CI but was not found on PATH")
        pytest.skip(f"{name} not installed")
    return path


@pytest.fixture
def app():
    """An app without models: the raw-weights path only (fast to build)."""
    return create_app({"builtin_models": ()})


@pytest.fixture
def client(app):
    return app.test_client()


def decode_png(data: bytes) -> np.ndarray:
    """RGB pixels of a PNG response body."""
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG"
    return np.asarray(image.convert("RGB"))
