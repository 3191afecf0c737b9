"""attnmap: an HTTP service that renders transformer attention maps.

The package is grouped by layer; each imports only the layers above it in this list:

- ``app.core``: value types, the error tree and the math (no Flask, no torch)
- ``app.decode`` / ``app.render``: bytes in, pixels out (no Flask, no torch)
- ``models``: the model side (torch; imports ``app.core`` only)
- ``app.service``: settings, the request plan, the view table and the pipeline (no Flask)
- ``app.http`` / ``app.ops``: Flask: the app factory, routes, the error boundary; serving, metrics, logs
- ``app.wsgi``: Gunicorn's entry point
"""
