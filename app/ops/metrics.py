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


def observe_request(route: str, method: str, status: int, seconds: float, stages: Mapping[str, float],
                    error_code: str | None) -> None:
    """Count one answered request with its latency, stage timings and, for errors, its code."""
    REQUESTS.labels(route, method, str(status)).inc()
    REQUEST_SECONDS.labels(route).observe(seconds)
    for stage, stage_seconds in stages.items():
        # Stage names come from the code, not the client, but keep the label set closed anyway.
        if stage in STAGES:
            STAGE_SECONDS.labels(stage).observe(stage_seconds)
    if status >= 400:
        REJECTED.labels(error_code or "unknown", str(status)).inc()


def observe_resources(figures: int, hooks: int | None) -> None:
    """Record the leak sentinels after a request (``hooks`` None: no model ran, nothing to count)."""
    FIGURES_CACHED.set(figures)
    if hooks is not None:
        MODEL_HOOKS.set(hooks)


def observe_model_loads(load_seconds: Mapping[str, float]) -> None:
    """Record how long this worker took to load each of its models."""
    for model, seconds in load_seconds.items():
        MODEL_LOAD_SECONDS.labels(model).set(seconds)
