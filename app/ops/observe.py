"""Per-request observability: Prometheus samples and one JSON access-log line per request.

Runs as Flask hooks after the request-id/timer hook of ``create_app``, so ``g.request_id`` and
``g.timer`` exist; error responses pass through ``after_request`` too (the error boundary turns
every exception into a response), with ``g.error_code`` set by ``errors.error_response``.
"""

from __future__ import annotations

import logging
import time

from flask import Flask, Response, g, request

from app.http.state import state
from app.ops.logging_setup import clip, log_access
from app.ops.metrics import observe_request, observe_resources
from app.render.annotated import open_figures

log = logging.getLogger("attnmap.observe")

# Requests that match no route share one label: a client must not be able to mint label values.
UNMATCHED_ROUTE = "<unmatched>"


def install_observability(app: Flask) -> None:
    """Register the hooks that time, count and log every request of ``app``."""

    @app.before_request
    def start_clock() -> None:
        g.started = time.perf_counter()

    @app.after_request
    def record(response: Response) -> Response:
        try:
            _record(response)
        except Exception:  # observability must never turn a good response into a 500
            log.exception("could not record request metrics")
        return response


def _record(response: Response) -> None:
    """Metrics and the access-log line for the response about to be sent."""
    started = g.get("started")
    seconds = time.perf_counter() - started if started is not None else 0.0
    timer = g.get("timer")
    stages: dict[str, float] = dict(timer.stages) if timer is not None else {}
    route = request.url_rule.rule if request.url_rule is not None else UNMATCHED_ROUTE
    error_code = g.get("error_code") if response.status_code >= 400 else None
    observe_request(route, request.method, response.status_code, seconds, stages, error_code)
    # Hooks are counted only after a forward pass, so the raw-weights path pays nothing for it.
    hooks = sum(adapter.hook_count() for adapter in state().registry.adapters()) if "forward" in stages else None
    observe_resources(open_figures(), hooks)
    log_access({
        "request_id": g.get("request_id"),
        "method": clip(request.method, 16),
        "path": clip(request.path),
        "route": route,
        "status": response.status_code,
        "bytes": response.content_length,
        "duration_ms": round(seconds * 1000, 2),
        "stages_ms": {name: round(value * 1000, 2) for name, value in stages.items()},
        "client": request.remote_addr,
        # The TCP peer when ProxyFix replaced it (i.e. the proxy); shows which hop vouched for "client".
        "peer": request.environ.get("werkzeug.proxy_fix.orig", {}).get("REMOTE_ADDR", request.remote_addr),
        "error_code": error_code,
    })
