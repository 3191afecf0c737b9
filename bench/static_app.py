"""HTTP ceiling for the benchmark: a tiny Flask app that answers every POST with one fixed PNG.

It does what any handler must do (receive the whole request body, build a Response with a
Content-Length) and nothing else, so under the same Gunicorn settings its req/s is the most a
Flask + Gunicorn service can serve for this request and response size on this machine.

The PNG is read once from the file named by ``ATTNMAP_BENCH_STATIC_PNG`` (the bench writes
attnmap's own plain output there, so the response size is the same); without it a 512 px
noise PNG of similar size is generated.
"""

from __future__ import annotations

import io
import os

import numpy as np
from flask import Flask, Response, request
from PIL import Image


def _load_png() -> bytes:
    path = os.environ.get("ATTNMAP_BENCH_STATIC_PNG")
    if path:
        with open(path, "rb") as handle:
            return handle.read()
    rng = np.random.default_rng(0)
    cells = rng.integers(0, 255, (64, 64), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(np.kron(cells, np.ones((8, 8), np.uint8))).save(buffer, format="PNG")
    return buffer.getvalue()


PNG = _load_png()
app = Flask(__name__)


@app.route("/visualize", methods=["GET", "POST"])
def visualize() -> Response:
    """Read the body (so the request costs the same to receive) and return the fixed PNG."""
    request.get_data(cache=False)
    return Response(PNG, mimetype="image/png")


@app.route("/healthz")
def healthz() -> str:
    """Readiness probe for the bench."""
    return "ok"
