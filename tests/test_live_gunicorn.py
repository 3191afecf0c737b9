"""attnmap under real Gunicorn with gunicorn.conf.py, on a loopback port."""

import numpy as np
import pytest
import requests

from tests.helpers import decode_png
from tests.live import gunicorn_server

pytestmark = pytest.mark.live


@pytest.fixture(scope="module")
def server():
    with gunicorn_server({"ATTNMAP_BUILTIN_MODELS": "none"}, workers=2) as (base, _process):
        yield base


def test_post_weights_to_gunicorn(server):
    weights = np.random.default_rng(0).random((8, 8)).tolist()
    response = requests.post(f"{server}/visualize", json={"weights": weights, "size": 256}, timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "image/png"
    assert int(response.headers["Content-Length"]) == len(response.content)
    assert decode_png(response.content).shape == (256, 256, 3)


def test_errors_are_json_under_gunicorn(server):
    response = requests.post(f"{server}/visualize", data=b"{bad", headers={"Content-Type": "application/json"}, timeout=10)
    assert response.status_code == 400 and response.json()["error"]["code"] == "malformed_json"
    response = requests.post(f"{server}/visualize", data=b"x" * (17 * 1024 * 1024),
                             headers={"Content-Type": "application/json"}, timeout=30)
    assert response.status_code == 413 and response.json()["error"]["code"] == "payload_too_large"
    assert requests.get(f"{server}/healthz", timeout=5).json() == {"status": "alive"}
    assert requests.get(f"{server}/readyz", timeout=5).json()["status"] == "ready"
