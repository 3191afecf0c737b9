"""WSGI entry point for Gunicorn: ``gunicorn -c gunicorn.conf.py app.wsgi:app``.

Imported by each worker after fork (the config never preloads the app), so every worker builds
its own app and loads its own models on its own device.
"""

from app import create_app

app = create_app()
