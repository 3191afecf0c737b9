"""HTTP routes: the only module (with the factory and intake) that knows Flask."""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response, g, request

from app.core.errors import Unavailable
from app.http.intake import read_visualize_request
from app.http.responses import json_response, png_response
from app.http.state import state
from app.service.pipeline import JsonResult, run

api = Blueprint("api", __name__)

# The contract lives at the top of the repository, next to the README that documents it.
OPENAPI_PATH = Path(__file__).resolve().parents[2] / "openapi.yaml"


@api.post("/visualize")
def visualize() -> Response:
    """Render attention from raw weights, or from an image/text run through a model."""
    current = state()
    if not current.ready:
        raise Unavailable("models are still loading", code="not_ready", retry_after=5)
    timer = g.timer
    with timer.stage("decode"):
        options, source = read_visualize_request(request, current.settings.limits)
    result = run(options, source, current.registry, current.settings, timer)
    if isinstance(result, JsonResult):
        return json_response(result.document, headers=result.headers)
    with timer.stage("encode"):
        return png_response(result.png, result.headers)


@api.get("/models")
def list_models() -> Response:
    """Describe every model this worker serves."""
    registry = state().registry
    return json_response({"models": [adapter.info.as_json() for adapter in registry.adapters()]})


@api.get("/healthz")
def healthz() -> Response:
    """Liveness: the process answers."""
    return json_response({"status": "alive"})


@api.get("/readyz")
def readyz() -> Response:
    """Readiness: models loaded and warmed, and not shutting down."""
    current = state()
    if not current.ready or current.draining:
        raise Unavailable("not ready", code="draining" if current.draining else "not_ready", retry_after=5)
    return json_response({"status": "ready", "models": current.registry.names()})


@api.get("/openapi.yaml")
def openapi() -> Response:
    """The API description this server implements."""
    spec = OPENAPI_PATH.read_bytes()
    return Response(spec, mimetype="application/yaml")
