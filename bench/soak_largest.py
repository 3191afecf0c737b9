"""Soak with the largest valid requests (issue 12): worker memory must stay flat after warm-up.

One command::

    python bench/soak_largest.py [--duration 300] [--warmup 60] [--workers 2] [--clients 2]
                                 [--only CLASS ...] [--env NAME=VALUE ...]

starts Gunicorn (``gunicorn.conf.py``, the built-in ``minilm`` and ``shapes-vit``, worker recycling
off so that a leak cannot hide) and drives it with ``--clients`` closed-loop clients cycling through
the largest requests the limits allow:

* ``image``: a 5000 x 5000 JPEG (25 Mpx, the pixel cap) through ``shapes-vit``, overlay at 4096 px;
* ``text_rollout``: a text of ~500 tokens (the 512-token cap) through ``minilm``, rollout, annotated;
* ``stack``: a 4 x 4 x 512 x 512 float16 ``.npy`` (4,194,304 values, the element cap), rollout;
* ``annotated_4096``: a 256-token matrix, annotated at 4096 px (the largest side);
* ``json_output``: an 800 x 800 matrix answered as ``format=json`` (640,000 values, under the cap).

Every answer must be 200. Reported: requests per class, each worker's RSS sampled every second,
its peak during warm-up, and for the two halves of the measured window its peak, median and floor;
the growth after warm-up is how much the second half's median or floor exceeds the first half's
(budget: :data:`GROWTH_BUDGET_MB` per worker; see :func:`flatness`), and the peak is held to the
per-worker budget (:data:`PEAK_BUDGET_MB`). The window's medians per :data:`BUCKET_S` seconds show
whether growth goes on or levels off. ``--only`` runs some classes alone (to tell which one grows);
``--env`` sets a variable for the server (for example ``MALLOC_ARENA_MAX=2``, to see what glibc's
arenas retain). Also the size of ``/metrics`` before and after. Results, with every RSS sample, go
to ``bench/results/soak_largest-<timestamp>.json``; the exit status is 1 when a budget is broken.
``tests/test_soak_largest.py`` runs it for a short time in CI.
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import requests
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.live import gunicorn_server  # noqa: E402  (needs ROOT on sys.path)
from tests.serving_support import worker_pids  # noqa: E402

# Per worker: what it may hold at its peak (models, one largest request in flight, the figure
# cache at its 96 MiB byte cap), and how much it may grow between the end of warm-up and the end.
PEAK_BUDGET_MB = 2048.0
GROWTH_BUDGET_MB = 64.0
# The measured window's RSS summarised per bucket (medians): a leak keeps climbing bucket after
# bucket, allocator retention levels off once the heap holds the largest request's working set.
BUCKET_S = 60.0
CLASSES = ("image", "text_rollout", "stack", "annotated_4096", "json_output")


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _big_jpeg() -> bytes:
    """5000 x 5000 of smooth gradients and a few shapes: its 4096 px overlay fits the 8 MiB PNG cap
    (a noisy photo that size does not, and is refused with 422 ``output_too_large``)."""
    y, x = np.mgrid[0:5000, 0:5000].astype(np.float32)
    pixels = np.stack([x / 5000 * 255, y / 5000 * 255, (x + y) / 10000 * 255], axis=-1)
    pixels[1000:2000, 1000:3000] = (240, 40, 40)
    pixels[3000:4500, 2500:4000] = (30, 30, 200)
    buffer = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


@dataclass
class Request:
    """One class of the mix: how to send it."""

    name: str
    json: Any = None
    files: Any = None
    form: dict[str, str] | None = None


def mix() -> list[Request]:
    """The largest valid requests, one per class."""
    rng = np.random.default_rng(1)
    stack = rng.random((4, 4, 512, 512)).astype(np.float16)
    matrix_256 = rng.random((256, 256))
    json_matrix = rng.random((1, 1, 800, 800)).round(3)
    words = " ".join(f"word{i % 97}" for i in range(240))  # ~500 word pieces with [CLS]/[SEP]
    return [
        Request("image", files={"image": ("big.jpg", _big_jpeg())}, form={"model": "shapes-vit", "size": "4096"}),
        Request("text_rollout", json={"text": words, "model": "minilm", "method": "rollout", "annotate": True,
                                      "size": 1024, "truncate": True}),
        Request("stack", files={"weights": ("stack.npy", _npy(stack))}, form={"method": "rollout"}),
        Request("annotated_4096", json={"weights": matrix_256.tolist(), "annotate": True, "size": 4096,
                                        "tokens": [f"tok{i}" for i in range(256)]}),
        Request("json_output", json={"weights": json_matrix.tolist(), "format": "json"}),
    ]


def send(session: requests.Session, base: str, request: Request) -> int:
    """Send one request of the mix; returns the status."""
    if request.files is not None:
        files = [(k, (None, v)) for k, v in (request.form or {}).items()] + list(request.files.items())
        response = session.post(base + "/visualize", files=files, timeout=120)
    else:
        response = session.post(base + "/visualize", json=request.json, timeout=120)
    return response.status_code


@dataclass
class Samples:
    """RSS per worker over time, and what each client saw."""

    rss: dict[int, list[tuple[float, float]]] = field(default_factory=dict)
    statuses: dict[str, dict[int, int]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _sample(pids: list[int], samples: Samples, started: float, stop: threading.Event) -> None:
    while not stop.is_set():
        now = time.monotonic() - started
        for pid in pids:
            try:
                rss = psutil.Process(pid).memory_info().rss / 2**20
            except psutil.NoSuchProcess:
                continue
            samples.rss.setdefault(pid, []).append((now, rss))
        stop.wait(1.0)


def _client(base: str, requests_: list[Request], offset: int, samples: Samples, until: float) -> None:
    session = requests.Session()
    for request in itertools.islice(itertools.cycle(requests_), offset, None):
        if time.monotonic() >= until:
            return
        status = send(session, base, request)
        with samples.lock:
            counts = samples.statuses.setdefault(request.name, {})
            counts[status] = counts.get(status, 0) + 1


def _buckets(series: list[tuple[float, float]], warmup: float) -> list[float]:
    """Median RSS per :data:`BUCKET_S` of the measured window (after warm-up), in order."""
    grouped: dict[int, list[float]] = {}
    for t, rss in series:
        if t > warmup:
            grouped.setdefault(int((t - warmup) // BUCKET_S), []).append(rss)
    return [round(float(np.median(grouped[k])), 1) for k in sorted(grouped)]


def _summary(values: list[float]) -> dict[str, float]:
    return {"peak_mb": round(max(values), 1), "median_mb": round(float(np.median(values)), 1),
            "floor_mb": round(float(np.percentile(values, 10)), 1)}


def flatness(series: list[tuple[float, float]], warmup: float, duration: float) -> dict[str, Any]:
    """One worker's RSS samples ``(t, MB)`` summarised: warm-up peak, and the measured window
    (``warmup < t <= warmup + duration``; what is sampled while the last requests finish is left
    out) split into two halves, each with its peak, median and floor (10th percentile).

    Growth is how much the second half's median or floor exceeds the first half's. A leak raises
    both: what stays resident between requests climbs. Peaks are reported, not judged: at one
    sample a second they catch whichever of the mix's requests is in flight (a 25 Mpx decode
    adds several hundred MB for a second or two), so they differ by 100 MB between halves with no
    leak at all; the peak is held to :data:`PEAK_BUDGET_MB` instead.
    """
    at_warmup = [rss for t, rss in series if t <= warmup] or [series[0][1]]
    window = [rss for t, rss in series if warmup < t <= warmup + duration] or [series[-1][1]]
    first, second = window[: len(window) // 2] or window, window[len(window) // 2:] or window
    halves = _summary(first), _summary(second)
    growth = max(halves[1]["median_mb"] - halves[0]["median_mb"], halves[1]["floor_mb"] - halves[0]["floor_mb"])
    return {"peak_during_warmup_mb": round(max(at_warmup), 1), "peak_after_mb": round(max(window), 1),
            "first_half": halves[0], "second_half": halves[1], "final_mb": round(series[-1][1], 1),
            f"medians_per_{BUCKET_S:g}s_mb": _buckets([(t, rss) for t, rss in series if t <= warmup + duration], warmup),
            "growth_mb": round(growth, 1)}


def soak(duration: float, warmup: float, workers: int = 2, clients: int = 2, only: list[str] | None = None,
         extra_env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run the soak against a fresh Gunicorn; returns the measurements (and ``ok``)."""
    env = {"ATTNMAP_BUILTIN_MODELS": "minilm,shapes-vit", "ATTNMAP_MAX_REQUESTS": "0", **(extra_env or {})}
    requests_ = [request for request in mix() if not only or request.name in only]
    if not requests_:
        raise ValueError(f"--only names no class of the mix: {only}")
    samples = Samples()
    with gunicorn_server(env, workers=workers) as (base, process):
        pids = worker_pids(process.pid)
        metrics_before = len(requests.get(base + "/metrics", timeout=10).content)
        started = time.monotonic()
        stop = threading.Event()
        sampler = threading.Thread(target=_sample, args=(pids, samples, started, stop), daemon=True)
        sampler.start()
        until = started + warmup + duration
        threads = [threading.Thread(target=_client, args=(base, requests_, i, samples, until)) for i in range(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(warmup + duration + 300)
        stop.set()
        sampler.join(5)
        metrics_after = len(requests.get(base + "/metrics", timeout=10).content)
        restarted = worker_pids(process.pid) != pids
    workers_report = {str(pid): flatness(series, warmup, duration) for pid, series in samples.rss.items()}
    failures = {name: {s: n for s, n in counts.items() if s != 200} for name, counts in samples.statuses.items()}
    failures = {name: bad for name, bad in failures.items() if bad}
    ok = (not failures and not restarted
          and all(w["growth_mb"] <= GROWTH_BUDGET_MB and w["peak_after_mb"] <= PEAK_BUDGET_MB for w in workers_report.values())
          and metrics_after - metrics_before < 64 * 1024)
    return {"duration_s": duration, "warmup_s": warmup, "workers": workers, "clients": clients,
            "classes": [request.name for request in requests_], "env": extra_env or {},
            "statuses": samples.statuses, "failures": failures, "restarted": restarted, "rss": workers_report,
            "rss_series_mb": {str(pid): [[round(t, 1), round(rss, 1)] for t, rss in series] for pid, series in samples.rss.items()},
            "budget_mb": {"peak": PEAK_BUDGET_MB, "growth": GROWTH_BUDGET_MB},
            "metrics_bytes": {"before": metrics_before, "after": metrics_after}, "ok": ok}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=300.0, help="seconds measured after warm-up")
    parser.add_argument("--warmup", type=float, default=60.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--only", action="append", choices=CLASSES,
                        help="run only this class of the mix (repeatable)")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="an environment variable for the server (repeatable)")
    args = parser.parse_args()
    extra_env = dict(item.split("=", 1) for item in args.env)
    result = soak(args.duration, args.warmup, args.workers, args.clients, args.only, extra_env)
    out = ROOT / "bench" / "results" / f"soak_largest-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    print(f"written to {out}")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
