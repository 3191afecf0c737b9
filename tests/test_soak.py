"""Soak: thousands of mixed valid and invalid requests against Gunicorn.

Worker memory stays flat (under 20 MB growth per worker after warm-up), no worker restarts,
the annotated-figure cache stays bounded and no forward hook is left on any model.
"""

from __future__ import annotations

import base64
import io
import itertools
import re
from pathlib import Path

import numpy as np
import psutil
import pytest
import requests
from PIL import Image

from tests.live import gunicorn_server
from tests.serving_support import worker_pids
from tests.vision_support import build_tiny

pytestmark = [pytest.mark.live, pytest.mark.slow]

BUILTIN = Path(__file__).resolve().parent.parent / "models" / "builtin" / "shapes-vit"
WARMUP, SOAK = 400, 2400
RSS_BUDGET_MB = 20.0


def _image_b64(seed: int) -> str:
    pixels = np.random.default_rng(seed).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def _requests(vision_model: str):
    rng = np.random.default_rng(0)
    matrix = rng.random((32, 32))
    matrix /= matrix.sum(-1, keepdims=True)
    stack = rng.random((2, 4, 12, 12)).tolist()
    tokens = [f"t{i}" for i in range(32)]
    images = [_image_b64(seed) for seed in range(4)]
    mix = [
        ("json", {"weights": matrix.tolist(), "size": 256}, 200),
        ("json", {"weights": matrix.tolist(), "annotate": True, "tokens": tokens, "size": 256}, 200),
        ("json", {"weights": stack, "method": "rollout", "format": "json"}, 200),
        ("json", {"weights": stack, "view": "grid", "layer": 0}, 200),
        ("json", {"weights": matrix.tolist(), "annotate": True, "tokens": [f"w{i}$" for i in range(32)], "size": 300}, 200),
        ("json", {"text": "He never smoked.", "model": "minilm", "layer": 1}, 200),
        ("json", {"text": "The cat sat on the mat.", "model": "minilm", "method": "rollout", "format": "json"}, 200),
        ("json", {"image": images[0], "model": vision_model}, 200),
        ("json", {"image": images[1], "model": vision_model, "method": "rollout", "format": "json"}, 200),
        ("json", {"image": images[2], "model": vision_model, "method": "gradient"}, 200),
        ("raw", b'{"weights": [[NaN]]}', 422),
        ("raw", b"{bad", 400),
        ("json", {"weights": [[1, 2], [3]]}, 422),
        ("json", {"text": "x" * 20000, "model": "minilm"}, 422),
        ("json", {"image": base64.b64encode(b"<svg/>").decode(), "model": vision_model}, 415),
        ("json", {"weights": matrix.tolist(), "layer": 5}, 422),
        ("json", {"image": images[3], "model": vision_model, "layer": 99}, 422),
        ("json", {"text": "\u202e evil", "model": "minilm"}, 422),
    ]
    return itertools.cycle(mix)


def _send(session: requests.Session, base: str, kind: str, body, expected: int) -> None:
    if kind == "raw":
        response = session.post(f"{base}/visualize", data=body, headers={"Content-Type": "application/json"}, timeout=60)
    else:
        response = session.post(f"{base}/visualize", json=body, timeout=60)
    assert response.status_code == expected, (body if kind == "raw" else {k: str(v)[:40] for k, v in body.items()}, response.text[:200])


def _rss_mb(pids: list[int]) -> dict[int, float]:
    return {pid: psutil.Process(pid).memory_info().rss / 2**20 for pid in pids}


def _gauge(metrics: str, name: str) -> list[float]:
    return [float(value) for value in re.findall(rf"^{name}(?:{{[^}}]*}})? ([0-9.e+-]+)$", metrics, re.M)]


def test_soak_memory_flat_no_restarts_no_leaks(tmp_path):
    env = {"ATTNMAP_BUILTIN_MODELS": "minilm"}
    if BUILTIN.is_dir():
        env["ATTNMAP_BUILTIN_MODELS"] = "minilm,shapes-vit"
        vision = "shapes-vit"
    else:  # before the built-in weights exist: a tiny random ViT through the models config
        config = tmp_path / "models.toml"
        config.write_text(f'[models.soak-vit]\npath = "{build_tiny(tmp_path, "vit")}"\n')
        env["ATTNMAP_CONFIG"] = str(config)
        vision = "soak-vit"
    with gunicorn_server(env, workers=2) as (base, process):
        session = requests.Session()
        mix = _requests(vision)
        for _ in range(WARMUP):
            _send(session, base, *next(mix))
        pids = worker_pids(process.pid)
        before = _rss_mb(pids)
        for _ in range(SOAK):
            _send(session, base, *next(mix))
        after = _rss_mb(pids)
        assert worker_pids(process.pid) == pids, "a worker restarted during the soak"
        growth = {pid: after[pid] - before[pid] for pid in pids}
        print(f"RSS before {before} after {after} growth {growth}")
        assert max(growth.values()) < RSS_BUDGET_MB, growth
        metrics = session.get(f"{base}/metrics", timeout=10).text
        assert max(_gauge(metrics, "attnmap_figures_cached")) <= 8
        assert _gauge(metrics, "attnmap_model_forward_hooks") and max(_gauge(metrics, "attnmap_model_forward_hooks")) == 0
