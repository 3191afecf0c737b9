"""Fault tests: a hung worker is replaced, an accelerator OOM is a 503 the worker survives, and a
corrupted model file stops the service before it reports ready."""

from __future__ import annotations

import contextlib
import os
import signal

import numpy as np
import pytest
import requests
import torch

from tests.live import gunicorn_server
from tests.serving_support import run_until_halt, wait_for_workers, wait_until_heartbeating, worker_pids
from tests.vision_support import build_tiny, load_adapter, png_bytes, post_image, random_image

BODY = {"weights": np.random.default_rng(0).random((8, 8)).tolist(), "size": 64}


@pytest.mark.live
def test_a_hung_worker_is_replaced_after_the_timeout():
    # SIGSTOP freezes the worker for real (no debug hook in the app): its heartbeat stops, and the
    # master must kill it after `timeout` seconds and boot a replacement.
    env = {"ATTNMAP_BUILTIN_MODELS": "none", "ATTNMAP_TIMEOUT": "4"}
    with gunicorn_server(env, workers=2) as (base, process):
        before = wait_for_workers(process.pid, 2)
        hung = before[0]
        wait_until_heartbeating(hung)  # frozen before its first heartbeat, Gunicorn would never time it out
        os.kill(hung, signal.SIGSTOP)
        try:
            replaced = wait_for_workers(process.pid, 2, timeout=90, exclude={hung})
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(hung, signal.SIGCONT)
        assert hung not in replaced
        # Both workers serve again.
        statuses = {requests.post(f"{base}/visualize", json=BODY, timeout=30).status_code for _ in range(20)}
        assert statuses == {200}


def test_out_of_memory_in_the_forward_pass_is_a_503_and_the_worker_keeps_serving(make_app, tmp_path, monkeypatch):
    adapter = load_adapter(build_tiny(tmp_path, "vit"), "tiny-vit")
    client = make_app(adapter).test_client()
    image = png_bytes(random_image(40, 40))
    real_capture = adapter.capture
    calls = {"n": 0}

    def capture_with_oom(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return real_capture(*args, **kwargs)

    # Injected at the adapter boundary: what torch raises on CUDA, simulated on the CPU.
    monkeypatch.setattr(adapter, "capture", capture_with_oom)
    response = post_image(client, image, model="tiny-vit")
    assert response.status_code == 503
    assert response.headers["Retry-After"]
    body = response.get_json()
    assert body["error"]["code"] == "gpu_out_of_memory"
    assert "20.00 GiB" not in response.get_data(as_text=True)
    for _ in range(5):
        assert post_image(client, image, model="tiny-vit").status_code == 200


@pytest.mark.live
@pytest.mark.parametrize("damage", ["truncated", "corrupted"])
def test_a_damaged_model_file_stops_the_service_before_ready(tmp_path, damage):
    model_dir = build_tiny(tmp_path, "vit")
    weights = model_dir / "model.safetensors"
    data = weights.read_bytes()
    if damage == "truncated":
        weights.write_bytes(data[: len(data) // 2])
    else:
        weights.write_bytes(b"\x00" * 8 + data[8:])  # header length destroyed
    config = tmp_path / "models.toml"
    config.write_text(f'[models.damaged-vit]\npath = "{model_dir}"\n')
    log_path = tmp_path / "gunicorn.log"
    halted = run_until_halt({"ATTNMAP_BUILTIN_MODELS": "none", "ATTNMAP_CONFIG": str(config), "ATTNMAP_WORKERS": "1"},
                            log_path)
    assert halted.returncode != 0
    assert 200 not in halted.readyz
    log_text = log_path.read_text()
    assert "damaged-vit" in log_text
    assert "Traceback" not in log_text.split("damaged-vit", 1)[0][-200:]


@pytest.mark.live
def test_worker_pids_are_stable_under_mixed_bad_input():
    with gunicorn_server({"ATTNMAP_BUILTIN_MODELS": "none"}, workers=2) as (base, process):
        before = set(worker_pids(process.pid))
        bad = [b"{", b"[" * 10000, b'{"weights": [[NaN]]}', b'{"weights": [[1e400]]}', b"\xff" * 100]
        for _ in range(20):
            for body in bad:
                response = requests.post(f"{base}/visualize", data=body, headers={"Content-Type": "application/json"}, timeout=10)
                assert 400 <= response.status_code < 500
        assert set(worker_pids(process.pid)) == before
