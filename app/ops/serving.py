"""Production serving glue: what ``create_app`` and the Gunicorn hooks call in a worker.

* :func:`install_serving`: JSON logs, metrics and access log, auth, CORS, and ``ProxyFix``.
* :func:`models_loaded`: record per-model load times once the registry is built.
* :func:`exit_on_load_failure`: a model that cannot load ends the worker with Gunicorn's
  ``WORKER_BOOT_ERROR`` (3), which makes the master halt instead of respawning it forever.
* :func:`load_deadline`: so does a model load that hangs past ``model_load_timeout_s``.
* :func:`worker_started` / :func:`begin_draining`: the worker's SIGTERM handler marks the
  worker draining (``/readyz`` 503) before Gunicorn lets in-flight requests finish.

Nothing here may run in the Gunicorn master (it imports torch through the ``app`` package).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any, NoReturn

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from app.http.auth import install_auth
from app.http.cors import install_cors
from app.http.state import state
from app.ops.logging_setup import configure_logging
from app.ops.metrics import metrics_api, observe_model_loads
from app.ops.observe import install_observability
from app.service.config import Settings
from models.registry import ModelRegistry, loading_now

log = logging.getLogger("attnmap.serving")

# gunicorn.arbiter.Arbiter.WORKER_BOOT_ERROR: the master halts when a worker exits with it.
WORKER_BOOT_ERROR = 3


def install_serving(app: Flask, settings: Settings) -> None:
    """Add the production layers to a freshly built app (order of the hooks matters)."""
    configure_logging()
    app.register_blueprint(metrics_api)
    install_observability(app)          # first: times and logs even the requests refused below
    install_cors(app, settings.cors_origins)   # preflights are answered before auth
    install_auth(app, settings.api_tokens)
    apply_proxy_fix(app, settings.proxy_hops)


def apply_proxy_fix(app: Flask, hops: int) -> None:
    """Trust ``X-Forwarded-For/Proto/Host/Prefix`` from exactly ``hops`` proxies (0: trust none).

    With one nginx in front, ``hops=1`` takes the address nginx appended and ignores anything a
    client wrote into the header itself. Setting more hops than there are proxies lets clients
    choose their own address, so the default (direct exposure) is 0.
    """
    if hops < 0:
        raise ValueError("ATTNMAP_PROXY_HOPS must be 0 or more")
    if hops:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops, x_prefix=hops)  # type: ignore[method-assign]


def models_loaded(registry: ModelRegistry) -> None:
    """Publish the load time of every model this worker holds."""
    observe_model_loads(registry.load_seconds)


def exit_on_load_failure(exc: BaseException) -> NoReturn:
    """Log one line naming the model that failed, then end the worker with WORKER_BOOT_ERROR."""
    configure_logging()
    log.critical("worker cannot start: %s", exc,
                 extra={"model": getattr(exc, "name", None), "error": type(exc).__name__})
    sys.exit(WORKER_BOOT_ERROR)


@contextmanager
def load_deadline(seconds: float) -> Iterator[None]:
    """End the worker with WORKER_BOOT_ERROR if the enclosed app build (model loading) outlasts ``seconds``.

    Gunicorn cannot time out a worker before its first heartbeat (its monotonic clock is compared
    with a wall-clock file time until then), so a load stuck on I/O, such as a hung network mount,
    would leave the worker hung for good and its replica a worker short. A timer thread ends the
    process instead, with a log line naming the model: the same loud failure as a missing model.
    ``os._exit`` works while the main thread is blocked in a system call.
    """
    if seconds <= 0:
        yield
        return

    def expire() -> None:
        model = loading_now[0] if loading_now else None
        configure_logging()
        log.critical("worker cannot start: loading models took longer than %g s (model %r)", seconds, model,
                     extra={"model": model, "error": "ModelLoadTimeout"})
        os._exit(WORKER_BOOT_ERROR)

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


def begin_draining(app: Flask) -> None:
    """Mark ``app``'s worker as shutting down: ``/readyz`` answers 503 ``draining`` from now on."""
    state(app).draining = True


def worker_started(worker: Any) -> None:
    """Gunicorn ``post_worker_init``: chain a draining step in front of the worker's SIGTERM handler."""
    app = getattr(worker, "wsgi", None)
    if not isinstance(app, Flask):
        return
    previous = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        begin_draining(app)
        if callable(previous):
            previous(signum, frame)

    signal.signal(signal.SIGTERM, on_sigterm)
    # Gunicorn asks for restartable system calls on SIGTERM; keep that for the new handler.
    signal.siginterrupt(signal.SIGTERM, False)
    current = state(app)
    log.info("worker ready", extra={"models": current.registry.names(),
                                    "load_seconds": {k: round(v, 3) for k, v in current.registry.load_seconds.items()}})


def worker_interrupted(worker: Any) -> None:
    """Gunicorn ``worker_int`` (SIGINT/SIGQUIT, quick shutdown): stop advertising readiness."""
    app = getattr(worker, "wsgi", None)
    if isinstance(app, Flask):
        begin_draining(app)

