"""The CPU image, built from the repository's Dockerfile and run with podman, alone and behind nginx.

The images are built once per run (``scripts/build-image.sh all``, what ``make image`` calls;
podman keeps the base image and the layers, and pip's downloads in a build cache, so later runs
reuse them). The app container runs with docker-compose.yml's isolation settings (read-only root,
tmpfs /tmp, no capabilities, no-new-privileges) on a free loopback port, which also shows that
the image honours ATTNMAP_BIND. Skipped without podman; under CI=true a missing podman fails.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import uuid
from pathlib import Path

import psutil
import pytest
import requests

from tests.container_support import (
    IMAGE,
    NGINX_IMAGE,
    Container,
    build_images,
    compose_run_flags,
    compose_service,
    grace_seconds,
    podman,
    run_container,
    wait_for_status,
)
from tests.helpers import decode_png, require_binary
from tests.live import ROOT, free_port
from tests.serving_support import render_nginx_conf

pytestmark = [pytest.mark.live, pytest.mark.slow]

EXAMPLE_IMAGE = ROOT / "models" / "builtin" / "examples" / "square_scene_320x240.png"
TEXT_BODY = {"text": "He never smoked.", "model": "minilm", "layer": 1, "annotate": True}
OVERSIZE = 17 * 1024 * 1024
# Writable at run time (README, Running it in containers): the compose file's tmpfs /tmp and /dev/shm.
WRITABLE = ("/tmp", "/dev/shm")


@pytest.fixture(scope="session")
def images(tmp_path_factory) -> dict[str, str]:
    """Build (or reuse) attnmap:cpu and the nginx image once per test run."""
    require_binary("podman")
    require_binary("runc")
    log = tmp_path_factory.mktemp("image-build") / "build.log"
    build_images(log)
    return {"app": IMAGE, "nginx": NGINX_IMAGE}


def app_env(port: int, **extra: str) -> dict[str, str]:
    """The compose file's app environment, on a free loopback port, hub access off."""
    env = {key: str(value) for key, value in compose_service("app")["environment"].items()}
    env.update({"ATTNMAP_BIND": f"127.0.0.1:{port}", "ATTNMAP_DEVICE": "cpu", "HF_HUB_OFFLINE": "1",
                "TRANSFORMERS_OFFLINE": "1"})
    env.update(extra)
    return env


class App:
    """The module's app container and its address."""

    def __init__(self, container: Container, port: int, cold_start_s: float) -> None:
        self.container = container
        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        self.cold_start_s = cold_start_s


@pytest.fixture(scope="module")
def app_container(images, tmp_path_factory) -> App:
    workdir = tmp_path_factory.mktemp("app-container")
    port = free_port()
    flags = compose_run_flags(compose_service("app"))
    with run_container(images["app"], workdir / "app.log", flags, env=app_env(port)) as container:
        cold_start = wait_for_status(f"http://127.0.0.1:{port}/readyz", container)
        yield App(container, port, cold_start)


def test_image_and_text_give_pngs_from_baked_in_models(app_container, tmp_path):
    with EXAMPLE_IMAGE.open("rb") as handle:
        overlay = requests.post(f"{app_container.base}/visualize", files={"image": handle},
                                data={"model": "shapes-vit", "method": "rollout"}, timeout=60)
    assert overlay.status_code == 200, overlay.text[:300]
    assert overlay.headers["Content-Type"] == "image/png"
    assert decode_png(overlay.content).shape == (240, 320, 3)
    text = requests.post(f"{app_container.base}/visualize", json=TEXT_BODY, timeout=60)
    assert text.status_code == 200, text.text[:300]
    assert text.headers["Content-Type"] == "image/png"
    assert min(decode_png(text.content).shape[:2]) >= 128
    (tmp_path / "container-overlay.png").write_bytes(overlay.content)
    (tmp_path / "container-text.png").write_bytes(text.content)
    models = requests.get(f"{app_container.base}/models", timeout=10).json()
    assert {"shapes-vit", "shapes-vit-shortcut", "minilm"} <= {entry["name"] for entry in models["models"]}


def test_models_load_with_no_network_at_all(images, tmp_path):
    """No network namespace but loopback: the models are in the image, nothing is fetched."""
    flags = compose_run_flags(compose_service("app"))
    env = app_env(8000, ATTNMAP_WORKERS="1", ATTNMAP_BIND="127.0.0.1:8000")
    with run_container(images["app"], tmp_path / "offline.log", flags, env=env, network="none") as container:
        probe = ("import json, sys, time, urllib.request\n"
                 "deadline = time.monotonic() + 300\n"
                 "while True:\n"
                 "    try:\n"
                 "        urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=2); break\n"
                 "    except OSError:\n"
                 "        if time.monotonic() > deadline: sys.exit('never ready')\n"
                 "        time.sleep(0.5)\n"
                 "body = json.dumps({'text': 'He never smoked.', 'model': 'minilm', 'layer': 1}).encode()\n"
                 "request = urllib.request.Request('http://127.0.0.1:8000/visualize', body, {'Content-Type': 'application/json'})\n"
                 "with urllib.request.urlopen(request, timeout=60) as response:\n"
                 "    data = response.read()\n"
                 "print(response.status, response.headers['Content-Type'], data[:8].hex())\n")
        result = container.exec("python", "-c", probe, timeout=330)
        assert result.returncode == 0, result.stderr[-2000:] + container.logs()[-2000:]
        assert result.stdout.split() == ["200", "image/png", "89504e470d0a1a0a"]
        assert [line for line in container.inspect()["NetworkSettings"].get("Networks", {}) or {}] == []


def test_runs_as_a_fixed_non_root_user(app_container):
    assert podman("image", "inspect", "--format", "{{.Config.User}}", IMAGE).stdout.strip() == "10001"
    assert app_container.container.exec("id", "-u").stdout.strip() == "10001"
    users = podman("top", app_container.container.name, "user", "huser", "args").stdout.splitlines()[1:]
    assert len(users) >= 3, users  # the Gunicorn master and two workers
    for line in users:
        user, host_user, *_ = line.split()
        assert user == "attnmap" and host_user == "10001", line
    worker_uids = {process.uids().real for process in psutil.Process(app_container.container.pid).children()}
    assert worker_uids == {10001}


def test_root_filesystem_is_read_only_apart_from_tmp_and_shm(app_container):
    assert app_container.container.inspect()["HostConfig"]["ReadonlyRootfs"] is True
    for path in ("/srv/attnmap", "/srv/attnmap/models/builtin", "/opt/venv", "/etc", "/var/tmp", "/nonexistent"):
        result = app_container.container.exec("sh", "-c", f"touch {path}/probe")
        assert result.returncode != 0 and ("Read-only file system" in result.stderr or "No such file" in result.stderr), path
    for path in WRITABLE:
        assert app_container.container.exec("sh", "-c", f"touch {path}/probe && rm {path}/probe").returncode == 0, path
    # What the service keeps there: the Prometheus multiprocess files (and /metrics sums them).
    listing = app_container.container.exec("sh", "-c", "ls -d /tmp/attnmap-metrics-*/").stdout.split()
    assert len(listing) == 1, listing
    metrics = requests.get(f"{app_container.base}/metrics", timeout=10)
    assert metrics.status_code == 200 and "attnmap_model_load_seconds" in metrics.text


def test_healthcheck_passes_on_the_bind_address(app_container):
    config = podman("image", "inspect", "--format", "{{json .Config.Healthcheck}}", IMAGE).stdout
    assert "healthcheck.py" in config  # kept: the image was built in docker format
    # The container binds a free port, not the image's 0.0.0.0:8000: the check follows ATTNMAP_BIND.
    result = podman("healthcheck", "run", app_container.container.name, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    state = app_container.container.inspect()["State"]
    health = state.get("Health") or state.get("Healthcheck") or {}
    assert health.get("Status") == "healthy", health


def test_image_has_the_cpu_torch_and_no_build_tools(app_container):
    probe = ("import importlib.util as u, torch\n"
             "print(torch.__version__, torch.cuda.is_available())\n"
             "print(*[name for name in ('pip', 'sentence_transformers', 'scipy', 'sklearn', 'cloudpickle') if u.find_spec(name)])\n")
    result = app_container.container.exec("python", "-c", probe)
    assert result.returncode == 0, result.stderr
    versions, unwanted = [*result.stdout.splitlines(), ""][:2]
    assert versions == "2.13.0+cpu False"
    assert unwanted == ""
    for tool in ("make", "gcc", "cc", "pip", "pip3", "apt-get"):
        found = app_container.container.exec("sh", "-c", f"command -v {tool}").stdout.strip()
        assert found in ("", "/usr/bin/apt-get"), (tool, found)  # apt stays (the base image's), but no lists
    assert app_container.container.exec("sh", "-c", "ls /var/lib/apt/lists/ | grep -v -e lock -e partial").stdout == ""
    size = int(podman("image", "inspect", "--format", "{{.Size}}", IMAGE).stdout)
    # About 1.45 GB without the built-in LLM; smollm2's float32 weights add about 0.55 GB.
    assert size < 2_400_000_000, f"image grew to {size / 1e9:.2f} GB (README: about 2 GB)"


# --- behind nginx, as in docker-compose.yml -----------------------------------------------------------


@pytest.fixture(scope="module")
def edge(app_container, images, tmp_path_factory) -> str:
    """The nginx image in front of the app container, with deploy/nginx.conf mounted read-only."""
    workdir = tmp_path_factory.mktemp("nginx-container")
    port = free_port()
    # Host networking: the one change is the addresses (upstream app:8000 and listen 8080 become
    # loopback ports, as in the other live tests); pid and temp files stay under the tmpfs /tmp.
    conf = workdir / "nginx.conf"
    conf.write_text(render_nginx_conf(f"127.0.0.1:{app_container.port}", f"127.0.0.1:{port}", Path("/tmp")), encoding="utf-8")
    conf.chmod(0o644)
    service = compose_service("nginx")
    mounts = [volume.replace("./deploy/nginx.conf", str(conf)) for volume in service["volumes"]]
    assert mounts == [f"{conf}:/etc/nginx/nginx.conf:ro"]
    flags = [*compose_run_flags(service), "--volume", mounts[0]]
    with run_container(images["nginx"], workdir / "nginx.log", flags) as container:
        base = f"http://127.0.0.1:{port}"
        wait_for_status(f"{base}/healthz", container, timeout=30)
        yield base


def test_png_through_nginx(edge, app_container):
    request_id = f"edge-{uuid.uuid4().hex}"
    response = requests.post(f"{edge}/visualize", json=TEXT_BODY, headers={"X-Request-ID": request_id}, timeout=60)
    assert response.status_code == 200, response.text[:300]
    assert response.headers["Content-Type"] == "image/png" and response.headers["Server"] == "nginx"
    assert decode_png(response.content).ndim == 3
    assert response.headers["X-Request-ID"] == request_id
    assert request_id in app_container.container.logs()  # it went through to the app container
    hidden = requests.get(f"{edge}/metrics", timeout=10)
    assert hidden.status_code == 404 and hidden.json()["error"]["code"] == "not_found"


def send_body(port: int, head: bytes, body: bytes, timeout: float = 30) -> tuple[int, dict[str, str], bytes]:
    """Send a request whose body may be refused half-way; read whatever response comes back."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head)
        view = memoryview(body)
        try:
            for offset in range(0, len(body), 1 << 20):
                sock.sendall(view[offset:offset + (1 << 20)])
        except (BrokenPipeError, ConnectionResetError):
            pass  # nginx may stop reading once it has answered
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_WR)
        data = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                data += chunk
    head_part, _, payload = data.partition(b"\r\n\r\n")
    lines = head_part.decode("latin-1").split("\r\n")
    headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, payload


def test_17_mb_body_gets_the_json_413_from_nginx(edge, app_container):
    port = int(edge.rsplit(":", 1)[1])
    request_id = f"big-{uuid.uuid4().hex}"
    head = (f"POST /visualize HTTP/1.1\r\nHost: attnmap\r\nContent-Type: application/json\r\n"
            f"Content-Length: {OVERSIZE}\r\nX-Request-ID: {request_id}\r\nConnection: close\r\n\r\n").encode()
    status, headers, body = send_body(port, head, b" " * OVERSIZE)
    assert status == 413
    assert headers["content-type"] == "application/json"
    assert headers["x-request-id"] == request_id
    assert b'"code":"payload_too_large"' in body and request_id.encode() in body
    time.sleep(0.5)
    assert request_id not in app_container.container.logs()  # refused at the edge, never reached a worker


# --- graceful stop ----------------------------------------------------------------------------------


def slow_body() -> dict:
    """Real work that takes seconds on a CPU: a 128-token annotated map rendered at 4096 px."""
    import numpy as np

    weights = np.random.default_rng(3).random((128, 128))
    weights /= weights.sum(axis=1, keepdims=True)
    return {"weights": weights.tolist(), "size": 4096, "annotate": True, "tokens": [f"tok{i}" for i in range(128)]}


def test_sigterm_lets_in_flight_requests_finish_within_the_grace_period(images, tmp_path):
    service = compose_service("app")
    grace = grace_seconds(service)
    port = free_port()
    env = app_env(port, ATTNMAP_BUILTIN_MODELS="none")
    with run_container(images["app"], tmp_path / "stop.log", compose_run_flags(service), env=env) as container:
        wait_for_status(f"http://127.0.0.1:{port}/readyz", container)
        workers = psutil.Process(container.pid).children()
        assert len(workers) == 2
        busy_before = {worker.pid: sum(worker.cpu_times()[:2]) for worker in workers}
        body = slow_body()
        results: list[tuple[int | str, float]] = []

        def call() -> None:
            try:
                response = requests.post(f"http://127.0.0.1:{port}/visualize", json=body, timeout=60)
                results.append((response.status_code, time.monotonic()))
            except requests.RequestException as exc:
                results.append((type(exc).__name__, time.monotonic()))

        threads = [threading.Thread(target=call, daemon=True) for _ in range(2)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if all(sum(worker.cpu_times()[:2]) - busy_before[worker.pid] > 0.3 for worker in workers):
                break
            time.sleep(0.05)
        else:
            pytest.fail("the requests never reached both workers")
        term_at = time.monotonic()
        # podman stop sends the image's STOPSIGNAL (SIGTERM) and kills only after the grace period.
        podman("stop", "--time", str(grace), container.name, timeout=grace + 30)
        stopped_after = time.monotonic() - term_at
        for thread in threads:
            thread.join(60)
        state = container.inspect()["State"]
        log = container.logs()
    assert [status for status, _ in results] == [200, 200], results
    assert all(finished > term_at for _, finished in results), "requests finished before SIGTERM: too fast to test"
    assert state["ExitCode"] == 0, state  # 137 would mean podman had to kill it
    assert stopped_after < grace
    assert "Handling signal: term" in log and "Shutting down: Master" in log
