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
worker_class = "sync"
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
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None

# Request-line and header limits in front of the app's own body limits.
limit_request_line = 4094
limit_request_fields = 50
limit_request_field_size = 8190

# Only the local proxy may set X-Forwarded-*; never '*'.
forwarded_allow_ips = os.environ.get("ATTNMAP_FORWARDED_ALLOW_IPS", "127.0.0.1,::1")

# A small backlog makes overload visible quickly instead of queueing for minutes.
backlog = 64

accesslog = None
errorlog = "-"
loglevel = os.environ.get("ATTNMAP_LOG_LEVEL", "info")
