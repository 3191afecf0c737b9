"""Fixtures only (helpers live in tests/helpers.py): Flask's factory pattern, one ``app``/``client`` pair.

* ``app`` / ``client``: an app without models (the raw-weights path), built per test. Other settings
  come through indirect parametrisation: ``@pytest.mark.parametrize("app", [{"limits": {...}}], indirect=True)``.
* ``make_app(*adapters, registry=None, **config)``: a factory for apps serving given adapters, a given
  registry or other settings; session-scoped, so module-scoped fixtures can build on it.
* The expensive variants, loaded once per module that uses them: ``shapes_app`` / ``shapes_client``
  (the built-in vision models) and ``minilm_app`` / ``minilm_client`` (the built-in text encoder).
"""

from __future__ import annotations

import pytest

from app.http.factory import create_app
from tests.helpers import app_for


@pytest.fixture
def app(request):
    """An app without models: the raw-weights path only (fast to build); ``request.param`` overrides settings."""
    return create_app({"builtin_models": (), **getattr(request, "param", {})})


@pytest.fixture
def client(app):
    """Flask's test client for ``app``."""
    return app.test_client()


@pytest.fixture(scope="session")
def make_app():
    """The app factory for tests: ``make_app(*adapters, registry=None, **config)`` (see helpers.app_for)."""
    return app_for


@pytest.fixture(scope="module")
def shapes_app():
    """The two built-in vision models (shapes-vit and shapes-vit-shortcut), loaded once per module."""
    return create_app({"builtin_models": ("shapes-vit", "shapes-vit-shortcut")})


@pytest.fixture(scope="module")
def shapes_client(shapes_app):
    return shapes_app.test_client()


@pytest.fixture(scope="module")
def minilm_app():
    """The built-in MiniLM, loaded once per module with the hub switched off (it must not matter)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")  # the model is read from the package folder
        return create_app({"builtin_models": ("minilm",)})


@pytest.fixture(scope="module")
def minilm_client(minilm_app):
    return minilm_app.test_client()


@pytest.fixture(scope="module")
def smollm2_client():
    """The built-in smollm2 behind an app of its own; the model itself is loaded once per test process."""
    from tests.causal_support import smollm2_app  # imports transformers: only the modules that use it pay

    return smollm2_app().test_client()
