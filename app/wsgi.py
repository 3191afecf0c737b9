"""WSGI entry point for Gunicorn: ``gunicorn -c gunicorn.conf.py app.wsgi:app``.

Imported by each worker after fork (the config never preloads the app), so every worker builds
its own app and loads its own models on its own device. A model that cannot be loaded (or a
configured device that does not exist) ends the worker with WORKER_BOOT_ERROR, so the master
halts with a non-zero status instead of serving without that model. So does a load that hangs
past ``ATTNMAP_MODEL_LOAD_TIMEOUT_S``.
"""

from app.http.factory import create_app
from app.ops.serving import exit_on_load_failure, load_deadline
from app.service.config import load_settings
from models.device import DeviceUnavailable
from models.registry import ModelLoadError

try:
    with load_deadline(load_settings().model_load_timeout_s):
        app = create_app()
except (ModelLoadError, DeviceUnavailable) as exc:
    exit_on_load_failure(exc)
