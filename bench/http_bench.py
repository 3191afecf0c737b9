"""HTTP benchmark of attnmap against the naive peer and a static-PNG ceiling (issue 2).

One command::

    python bench/http_bench.py [--duration S] [--workers 2] [--repeats 3]

starts three Gunicorn servers on free loopback ports, all with the repository's
``gunicorn.conf.py`` (sync workers, same worker count, same backlog and timeouts):

* **attnmap** (``app.wsgi:app``, no built-in models: raw weights only);
* **peer**: ``../shared/peers/naive_app.py`` (pyplot per request), the approach users write first;
* **ceiling**: ``bench/static_app.py``, which reads the body and returns a fixed PNG the size of
  attnmap's plain output: the most Flask + Gunicorn can serve for this request here.

Each is driven by the same load generator (wrk with ``bench/post.lua``; a Python multi-process
generator when wrk is missing) with the same connections and duration. Cases:

* ``plain``: a 64x64 matrix (random logits, softmax rows) as JSON, ``"size": 512``;
* ``annotated``: the same with ``"annotate": true`` and 64 token labels.

The peer gets the same bodies; it ignores ``size``/``annotate`` and draws no labels, so the
annotated comparison is generous to the peer. Runs are interleaved (peer, attnmap, ceiling,
then again) ``--repeats`` times so that drift on a shared machine hits every server alike;
ratios are taken within one round and reported as median (min-max).

Memory: resident set size of every attnmap worker (psutil) before and after a dedicated run of
``--rss-requests`` requests alternating both cases, after the throughput runs (caches warm).
Worker recycling (``max_requests``) is switched off for the bench so that a leak cannot hide.

Results go to ``bench/results/http_bench-<timestamp>.json`` (gitignored) and a Markdown table
is printed. Servers are always stopped (``finally``); every wait and loop is bounded.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import math
import multiprocessing
import os
import platform
import selectors
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
PEERS = (REPO / ".." / "shared" / "peers").resolve()
GUNICORN_CONF = REPO / "gunicorn.conf.py"
LUA_SCRIPT = BENCH / "post.lua"
RESULTS = BENCH / "results"

MATRIX_SIDE = 64
OUTPUT_SIZE = 512
TARGETS = {"plain_vs_peer": 50.0, "plain_vs_ceiling": 1 / 3, "annotated_vs_peer": 3.0, "rss_growth_mb": 20.0}
ATTNMAP_APP = "app.wsgi:app"
START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 20.0


# --------------------------------------------------------------------------- request bodies


def make_bodies(seed: int) -> dict[str, bytes]:
    """JSON bodies of both cases: one random 64x64 softmax matrix, full float precision."""
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((MATRIX_SIDE, MATRIX_SIDE)) * 2.0
    weights = np.exp(logits - logits.max(axis=1, keepdims=True))
    weights /= weights.sum(axis=1, keepdims=True)
    tokens = [f"tok{i:02d}" for i in range(MATRIX_SIDE)]
    rows = weights.tolist()
    return {
        "plain": json.dumps({"weights": rows, "size": OUTPUT_SIZE}).encode(),
        "annotated": json.dumps({"weights": rows, "size": OUTPUT_SIZE, "annotate": True, "tokens": tokens}).encode(),
    }


# --------------------------------------------------------------------------- servers


def free_port() -> int:
    """A loopback port that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    """One Gunicorn master started by the bench, in its own process group."""

    name: str
    app: str
    port: int
    workers: int
    log_path: Path
    chdir: Path | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None

    @property
    def command(self) -> list[str]:
        """Gunicorn command line.

        attnmap runs with the repository's ``gunicorn.conf.py`` (its hooks import the app, so
        other apps cannot share the file); the peer and the ceiling get the same settings as
        flags: sync workers, worker count, backlog, timeouts, heartbeat dir, no recycling.
        """
        command = [sys.executable, "-m", "gunicorn"]
        if self.app == ATTNMAP_APP:
            command += ["-c", str(GUNICORN_CONF)]
        else:
            command += ["-w", str(self.workers), "-k", "sync", "-b", f"127.0.0.1:{self.port}", "--backlog", "64",
                        "--timeout", "60", "--graceful-timeout", "30", "--keep-alive", "2", "--max-requests", "0",
                        "--no-control-socket", "--log-level", "warning"]
            if Path("/dev/shm").is_dir():
                command += ["--worker-tmp-dir", "/dev/shm"]
        if self.chdir is not None:
            command += ["--chdir", str(self.chdir)]
        return [*command, self.app]

    @property
    def env(self) -> dict[str, str]:
        """Environment of the master: bind, worker count and no recycling (read by gunicorn.conf.py)."""
        env = dict(os.environ)
        env.update(
            ATTNMAP_BIND=f"127.0.0.1:{self.port}",
            ATTNMAP_WORKERS=str(self.workers),
            ATTNMAP_MAX_REQUESTS="0",
        )
        env.update(self.extra_env)
        return env

    def start(self) -> None:
        """Start the master in a new session so that stop() can signal exactly its group."""
        log = self.log_path.open("wb")
        try:
            # Gunicorn reads ./gunicorn.conf.py from its working directory when no -c is given:
            # the peer and the ceiling start in their own folders so that attnmap's is not picked up.
            self.process = subprocess.Popen(self.command, cwd=self.chdir or REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        finally:
            log.close()

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> None:
        """Poll GET /healthz until it answers 200 and every worker has started (bounded)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}; see {self.log_path}")
            try:
                status, _, _ = http_request(self.port, "GET", "/healthz", None, timeout=2.0)
            except OSError:
                status = 0
            if status == 200 and len(self.worker_pids()) == self.workers:
                return
            time.sleep(0.25)
        raise RuntimeError(f"{self.name} did not become ready within {timeout:.0f} s; see {self.log_path}")

    def worker_pids(self) -> list[int]:
        """PIDs of the Gunicorn workers (the master's children)."""
        if self.process is None or self.process.poll() is not None:
            return []
        try:
            return sorted(child.pid for child in psutil.Process(self.process.pid).children())
        except psutil.NoSuchProcess:
            return []

    def worker_cpu_s(self) -> float:
        """User + system CPU seconds used so far by all workers (for CPU per request)."""
        total = 0.0
        for pid in self.worker_pids():
            try:
                times = psutil.Process(pid).cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += times.user + times.system
        return total

    def worker_rss_mb(self) -> dict[int, float]:
        """Resident set size of each worker in MiB."""
        sizes = {}
        for pid in self.worker_pids():
            try:
                sizes[pid] = psutil.Process(pid).memory_info().rss / 2**20
            except psutil.NoSuchProcess:
                continue
        return sizes

    def stop(self) -> None:
        """SIGTERM the master (graceful), then SIGKILL its process group if it lingers."""
        if self.process is None or self.process.poll() is not None:
            return
        pgid = self.process.pid  # start_new_session: the master leads its own group
        try:
            os.kill(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=STOP_TIMEOUT_S)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
        with suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        with suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5)


def http_request(port: int, method: str, path: str, body: bytes | None, timeout: float = 30.0) -> tuple[int, dict[str, str], bytes]:
    """One HTTP request on a fresh connection; returns status, headers, body."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


# --------------------------------------------------------------------------- load generators


@dataclass
class LoadResult:
    """Throughput and latency of one load run."""

    requests: int
    duration_s: float
    errors: dict[str, int]
    latency_ms: dict[str, float]
    cpu_ms_per_request: float = float("nan")

    @property
    def rps(self) -> float:
        """Completed requests per second (errors included in ``requests`` by wrk; see ``errors``)."""
        return self.requests / self.duration_s if self.duration_s else 0.0

    def as_json(self) -> dict[str, Any]:
        """Plain data for the results file."""
        return {"requests": self.requests, "duration_s": round(self.duration_s, 3), "rps": round(self.rps, 1),
                "errors": self.errors, "latency_ms": self.latency_ms, "worker_cpu_ms_per_request": round(self.cpu_ms_per_request, 3)}


class Wrk:
    """wrk 4 with bench/post.lua: POST bodies from files, optional stop after N responses."""

    name = "wrk"

    def __init__(self, binary: str, connections: int, threads: int = 1) -> None:
        self.binary = binary
        self.connections = connections
        self.threads = threads

    def version(self) -> str:
        """The wrk version line."""
        completed = subprocess.run([self.binary, "--version"], capture_output=True, text=True, timeout=10, check=False)
        return (completed.stdout or completed.stderr).splitlines()[0].strip()

    def run(self, port: int, body_files: Sequence[Path], duration: float, limit: int = 0) -> LoadResult:
        """Load ``/visualize`` for ``duration`` s, or until ``limit`` responses (one thread).

        wrk always sleeps for its whole ``-d`` even after a thread stops, so in limit mode the
        script prints a marker when the limit is reached and wrk gets SIGINT (its "stop early").
        """
        threads = 1 if limit else self.threads
        command = [self.binary, "-t", str(threads), "-c", str(self.connections), "-d", f"{max(1, math.ceil(duration))}s",
                   "--timeout", "10s", "-s", str(LUA_SCRIPT), f"http://127.0.0.1:{port}/visualize", "--",
                   str(limit), *map(str, body_files)]
        deadline = time.monotonic() + duration + 60
        received = b""
        interrupted = False
        with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT) as process:
            assert process.stdout is not None
            descriptor = process.stdout.fileno()  # raw reads: a buffered reader would hide lines from select()
            with selectors.DefaultSelector() as selector:
                selector.register(descriptor, selectors.EVENT_READ)
                while time.monotonic() < deadline:
                    if not selector.select(timeout=1.0):
                        continue
                    chunk = os.read(descriptor, 65536)
                    if not chunk:
                        break
                    received += chunk
                    if not interrupted and b"LIMIT_REACHED" in received:
                        process.send_signal(signal.SIGINT)
                        interrupted = True
            if process.poll() is None:
                process.kill()
            process.wait(timeout=10)
        output = received.decode(errors="replace").splitlines()
        for line in output:
            if line.startswith("WRKJSON "):
                data = json.loads(line[len("WRKJSON "):])
                latency = {key: round(value / 1000, 3) for key, value in data["latency_us"].items()}
                return LoadResult(data["requests"], data["duration_us"] / 1e6, data["errors"], latency)
        raise RuntimeError(f"wrk produced no result (rc {process.returncode}): {received[-800:]!r}")


def _python_client(args: tuple[int, list[bytes], float, int]) -> tuple[list[float], int]:
    """One client process: sequential POSTs on fresh connections until the deadline or limit."""
    port, bodies, duration, limit = args
    latencies: list[float] = []
    errors = 0
    deadline = time.monotonic() + duration
    sent = 0
    while time.monotonic() < deadline and (not limit or sent < limit):
        body = bodies[sent % len(bodies)]
        sent += 1
        started = time.perf_counter()
        try:
            status, _, _ = http_request(port, "POST", "/visualize", body, timeout=10.0)
        except OSError:
            errors += 1
            continue
        latencies.append(time.perf_counter() - started)
        if status != 200:
            errors += 1
    return latencies, errors


class PythonLoad:
    """Fallback when wrk is missing: one process per connection (slower than wrk: lower ceiling)."""

    name = "python-multiprocess"

    def __init__(self, connections: int) -> None:
        self.connections = connections
        self.threads = self.connections

    def version(self) -> str:
        """Describe the generator."""
        return f"python {platform.python_version()} multiprocessing, {self.connections} processes"

    def run(self, port: int, body_files: Sequence[Path], duration: float, limit: int = 0) -> LoadResult:
        """Same contract as :meth:`Wrk.run`."""
        bodies = [path.read_bytes() for path in body_files]
        per_client = -(-limit // self.connections) if limit else 0
        started = time.monotonic()
        with multiprocessing.get_context("spawn").Pool(self.connections) as pool:
            parts = pool.map(_python_client, [(port, bodies, duration, per_client)] * self.connections)
        elapsed = time.monotonic() - started
        latencies = np.array([value for part, _ in parts for value in part]) * 1000
        errors = sum(count for _, count in parts)
        if latencies.size == 0:
            latency = dict.fromkeys(("min", "mean", "max", "p50", "p90", "p99"), float("nan"))
        else:
            latency = {"min": float(latencies.min()), "mean": float(latencies.mean()), "max": float(latencies.max()),
                       "p50": float(np.percentile(latencies, 50)), "p90": float(np.percentile(latencies, 90)),
                       "p99": float(np.percentile(latencies, 99))}
        return LoadResult(int(latencies.size), elapsed, {"status_or_io": errors}, {k: round(v, 3) for k, v in latency.items()})


# --------------------------------------------------------------------------- checks


def png_shape(data: bytes) -> tuple[int, int]:
    """(height, width) of PNG bytes, decoded with Pillow (independent of attnmap's encoder)."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        image.load()
        assert image.format == "PNG"
        return image.height, image.width


def sanity_check(server: Server, body: bytes, expect_side: int | None) -> dict[str, Any]:
    """One request before loading a server: it must answer 200 with a decodable PNG."""
    status, headers, data = http_request(server.port, "POST", "/visualize", body, timeout=60.0)
    if status != 200:
        raise RuntimeError(f"{server.name} answered {status}: {data[:300]!r}")
    height, width = png_shape(data)
    if expect_side is not None and max(height, width) != expect_side:
        raise RuntimeError(f"{server.name} returned a {width}x{height} PNG; expected a {expect_side} px side")
    return {"status": status, "png_bytes": len(data), "png_size": [width, height],
            "content_length": headers.get("Content-Length")}


# --------------------------------------------------------------------------- reporting


def spread(values: Sequence[float]) -> dict[str, float]:
    """Median and range of repeated measurements."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def fmt_spread(stats: dict[str, float] | None, digits: int = 1) -> str:
    """``median (min-max)`` for a Markdown cell."""
    if stats is None:
        return "-"
    return f"{stats['median']:.{digits}f} ({stats['min']:.{digits}f}-{stats['max']:.{digits}f})"


def markdown(report: dict[str, Any]) -> str:
    """The tables printed at the end (and stored in the results file)."""
    config = report["config"]
    load = ", ".join(f"{value:.1f}" for value in config["loadavg_before"])
    lines = [
        f"`{report['command']}`: {config['workers']} sync Gunicorn workers per server, {config['connections']} connections, "
        f"{config['duration_s']} s x {config['repeats']} interleaved rounds, {config['load_generator_kind']}; "
        f"median (min-max) over rounds; {config['cpu_count']} CPUs, load average {load} before the runs.",
        "",
        "| case | server | req/s | p50 ms | p99 ms | worker CPU ms/req | attnmap/peer | attnmap/ceiling |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for case, result in report["cases"].items():
        for name in ("attnmap", "peer", "ceiling"):
            runs = result["servers"].get(name)
            if not runs:
                continue
            vs_peer = fmt_spread(result["ratios"].get("vs_peer")) if name == "attnmap" else ""
            vs_ceiling = fmt_spread(result["ratios"].get("vs_ceiling"), 3) if name == "attnmap" and "vs_ceiling" in result["ratios"] else ""
            lines.append(f"| {case} | {name} | {fmt_spread(runs['rps'])} | {fmt_spread(runs['p50_ms'], 2)} | "
                         f"{fmt_spread(runs['p99_ms'], 2)} | {fmt_spread(runs['cpu_ms_per_request'], 2)} | {vs_peer} | {vs_ceiling} |")
    lines += [
        "",
        "The ceiling reads the same body and returns a fixed PNG of attnmap's plain output size. The peer ignores"
        " size/annotate and draws no labels, so the annotated ratio is generous to the peer. Worker CPU ms/req is"
        " user + system time of the server's workers divided by requests: less sensitive to other load than req/s.",
    ]
    memory = report.get("memory")
    if memory:
        lines += ["", f"Worker RSS over {memory['requests']} requests (plain and annotated in turn), MiB:", "",
                  "| worker pid | after warm-up | before | after | growth |", "|---|---|---|---|---|"]
        for pid, row in memory["workers"].items():
            lines.append(f"| {pid} | {row['after_warmup']:.1f} | {row['before']:.1f} | {row['after']:.1f} | {row['growth']:+.1f} |")
        if not memory["same_workers"]:
            lines.append("\nWARNING: worker PIDs changed during the memory run; growth is not meaningful.")
    lines += ["", "| target | measured (median, worst round) | met |", "|---|---|---|"]
    for row in report["targets"]:
        lines.append(f"| {row['name']} | {row['median']:.3g} (worst {row['worst']:.3g}) | {'yes' if row['met'] else 'NO'} |")
    return "\n".join(lines)


def evaluate_targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target with its median and worst round; met means the median meets it."""
    rows = []
    cases = report["cases"]
    for name, case, ratio in (("plain attnmap/peer >= 50", "plain", "vs_peer"),
                              ("plain attnmap/ceiling >= 1/3", "plain", "vs_ceiling"),
                              ("annotated attnmap/peer >= 3", "annotated", "vs_peer")):
        stats = cases.get(case, {}).get("ratios", {}).get(ratio)
        if stats is None:
            continue
        target = {"vs_peer": TARGETS["plain_vs_peer"] if case == "plain" else TARGETS["annotated_vs_peer"],
                  "vs_ceiling": TARGETS["plain_vs_ceiling"]}[ratio]
        rows.append({"name": name, "target": target, "median": stats["median"], "worst": stats["min"],
                     "met": stats["median"] >= target})
    memory = report.get("memory")
    if memory:
        growths = [row["growth"] for row in memory["workers"].values()]
        worst = max(growths) if growths else float("nan")
        rows.append({"name": "worker RSS growth <= 20 MiB", "target": TARGETS["rss_growth_mb"], "median": statistics.median(growths),
                     "worst": worst, "met": memory["same_workers"] and worst <= TARGETS["rss_growth_mb"]})
    return rows


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per load run (default 10)")
    parser.add_argument("--workers", type=int, default=2, help="Gunicorn workers per server (default 2)")
    parser.add_argument("--connections", type=int, default=None, help="concurrent connections (default 2 x workers)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds per case (default 3)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of unmeasured load per server and case (default 2)")
    parser.add_argument("--rss-requests", type=int, default=5000, help="requests in the memory run (0 skips it)")
    parser.add_argument("--cases", default="plain,annotated", help="comma-separated: plain, annotated")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random matrix")
    parser.add_argument("--python-load", action="store_true", help="use the Python generator even if wrk is installed")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for the JSON results (default bench/results)")
    args = parser.parse_args(argv)
    if args.connections is None:
        args.connections = 2 * args.workers
    if not (0 < args.duration <= 600 and 0 < args.workers <= 16 and 0 < args.repeats <= 20 and args.connections > 0):
        parser.error("duration must be in (0, 600], workers in 1..16, repeats in 1..20")
    return args


def _exit_on_signal(signum: int, _frame: object) -> None:
    """SIGTERM/SIGHUP end the bench through ``finally`` blocks, so the servers are stopped."""
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; exit status 0 when every target is met, 1 otherwise."""
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_signal)
    signal.signal(signal.SIGHUP, _exit_on_signal)
    cases = [case.strip() for case in args.cases.split(",") if case.strip()]
    if not PEERS.joinpath("naive_app.py").is_file():
        print(f"naive peer not found at {PEERS}/naive_app.py", file=sys.stderr)
        return 2
    wrk_path = shutil.which("wrk")
    loader: Wrk | PythonLoad
    if wrk_path and not args.python_load:
        loader = Wrk(wrk_path, args.connections)
    else:
        print("wrk not found (apt-get install -y wrk): using the slower Python multi-process generator", file=sys.stderr)
        loader = PythonLoad(args.connections)
    args.out.mkdir(parents=True, exist_ok=True)
    bodies = make_bodies(args.seed)
    stamp = time.strftime("%Y%m%d-%H%M%S")

    with ExitStack() as stack:
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="attnmap-bench-")))
        body_files = {case: scratch / f"{case}.json" for case in bodies}
        for case, path in body_files.items():
            path.write_bytes(bodies[case])
        static_png = scratch / "static.png"
        servers: dict[str, Server] = {}

        def start(server: Server) -> None:
            servers[server.name] = server
            stack.callback(server.stop)  # registered first: stopped even if start-up fails
            server.start()

        start(Server("attnmap", ATTNMAP_APP, free_port(), args.workers, args.out / f"{stamp}-attnmap.log",
                     extra_env={"ATTNMAP_BUILTIN_MODELS": "none"}))
        start(Server("peer", "naive_app:app", free_port(), args.workers, args.out / f"{stamp}-peer.log", chdir=PEERS))
        servers["attnmap"].wait_ready()
        servers["peer"].wait_ready()
        checks = {case: {"attnmap": sanity_check(servers["attnmap"], bodies[case], OUTPUT_SIZE if case == "plain" else None),
                         "peer": sanity_check(servers["peer"], bodies[case], None)} for case in cases}
        # The ceiling serves attnmap's own plain PNG, so the response bytes match.
        _, _, plain_png = http_request(servers["attnmap"].port, "POST", "/visualize", bodies["plain"])
        static_png.write_bytes(plain_png)
        start(Server("ceiling", "static_app:app", free_port(), args.workers, args.out / f"{stamp}-ceiling.log", chdir=BENCH,
                     extra_env={"ATTNMAP_BENCH_STATIC_PNG": str(static_png)}))
        servers["ceiling"].wait_ready()
        if "plain" in cases:
            checks["plain"]["ceiling"] = sanity_check(servers["ceiling"], bodies["plain"], OUTPUT_SIZE)

        # Warm every worker (first requests build colour tables, figure layouts, font caches).
        for case in cases:
            for name in ("peer", "attnmap", "ceiling"):
                if name == "ceiling" and case != "plain":
                    continue
                loader.run(servers[name].port, [body_files[case]], args.warmup)
        rss_after_warmup = servers["attnmap"].worker_rss_mb()
        load_before = os.getloadavg()

        runs: dict[str, dict[str, list[LoadResult]]] = {case: {} for case in cases}
        for round_index in range(args.repeats):
            for case in cases:
                for name in ("peer", "attnmap", "ceiling"):
                    if name == "ceiling" and case != "plain":
                        continue  # the ceiling is the plain response's; annotated PNGs are 5x larger
                    cpu_before = servers[name].worker_cpu_s()
                    result = loader.run(servers[name].port, [body_files[case]], args.duration)
                    # Worker CPU per request: far less sensitive to other load on the machine than req/s.
                    result.cpu_ms_per_request = 1000 * (servers[name].worker_cpu_s() - cpu_before) / max(result.requests, 1)
                    runs[case].setdefault(name, []).append(result)
                    print(f"round {round_index + 1}/{args.repeats} {case:9s} {name:8s} {result.rps:8.1f} req/s  "
                          f"p50 {result.latency_ms['p50']:7.2f} ms  p99 {result.latency_ms['p99']:7.2f} ms  "
                          f"worker CPU {result.cpu_ms_per_request:7.2f} ms/req  errors {sum(result.errors.values())}", flush=True)

        memory: dict[str, Any] | None = None
        if args.rss_requests > 0:
            pids_before = servers["attnmap"].worker_pids()
            before = servers["attnmap"].worker_rss_mb()
            # Bound: three times the time the throughput runs predict for this mix, at most 10 min.
            seconds_per_request = statistics.mean(1 / statistics.median(r.rps for r in runs[case]["attnmap"]) for case in cases)
            max_seconds = min(600.0, 3 * args.rss_requests * seconds_per_request + 30)
            result = loader.run(servers["attnmap"].port, [body_files[case] for case in cases], max_seconds, limit=args.rss_requests)
            after = servers["attnmap"].worker_rss_mb()
            pids_after = servers["attnmap"].worker_pids()
            memory = {
                "requests": result.requests,
                "errors": result.errors,
                "same_workers": pids_before == pids_after and len(pids_after) == args.workers,
                "workers": {str(pid): {"after_warmup": rss_after_warmup.get(pid, float("nan")), "before": before[pid],
                                       "after": after.get(pid, float("nan")),
                                       "growth": after.get(pid, float("nan")) - before[pid]} for pid in pids_before},
            }
        load_after = os.getloadavg()

    report: dict[str, Any] = {
        "issue": 2,
        "command": " ".join(["python", "bench/http_bench.py", *(argv if argv is not None else sys.argv[1:])]),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "config": {"workers": args.workers, "connections": args.connections, "duration_s": args.duration, "repeats": args.repeats,
                   "warmup_s": args.warmup, "load_generator": loader.version(), "load_generator_kind": loader.name,
                   "matrix": f"{MATRIX_SIDE}x{MATRIX_SIDE}", "size": OUTPUT_SIZE,
                   "body_bytes": {case: len(bodies[case]) for case in cases},
                   "servers": {name: " ".join(server.command[2:]) for name, server in servers.items()},
                   "cpu_count": os.cpu_count(), "loadavg_before": load_before, "loadavg_after": load_after,
                   "python": platform.python_version()},
        "checks": checks,
        "cases": {},
        "memory": memory,
        "server_logs": {name: str(server.log_path) for name, server in servers.items()},
    }
    for case in cases:
        per_server = runs[case]
        summary: dict[str, Any] = {"servers": {}, "ratios": {}, "runs": {}}
        for name, results in per_server.items():
            summary["servers"][name] = {"rps": spread([r.rps for r in results]),
                                        "p50_ms": spread([r.latency_ms["p50"] for r in results]),
                                        "p99_ms": spread([r.latency_ms["p99"] for r in results]),
                                        "cpu_ms_per_request": spread([r.cpu_ms_per_request for r in results]),
                                        "errors": sum(sum(r.errors.values()) for r in results)}
            summary["runs"][name] = [r.as_json() for r in results]
        attn = per_server["attnmap"]
        summary["ratios"]["vs_peer"] = spread([a.rps / p.rps for a, p in zip(attn, per_server["peer"], strict=True)])
        if "ceiling" in per_server:
            summary["ratios"]["vs_ceiling"] = spread([a.rps / c.rps for a, c in zip(attn, per_server["ceiling"], strict=True)])
        report["cases"][case] = summary
    report["targets"] = evaluate_targets(report)
    table = markdown(report)
    report["markdown"] = table
    path = args.out / f"http_bench-{stamp}.json"
    path.write_text(json.dumps(report, indent=2, default=float))
    print()
    print(table)
    print(f"\nresults: {path.relative_to(REPO) if path.is_relative_to(REPO) else path}")
    errors = sum(case["servers"][name]["errors"] for case in report["cases"].values() for name in case["servers"])
    if errors:
        print(f"WARNING: {errors} requests failed during the measured runs (see the results file)")
    return 0 if all(row["met"] for row in report["targets"]) and not errors else 1


if __name__ == "__main__":
    sys.exit(main())
