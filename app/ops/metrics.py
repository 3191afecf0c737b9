"""Prometheus metrics and ``GET /metrics``.

Under Gunicorn the master sets ``PROMETHEUS_MULTIPROC_DIR`` before it forks (see
``gunicorn.conf.py``), so every worker writes its samples to files there and a scrape of any
worker reports the sum over all workers, dead ones included for counters and histograms.
Without that variable (the Flask test client, a single process) a plain registry is used.

prometheus_client chooses its storage when it is first imported, which is why this decision is
taken at import time too and why the master never imports this package.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from flask import Blueprint, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

MULTIPROCESS = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))

STAGES = ("decode", "forward", "reduce", "render", "encode")

_REGISTRY = CollectorRegistry(auto_describe=True)

REQUESTS = Counter(
    "attnmap_requests", "HTTP requests answered, by route template, method and status.",
    ["route", "method", "status"], registry=_REGISTRY,
)
REQUEST_SECONDS = Histogram(
    "attnmap_request_duration_seconds", "Time from the first request hook to the response, by route template.",
    ["route"], registry=_REGISTRY,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)
STAGE_SECONDS = Histogram(
    "attnmap_stage_duration_seconds", "Time spent per pipeline stage (decode, forward, reduce, render, encode).",
    ["stage"], registry=_REGISTRY,
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
REJECTED = Counter(
    "attnmap_rejected_requests", "Requests answered with an error, by the error code of the JSON body.",
    ["code", "status"], registry=_REGISTRY,
)
# One sample per live worker (label ``pid`` in multiprocess mode): each worker loads its own copy.
MODEL_LOAD_SECONDS = Gauge(
    "attnmap_model_load_seconds", "Seconds this worker took to load and warm each model.",
    ["model"], registry=_REGISTRY, multiprocess_mode="liveall",
)

# Leak sentinels, one sample per live worker: both stay flat (figures bounded by the layout cache,
# hooks 0 between requests) however many requests a worker has served.
FIGURES_CACHED = Gauge(
    "attnmap_figures_cached", "matplotlib figures this worker keeps laid out for annotated maps (bounded LRU).",
    registry=_REGISTRY, multiprocess_mode="liveall",
)
MODEL_HOOKS = Gauge(
    "attnmap_model_forward_hooks", "Forward hooks registered on this worker's models after its last request.",
    registry=_REGISTRY, multiprocess_mode="liveall",
)

metrics_api = Blueprint("metrics", __name__)


@metrics_api.get("/metrics")
def metrics() -> Response:
    """Prometheus text exposition for every worker of this server."""
    return Response(exposition(), content_type=CONTENT_TYPE_LATEST)


def exposition() -> bytes:
    """The current samples: aggregated over worker files in multiprocess mode, else this process."""
    if MULTIPROCESS:
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)
    return generate_latest(_REGISTRY)


# Every label value comes from a closed set, so /metrics stays the same size whatever clients send:
# the method is one of these or "other" (it is the client's choice of bytes), the status one
# of the codes the app and Werkzeug answer with, and an error code one the app defines.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
OTHER = "other"
# Error codes are constants in the code, not client text; the cap makes that a checked promise.
MAX_ERROR_CODES = 200
_CODE_SHAPE = frozenset("abcdefghijklmnopqrstuvwxyz_0123456789")
_seen_codes: set[str] = set()


def method_label(method: str) -> str:
    """The request method as a label: a standard method, else ``other``."""
    return method if method in METHODS else OTHER


def status_label(status: int) -> str:
    """The status as a label: a real HTTP status (100-599), else ``other``."""
    return str(status) if 100 <= status <= 599 else OTHER


def code_label(code: str | None) -> str:
    """An error code as a label: a snake_case code, at most ``MAX_ERROR_CODES`` distinct, else ``other``."""
    if not code:
        return "unknown"
    if code in _seen_codes:
        return code
    if len(code) > 40 or not set(code) <= _CODE_SHAPE or len(_seen_codes) >= MAX_ERROR_CODES:
        return OTHER
    _seen_codes.add(code)
    return code


def observe_request(route: str, method: str, status: int, seconds: float, stages: Mapping[str, float],
                    error_code: str | None) -> None:
    """Count one answered request with its latency, stage timings and, for errors, its code."""
    REQUESTS.labels(route, method_label(method), status_label(status)).inc()
    REQUEST_SECONDS.labels(route).observe(seconds)
    for stage, stage_seconds in stages.items():
        # Stage names come from the code, not the client, but keep the label set closed anyway.
        if stage in STAGES:
            STAGE_SECONDS.labels(stage).observe(stage_seconds)
    if status >= 400:
        REJECTED.labels(code_label(error_code), status_label(status)).inc()


def observe_resources(figures: int, hooks: int | None) -> None:
    """Record the leak sentinels after a request (``hooks`` None: no model ran, nothing to count)."""
    FIGURES_CACHED.set(figures)
    if hooks is not None:
        MODEL_HOOKS.set(hooks)


def observe_model_loads(load_seconds: Mapping[str, float]) -> None:
    """Record how long this worker took to load each of its models."""
    for model, seconds in load_seconds.items():
        MODEL_LOAD_SECONDS.labels(model).set(seconds)
