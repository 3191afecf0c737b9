"""Load run with a realistic request mix through nginx in front of Gunicorn (issue 5).

One command::

    python bench/load_mix.py [--duration 60] [--workers 2] [--connections 4] [--warmup 10]

starts Gunicorn (``gunicorn.conf.py``, ``--workers`` sync workers, every built-in model whose files
exist, worker recycling off so that a leak cannot hide) and nginx (``deploy/nginx.conf`` rendered for
loopback), then drives nginx with ``--connections`` closed-loop clients for ``--duration`` seconds.

The mix (weights from design/research s.3.1, renormalised over the classes that can run):

* ``raw_heatmap`` 40%: a 197x197 attention matrix as JSON, 512 px heatmap;
* ``raw_grid`` 20%: 12 heads x 197x197 float32 ``.npy`` upload, 4x3 grid;
* ``overlay`` 25%: a 224x224 PNG through the built-in vision model ``shapes-vit``, overlay;
* ``text`` 10%: a 40-word sentence through the built-in text model ``minilm``, heatmap;
* ``rejected`` 5%: malformed JSON, NaN, unknown model, and an oversize body refused by nginx.

A class whose model is not listed by ``GET /models`` is skipped and reported as skipped.

Reported: req/s, p50/p99 latency and status counts per class, the number of 5xx (must be 0), and
the RSS of every worker after warm-up and after the run (growth budget: 50 MB per worker). On a
machine with ``nvidia-smi``, each worker's GPU memory too. Results go to
``bench/results/load_mix-<timestamp>.json``. Servers are always stopped; every loop is bounded.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import io
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import requests
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.live import gunicorn_server  # noqa: E402  (needs ROOT on sys.path)
from tests.serving_support import nginx_server, worker_pids  # noqa: E402

RESULTS = ROOT / "bench" / "results"
MIX = {"raw_heatmap": 0.40, "raw_grid": 0.20, "overlay": 0.25, "text": 0.10, "rejected": 0.05}
NEEDS_MODEL = {"overlay": "shapes-vit", "text": "minilm"}
RSS_BUDGET_MB = 50.0


@dataclass(frozen=True)
class Case:
    """One prepared request: the class it belongs to and the statuses that count as correct."""

    klass: str
    name: str
    body: bytes | None
    content_type: str
    expect: tuple[int, ...]
    declared_length: int | None = None  # send only headers claiming this length (nginx refuses early)


def softmax_rows(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    logits = rng.normal(size=shape).astype(np.float32) * 3
    weights = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return weights / weights.sum(axis=-1, keepdims=True)


def multipart(fields: dict[str, str], files: dict[str, tuple[str, bytes, str]]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = []
    for name, value in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    for name, (filename, data, ctype) in files.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                     f"Content-Type: {ctype}\r\n\r\n".encode() + data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def shape_png(seed: int) -> bytes:
    """A 224x224 image with one filled shape, like the built-in vision model's training data."""
    rng = random.Random(seed)
    image = Image.new("RGB", (224, 224), tuple(rng.randrange(40, 90) for _ in range(3)))
    draw = ImageDraw.Draw(image)
    x, y, r = rng.randrange(50, 170), rng.randrange(50, 170), rng.randrange(20, 45)
    fill = tuple(rng.randrange(150, 255) for _ in range(3))
    if seed % 2:
        draw.ellipse((x - r, y - r, x + r, y + r), fill=fill)
    else:
        draw.rectangle((x - r, y - r, x + r, y + r), fill=fill)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def build_cases(seed: int = 0) -> dict[str, list[Case]]:
    """Request bodies per class, encoded once (the client must not be the bottleneck)."""
    rng = np.random.default_rng(seed)
    as_json = "application/json"
    cases: dict[str, list[Case]] = {"raw_heatmap": [], "raw_grid": [], "overlay": [], "text": [], "rejected": []}
    for i in range(4):
        body = json.dumps({"weights": np.round(softmax_rows(rng, (197, 197)), 6).tolist(), "size": 512}).encode()
        cases["raw_heatmap"].append(Case("raw_heatmap", f"json197-{i}", body, as_json, (200,)))
        buffer = io.BytesIO()
        np.save(buffer, softmax_rows(rng, (12, 197, 197)))
        data, ctype = multipart({"view": "grid", "size": "768"}, {"weights": ("attn.npy", buffer.getvalue(), "application/octet-stream")})
        cases["raw_grid"].append(Case("raw_grid", f"npy12x197-{i}", data, ctype, (200,)))
        image = base64.b64encode(shape_png(seed * 10 + i)).decode()
        body = json.dumps({"model": "shapes-vit", "image": image, "view": "overlay", "size": 448}).encode()
        cases["overlay"].append(Case("overlay", f"shape-{i}", body, as_json, (200,)))
        words = " ".join(random.Random(i).choice(["the", "model", "reads", "a", "long", "sentence", "about", "attention",
                                                   "maps", "and", "heads", "while", "tokens", "look", "back"]) for _ in range(40))
        body = json.dumps({"model": "minilm", "text": words, "size": 512}).encode()
        cases["text"].append(Case("text", f"words-{i}", body, as_json, (200,)))
    cases["rejected"] = [
        Case("rejected", "malformed_json", b'{"weights": [[0.5, 0.5]', as_json, (400,)),
        Case("rejected", "nan", b'{"weights": [[NaN, 1.0], [0.5, 0.5]]}', as_json, (400, 422)),
        Case("rejected", "unknown_model", b'{"model": "no-such-model", "text": "hello"}', as_json, (404,)),
        Case("rejected", "oversize_at_nginx", None, as_json, (413,), declared_length=17 * 1024 * 1024),
    ]
    return cases


class Client:
    """One closed-loop connection to nginx (keep-alive; reconnects after errors and refusals)."""

    def __init__(self, port: int, cases: dict[str, list[Case]], weights: dict[str, float], seed: int) -> None:
        self.port = port
        self.cases = cases
        self.classes = list(weights)
        self.weights = [weights[name] for name in self.classes]
        self.rng = random.Random(seed)
        self.connection: http.client.HTTPConnection | None = None
        self.samples: list[tuple[str, str, int, float]] = []  # (class, case, status or 0, seconds)

    def _connection(self) -> http.client.HTTPConnection:
        if self.connection is None:
            self.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=70)
        return self.connection

    def _close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None

    def one(self) -> None:
        klass = self.rng.choices(self.classes, self.weights)[0]
        case = self.rng.choice(self.cases[klass])
        started = time.perf_counter()
        status = 0
        try:
            connection = self._connection()
            if case.declared_length is not None:
                connection.putrequest("POST", "/visualize")
                connection.putheader("Content-Type", case.content_type)
                connection.putheader("Content-Length", str(case.declared_length))
                connection.endheaders()
            else:
                connection.request("POST", "/visualize", body=case.body, headers={"Content-Type": case.content_type})
            response = connection.getresponse()
            response.read()
            status = response.status
            if case.declared_length is not None or response.getheader("Connection", "").lower() == "close":
                self._close()
        except (OSError, http.client.HTTPException):
            self._close()
        self.samples.append((klass, case.name, status, time.perf_counter() - started))

    def run(self, until: float) -> None:
        try:
            while time.monotonic() < until:
                self.one()
        finally:
            self._close()


def drive(port: int, cases: dict[str, list[Case]], weights: dict[str, float], connections: int,
          duration: float, seed: int) -> tuple[list[tuple[str, str, int, float]], float]:
    """Run ``connections`` clients for ``duration`` seconds; returns all samples and the wall time."""
    clients = [Client(port, cases, weights, seed + i) for i in range(connections)]
    started = time.monotonic()
    until = started + duration
    threads = [threading.Thread(target=client.run, args=(until,), daemon=True) for client in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(duration + 90)  # bounded: a request can take at most proxy_read_timeout
    wall = time.monotonic() - started
    return [sample for client in clients for sample in client.samples], wall


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


def summarise(samples: list[tuple[str, str, int, float]], wall: float, cases: dict[str, list[Case]]) -> dict[str, Any]:
    expected = {case.name: case.expect for group in cases.values() for case in group}
    per_class: dict[str, Any] = {}
    for klass in sorted({sample[0] for sample in samples}):
        rows = [sample for sample in samples if sample[0] == klass]
        latencies = [seconds * 1000 for _, _, _, seconds in rows]
        statuses: dict[str, int] = {}
        for _, _, status, _ in rows:
            statuses[str(status)] = statuses.get(str(status), 0) + 1
        per_class[klass] = {
            "requests": len(rows),
            "rps": round(len(rows) / wall, 2),
            "p50_ms": round(percentile(latencies, 50), 1),
            "p99_ms": round(percentile(latencies, 99), 1),
            "mean_ms": round(statistics.fmean(latencies), 1),
            "statuses": statuses,
            "unexpected": sum(1 for _, name, status, _ in rows if status not in expected[name]),
        }
    return {
        "requests": len(samples),
        "rps": round(len(samples) / wall, 2),
        "wall_s": round(wall, 1),
        "errors_5xx": sum(1 for sample in samples if sample[2] >= 500),
        "transport_errors": sum(1 for sample in samples if sample[2] == 0),
        "unexpected_status": sum(entry["unexpected"] for entry in per_class.values()),
        "classes": per_class,
    }


def worker_rss_mb(master_pid: int) -> dict[str, float]:
    rss = {}
    for pid in worker_pids(master_pid):
        try:
            rss[str(pid)] = round(psutil.Process(pid).memory_info().rss / 2**20, 1)
        except psutil.NoSuchProcess:
            continue
    return rss


def gpu_memory_mb(pids: Sequence[str]) -> dict[str, float] | None:
    """Per-process GPU memory from nvidia-smi, when there is one."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    output = subprocess.run([smi, "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                            capture_output=True, text=True, timeout=30).stdout
    usage = {}
    for line in output.splitlines():
        pid, _, used = line.partition(",")
        if pid.strip() in pids:
            usage[pid.strip()] = float(used.strip())
    return usage


def available_builtins() -> list[str]:
    """Built-in models whose files are present (the others would stop every worker from booting)."""
    import app  # noqa: F401  (models.registry imported first would be a circular import)
    from models.registry import BUILTINS

    names = []
    for name, spec in BUILTINS.items():
        try:
            if spec().path.is_dir():
                names.append(name)
        except Exception:  # e.g. the MiniLM package is not installed
            continue
    return names


def markdown(report: dict[str, Any]) -> str:
    run = report["run"]
    lines = [
        f"Load mix through nginx, {report['config']['workers']} workers, {report['config']['connections']} connections, "
        f"{run['wall_s']} s: **{run['rps']} req/s**, {run['requests']} requests, 5xx: {run['errors_5xx']}, "
        f"transport errors: {run['transport_errors']}, unexpected statuses: {run['unexpected_status']}",
        "",
        "| class | share | requests | req/s | p50 ms | p99 ms | statuses |",
        "|---|---|---|---|---|---|---|",
    ]
    for klass, entry in run["classes"].items():
        lines.append(f"| {klass} | {report['mix'][klass]:.0%} | {entry['requests']} | {entry['rps']} | {entry['p50_ms']} | "
                     f"{entry['p99_ms']} | {entry['statuses']} |")
    if report["skipped"]:
        lines.append("")
        lines.append("Skipped (model not served): " + ", ".join(f"{k} ({v})" for k, v in report["skipped"].items()))
    lines.append("")
    lines.append("| worker | RSS after warm-up MB | RSS after run MB | growth MB |")
    lines.append("|---|---|---|---|")
    for pid, before in report["rss_before_mb"].items():
        after = report["rss_after_mb"].get(pid)
        growth = f"{after - before:+.1f}" if after is not None else "(worker gone)"
        lines.append(f"| {pid} | {before} | {after} | {growth} |")
    if report.get("gpu_memory_mb") is not None:
        lines.append("")
        lines.append(f"GPU memory per worker (MB): {report['gpu_memory_mb']}")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of measured load (default 60)")
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds of load before the RSS baseline")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    nginx = shutil.which("nginx")
    if nginx is None:
        print("nginx is required (apt-get install -y nginx)", file=sys.stderr)
        return 2
    builtins = available_builtins()
    env = {"ATTNMAP_BUILTIN_MODELS": ",".join(builtins) or "none", "ATTNMAP_PROXY_HOPS": "1",
           "ATTNMAP_MAX_REQUESTS": "0", "ATTNMAP_LOG_LEVEL": "warning"}
    cases = build_cases(args.seed)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    with tempfile.TemporaryDirectory(prefix="attnmap-load-") as tmp:
        log_path = Path(tmp) / "gunicorn.log"
        with gunicorn_server(env, workers=args.workers, log_path=log_path) as (base, process), \
                nginx_server(nginx, base.split("//", 1)[1], Path(tmp) / "nginx") as edge:
            served = {model["name"] for model in requests.get(f"{base}/models", timeout=10).json()["models"]}
            skipped = {klass: f"model {model!r} not listed by GET /models" for klass, model in NEEDS_MODEL.items()
                       if model not in served}
            mix = {klass: share for klass, share in MIX.items() if klass not in skipped}
            total = sum(mix.values())
            mix = {klass: share / total for klass, share in mix.items()}
            for klass, reason in skipped.items():
                print(f"skipping {klass}: {reason}", file=sys.stderr)
            port = int(edge.rsplit(":", 1)[1])
            print(f"warm-up {args.warmup:.0f} s ...", file=sys.stderr)
            drive(port, cases, mix, args.connections, args.warmup, args.seed + 1000)
            rss_before = worker_rss_mb(process.pid)
            print(f"measuring {args.duration:.0f} s with {args.connections} connections ...", file=sys.stderr)
            samples, wall = drive(port, cases, mix, args.connections, args.duration, args.seed)
            rss_after = worker_rss_mb(process.pid)
            gpu = gpu_memory_mb(list(rss_after))
        log_tail = log_path.read_text(errors="replace")[-4000:]
    report = {
        "config": {"workers": args.workers, "connections": args.connections, "duration_s": args.duration,
                   "warmup_s": args.warmup, "builtin_models": builtins},
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "mix": mix,
        "skipped": skipped,
        "run": summarise(samples, wall, cases),
        "rss_before_mb": rss_before,
        "rss_after_mb": rss_after,
        "rss_growth_mb": {pid: round(rss_after[pid] - rss_before[pid], 1) for pid in rss_before if pid in rss_after},
        "gpu_memory_mb": gpu,
    }
    (RESULTS / f"load_mix-{stamp}.json").write_text(json.dumps(report, indent=2))
    print(markdown(report))
    run = report["run"]
    growth_ok = all(value <= RSS_BUDGET_MB for value in report["rss_growth_mb"].values())
    if run["errors_5xx"] or run["transport_errors"] or run["unexpected_status"] or not growth_ok:
        print("FAILED: 5xx, transport errors, unexpected statuses or RSS growth over budget", file=sys.stderr)
        print(log_tail, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
