"""Overlay latency of the image path under Gunicorn, split by stage (issue 3's benchmark).

One command::

    python bench/vision_overlay.py [--model shapes-vit] [--requests 200] [--max-seconds 120]
    python bench/vision_overlay.py --model-dir /path/to/hf-vit   # any local HF vision model

starts ``gunicorn -c gunicorn.conf.py`` (one sync worker, ``ATTNMAP_BIND`` on a free loopback
port) serving only that model, then sends overlay requests one at a time, the way ``curl -F
image=@x.png -F model=...`` does (multipart), for two inputs:

* ``model-size``: a PNG at the model's own input size (from ``GET /models``), so the
  preprocessing resize is a no-op: what is left besides the forward pass is the service's cost;
* ``photo``: a 1024x768 photo-like JPEG (smooth light, texture, edges, sensor noise), so decode,
  blend and PNG encode work on 0.8 Mpx.

Each response's ``Server-Timing`` header gives decode (request parsing + image decode) /
forward (preprocessing + hooked forward pass) / reduce / render (normalise + blend) / encode
(PNG compression). The table shows p50 per stage, p50 of the server total and of the client
round trip, and the share of the server total that is not the forward pass (target for
``model-size``: <= 25 %). Warm-up requests are discarded; each case stops after ``--requests``
requests or ``--max-seconds``, whichever comes first. The server is always stopped.

Results: a Markdown table on stdout and ``bench/results/vision_overlay-<timestamp>.json``.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import http.client
import io
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
STAGES = ("decode", "forward", "reduce", "render", "encode")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def server(env: dict[str, str], log_path: Path) -> Iterator[int]:
    """Gunicorn with the repository's config and one worker; yields the port; always stopped."""
    port = free_port()
    environment = {**os.environ, **env, "ATTNMAP_BIND": f"127.0.0.1:{port}", "ATTNMAP_WORKERS": "1"}
    gunicorn = str(Path(sys.executable).with_name("gunicorn"))
    with open(log_path, "wb") as log:
        process = subprocess.Popen([gunicorn, "-c", "gunicorn.conf.py"], cwd=ROOT, env=environment,
                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            _wait_ready(port, process, timeout=180.0)
            yield port
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait(5)


def _wait_ready(port: int, process: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"gunicorn exited with {process.returncode}; see the log")
        with contextlib.suppress(OSError):
            status, _, _ = request(port, "GET", "/readyz")
            if status == 200:
                return
        time.sleep(0.25)
    raise TimeoutError("server not ready in time")


def request(port: int, method: str, path: str, body: bytes | None = None,
            headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def multipart(fields: dict[str, str], image: bytes, filename: str) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
             for name, value in fields.items()]
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{filename}"\r\n'
                 f"Content-Type: application/octet-stream\r\n\r\n".encode() + image + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def server_timing(header: str) -> dict[str, float]:
    stages = {}
    for item in header.split(","):
        name, _, duration = item.strip().partition(";dur=")
        if duration:
            stages[name] = float(duration)
    return stages


# -- inputs ------------------------------------------------------------------------------------------


def shapes_image(width: int, height: int) -> np.ndarray:
    """A generated shapes picture (the built-in models' task) at the given size, else smooth noise."""
    try:
        from training.shapes import make_sample

        return make_sample(np.random.default_rng(7), size=(width, height)).image
    except ImportError:
        rng = np.random.default_rng(7)
        return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


def photo_like(width: int = 1024, height: int = 768) -> np.ndarray:
    """Deterministic stand-in for a camera photo: soft light, large objects, texture, sensor noise."""
    rng = np.random.default_rng(2024)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    light = 60 + 120 * (0.5 + 0.5 * np.cos(xx / width * 2.1 + yy / height * 1.3))
    image = np.stack([light * 1.05, light * 0.95, light * 0.8], axis=-1)
    for _ in range(12):  # soft-edged blobs: objects out of focus and in focus
        cx, cy, r = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(40, 220)
        mask = np.clip((r - np.hypot(xx - cx, yy - cy)) / rng.uniform(2, 40), 0, 1)[..., None]
        image = image * (1 - mask) + rng.uniform(0, 255, 3) * mask
    texture = np.asarray(Image.fromarray(rng.integers(0, 256, (height // 4, width // 4), dtype=np.uint8))
                         .resize((width, height), Image.Resampling.BICUBIC), dtype=np.float32)
    image += (texture[..., None] - 128) * 0.15 + rng.normal(0, 4, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def encode(pixels: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buffer.getvalue()


# -- running a case ----------------------------------------------------------------------------------


def run_case(port: int, model: str, image: bytes, filename: str, fields: dict[str, str], count: int, warmup: int,
             max_seconds: float, transport: str = "multipart") -> dict[str, Any]:
    if transport == "json":
        body = json.dumps({"model": model, "image": base64.b64encode(image).decode("ascii"), **fields}).encode()
        headers = {"Content-Type": "application/json"}
    else:
        body, content_type = multipart({"model": model, **fields}, image, filename)
        headers = {"Content-Type": content_type}
    samples: list[dict[str, float]] = []
    deadline = time.monotonic() + max_seconds
    for index in range(warmup + count):
        if time.monotonic() > deadline:
            break
        started = time.perf_counter()
        status, response_headers, payload = request(port, "POST", "/visualize", body, headers)
        client_ms = (time.perf_counter() - started) * 1000
        if status != 200:
            raise RuntimeError(f"status {status}: {payload[:300]!r}")
        if index >= warmup:
            stages = server_timing(response_headers.get("server-timing", ""))
            stages["server_total"] = sum(stages.get(s, 0.0) for s in STAGES)
            stages["client"] = client_ms
            stages["png_bytes"] = float(len(payload))
            samples.append(stages)
    if not samples:
        raise RuntimeError("no measured requests within --max-seconds")
    p50 = {key: statistics.median(s.get(key, 0.0) for s in samples) for key in (*STAGES, "server_total", "client", "png_bytes")}
    not_forward = statistics.median((s["server_total"] - s.get("forward", 0.0)) / s["server_total"] for s in samples)
    return {"requests": len(samples), "p50_ms": p50, "non_forward_share_p50": not_forward,
            "p90_client_ms": float(np.percentile([s["client"] for s in samples], 90))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="shapes-vit", help="a built-in model name")
    parser.add_argument("--model-dir", type=Path, help="serve this local Hugging Face directory instead")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--max-seconds", type=float, default=120.0, help="per case")
    parser.add_argument("--method", default="attention", choices=("attention", "rollout", "gradient"))
    parser.add_argument("--transport", default="multipart", choices=("multipart", "json"),
                        help="multipart file part (as curl -F) or base64 in a JSON body")
    parser.add_argument("--torch-threads", type=int, default=1,
                        help="OMP/MKL threads of the worker (0: torch's default, one per core)")
    args = parser.parse_args()

    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    with tempfile.TemporaryDirectory() as scratch:
        env = {"ATTNMAP_BUILTIN_MODELS": args.model, "ATTNMAP_MAX_REQUESTS": "0", "ATTNMAP_LOG_LEVEL": "warning"}
        if args.torch_threads > 0:
            # On a small shared CPU, torch's default (a thread per core, spin-waiting) stalls for
            # tens of ms whenever another process holds a core; one thread per sync worker is steadier.
            env.update(ATTNMAP_TORCH_THREADS=str(args.torch_threads),
                       OMP_NUM_THREADS=str(args.torch_threads), MKL_NUM_THREADS=str(args.torch_threads))
        model = args.model
        if args.model_dir is not None:
            model = "bench-model"
            config = Path(scratch) / "models.toml"
            config.write_text(f'[models.{model}]\npath = "{args.model_dir.resolve()}"\n')
            env.update(ATTNMAP_BUILTIN_MODELS="none", ATTNMAP_CONFIG=str(config))
        log_path = RESULTS / f"vision_overlay-{stamp}.log"
        with server(env, log_path) as port:
            _, _, listing = request(port, "GET", "/models")
            info = next(m for m in json.loads(listing)["models"] if m["name"] == model)
            height, width = info["input_size"] or (224, 224)
            cases = {
                f"model-size {width}x{height} PNG": (encode(shapes_image(width, height), "PNG"), "input.png"),
                "photo 1024x768 JPEG": (encode(photo_like(), "JPEG"), "photo.jpg"),
            }
            fields = {"method": args.method, "view": "overlay"}
            results = {name: run_case(port, model, data, filename, fields, args.requests, args.warmup,
                                      args.max_seconds, args.transport) for name, (data, filename) in cases.items()}
    report = {"model": info, "method": args.method, "transport": args.transport, "workers": 1,
              "torch_threads": args.torch_threads or "default",
              "python": platform.python_version(),
              "machine": platform.machine(), "cpus": os.cpu_count(), "cases": results, "time": stamp}
    out = RESULTS / f"vision_overlay-{stamp}.json"
    out.write_text(json.dumps(report, indent=2))
    print(f"\nOverlay latency, {model} ({info['family']}, {info['layers']} layers, input {width}x{height}), "
          f"method={args.method}, {args.transport}, 1 sync worker, torch threads {args.torch_threads or 'default'}, p50 in ms\n")
    print("| case | n | " + " | ".join(STAGES) + " | server total | client | non-forward share | PNG KB |")
    print("|---|---|" + "---|" * (len(STAGES) + 4))
    for name, result in results.items():
        p50 = result["p50_ms"]
        cells = " | ".join(f"{p50[s]:.2f}" for s in STAGES)
        print(f"| {name} | {result['requests']} | {cells} | {p50['server_total']:.2f} | {p50['client']:.2f} | "
              f"{100 * result['non_forward_share_p50']:.1f} % | {p50['png_bytes'] / 1024:.0f} |")
    print(f"\nwritten: {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
