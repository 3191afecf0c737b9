"""Gunicorn settings for attnmap, a model server (each value chosen deliberately; see README).

Environment overrides: ATTNMAP_BIND, ATTNMAP_WORKERS, ATTNMAP_TIMEOUT, ATTNMAP_GRACEFUL_TIMEOUT,
ATTNMAP_MAX_REQUESTS, ATTNMAP_FORWARDED_ALLOW_IPS.
"""

import os

wsgi_app = "app.wsgi:app"
bind = os.environ.get("ATTNMAP_BIND", "127.0.0.1:8000")

# Each worker holds its own copy of the models; scale with workers per GPU and with replicas.
workers = int(os.environ.get("ATTNMAP_WORKERS", "2"))
# Sync workers: one request at a time per worker, so a model is never used by two threads.
# They need a buffering proxy (nginx) in front for slow clients.
# attnmap's subclass of the sync worker (app/ops/gunicorn_worker.py): requests Gunicorn's parser
# refuses get the API's JSON error instead of an HTML page, and SIGTERM drains the listen backlog
# (readiness false, keep accepting while connections wait, for at most graceful_timeout - 5 s)
# instead of resetting it. The module imports only Gunicorn and the standard library (the master loads it).
worker_class = "app.ops.gunicorn_worker.AttnmapWorker"
threads = 1

# Never load the app in the master: CUDA initialised before fork breaks every worker.
preload_app = False

# Ordered: client deadline < app deadline (30 s) < timeout < proxy read timeout (65 s).
timeout = int(os.environ.get("ATTNMAP_TIMEOUT", "60"))
graceful_timeout = int(os.environ.get("ATTNMAP_GRACEFUL_TIMEOUT", "30"))
keepalive = 2

# A backstop against slow leaks, not a cure: recycling reloads models (seconds). Jitter keeps
# workers from restarting together.
max_requests = int(os.environ.get("ATTNMAP_MAX_REQUESTS", "20000"))
max_requests_jitter = max_requests // 10

# The heartbeat file on tmpfs: a slow or full disk must not make workers look dead.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None  # noqa: S108 - tmpfs on purpose

# Request-line and header limits in front of the app's own body limits.
limit_request_line = 4094
limit_request_fields = 50
limit_request_field_size = 8190

# Only the local proxy may set X-Forwarded-*; never '*'.
forwarded_allow_ips = os.environ.get("ATTNMAP_FORWARDED_ALLOW_IPS", "127.0.0.1,::1")

# A small backlog makes overload visible quickly instead of queueing for minutes.
backlog = 64

# Gunicorn 25+ opens a runtime control socket ($XDG_RUNTIME_DIR or ~/.gunicorn/gunicorn.ctl) by
# default: an admin interface we do not use (signals do the same), a path that two instances on
# one host would share, and a write into $HOME that a read-only container refuses.
control_socket_disable = True

# The app writes one JSON access-log line per request (app/observe.py); Gunicorn's would duplicate it.
accesslog = None
errorlog = "-"
loglevel = os.environ.get("ATTNMAP_LOG_LEVEL", "info")


# --- Server hooks --------------------------------------------------------------------------------
# The master runs on_starting, when_ready, pre_fork, child_exit and on_exit. It must never import
# torch (nor the app package, which imports torch): CUDA initialised before fork breaks every
# worker ("Cannot re-initialize CUDA in forked subprocess"). The worker hooks import the app.

_created_metrics_dirs: list[str] = []


def _refuse_cuda_in_master(server, where):
    """Halt the master if anything initialised CUDA in it (e.g. someone turned preload_app on)."""
    import sys

    torch = sys.modules.get("torch")  # look, never import: importing is the thing to avoid
    if torch is not None and torch.cuda.is_initialized():
        server.log.critical("CUDA was initialised in the Gunicorn master (%s); refusing to fork workers", where)
        raise RuntimeError("CUDA initialised in the Gunicorn master")


def on_starting(server):
    """Master, before anything else: a clean Prometheus multiprocess directory for this run."""
    import glob
    import tempfile

    _refuse_cuda_in_master(server, "on_starting")
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        # An operator-provided directory (e.g. a Kubernetes emptyDir) may hold a previous run's files.
        os.makedirs(directory, exist_ok=True)
        for stale in glob.glob(os.path.join(directory, "*.db")):
            os.unlink(stale)
    else:
        directory = tempfile.mkdtemp(prefix="attnmap-metrics-")
        _created_metrics_dirs.append(directory)
        # Set before the first fork, so every worker's prometheus_client picks multiprocess mode.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    server.log.info("Prometheus multiprocess directory: %s", directory)


def when_ready(server):
    """Master, sockets bound and about to spawn workers."""
    _refuse_cuda_in_master(server, "when_ready")


def pre_fork(server, worker):
    """Master, just before each fork (including respawns after a worker dies)."""
    _refuse_cuda_in_master(server, "pre_fork")


def post_worker_init(worker):
    """Worker, after app.wsgi built the app (models loaded and warmed): install draining on SIGTERM."""
    from app.ops.serving import worker_started

    worker_started(worker)


def worker_int(worker):
    """Worker, on SIGINT/SIGQUIT (quick shutdown): stop reporting ready."""
    from app.ops.serving import worker_interrupted

    worker_interrupted(worker)


def worker_abort(worker):
    """Worker, on SIGABRT: the master killed it for exceeding `timeout` (a request ran > 60 s)."""
    worker.log.error("worker %s aborted after exceeding the %s s timeout", worker.pid, timeout)


def child_exit(server, worker):
    """Master, after a worker exited: drop its live-gauge files so /metrics stops reporting it."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid, directory)


def on_exit(server):
    """Master, last: remove the metrics directory it created."""
    import shutil

    for directory in _created_metrics_dirs:
        shutil.rmtree(directory, ignore_errors=True)
