"""The app factory: ``create_app(test_config)`` wires settings, blueprints, hooks and models.

Under Gunicorn each worker calls it, so each worker loads its own copy of the models (never the
master: CUDA must not be touched before fork).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from typing import Any

from flask import Flask, Response, g, request

from app.http.errors import register_error_handlers
from app.http.routes import api
from app.http.state import ServiceState
from app.http.web import web
from app.ops.serving import install_serving, models_loaded
from app.service.config import load_settings
from app.service.timing import StageTimer
from models.device import cpu_threads_per_worker
from models.registry import ModelRegistry, build_registry

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")


def create_app(test_config: Mapping[str, Any] | None = None, registry: ModelRegistry | None = None) -> Flask:
    """Build the app: settings from ``ATTNMAP_*`` (overridden by ``test_config``), then models.

    ``registry`` lets tests inject already-loaded models instead of loading the configured ones.
    """
    settings = load_settings(overrides=test_config)
    # No default /static route: the page blueprint serves its own files under /assets.
    app = Flask(__name__, static_folder=None)
    app.config.update(
        MAX_CONTENT_LENGTH=settings.limits.max_body_bytes,
        MAX_FORM_PARTS=settings.limits.max_form_parts,
        MAX_FORM_MEMORY_SIZE=settings.limits.max_form_field_bytes,
        PROPAGATE_EXCEPTIONS=False,
        TRAP_HTTP_EXCEPTIONS=False,
    )
    register_error_handlers(app)
    app.register_blueprint(api)
    app.register_blueprint(web)
    _install_request_hooks(app)
    install_serving(app, settings)  # metrics, JSON access log, auth, CORS, ProxyFix
    if registry is None:
        registry = build_registry(settings.builtin_models, settings.models_config, settings.device,
                                  settings.half_precision, warmup=settings.warmup,
                                  cpu_threads=cpu_threads_per_worker(settings.workers, settings.torch_threads))
    models_loaded(registry)
    app.extensions["attnmap"] = ServiceState(settings=settings, registry=registry, ready=True)
    return app


def _install_request_hooks(app: Flask) -> None:
    """Request id in and out, stage timings, and headers every response carries."""

    @app.before_request
    def start_request() -> None:
        incoming = request.headers.get("X-Request-ID", "")
        g.request_id = incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex
        g.timer = StageTimer()

    @app.after_request
    def finish_request(response: Response) -> Response:
        response.headers["X-Request-ID"] = getattr(g, "request_id", "")
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers.setdefault("Cache-Control", "no-store")
        timer = getattr(g, "timer", None)
        if timer is not None and timer.stages:
            response.headers["Server-Timing"] = timer.server_timing()
        return response

