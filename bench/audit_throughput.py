"""Throughput of ``attnmap audit`` against the service's own capacity on the same requests (issue 14).

One command::

    python bench/audit_throughput.py [--images 120] [--workers 2] [--repeats 7] [--duration 4]

starts one Gunicorn (the repository's ``gunicorn.conf.py``, ``--workers`` sync workers, the
built-in ``shapes-vit`` only, no worker recycling) and generates ``--images`` marked/unmarked
shape images (``training.audit_set``). Then, ``--repeats`` times, interleaved so that drift on a
shared machine hits both alike:

* **capacity**: the load generator (wrk with ``bench/post.lua``; a Python multi-process loop when
  wrk is missing) POSTs exactly the bodies the audit sends (each image as base64 JSON with its
  corner region, ``format=json``), with as many connections as workers, for ``--duration`` s;
* **audit**: the real ``attnmap audit`` console script on the same images with
  ``--concurrency`` = workers and ``--boxes corners.csv``.

Reported: images per second of the audit's measuring phase (from ``summary.json``: requests
answered / ``duration_s``), of the whole command end to end (process start to exit, including
the preflight, the worst-offender overlays and the report), and both as a ratio of the capacity
measured in the same round. Target: measuring-phase ratio >= 0.9 (the client is never the
bottleneck). Results go to ``bench/results/audit_throughput-<timestamp>.json`` (gitignored).
"""

from __future__ import annotations

import argparse
import base64
import csv
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from http_bench import ATTNMAP_APP, RESULTS, PythonLoad, Server, Wrk, free_port, http_request  # noqa: E402

from training.audit_set import generate  # noqa: E402

MODEL = "shapes-vit"
TARGET = 0.9
ATTNMAP = str(Path(sys.executable).with_name("attnmap"))


def request_bodies(root: Path) -> list[bytes]:
    """The JSON bodies ``attnmap audit --boxes corners.csv`` sends, one per image, in the same form."""
    bodies = []
    with open(root / "corners.csv", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            image = base64.b64encode((root / row["path"]).read_bytes()).decode("ascii")
            region = [float(row[k]) for k in ("x0", "y0", "x1", "y1")]
            bodies.append(json.dumps({"model": MODEL, "region": region, "format": "json", "image": image},
                                     separators=(",", ":")).encode())
    return bodies


def run_audit(port: int, root: Path, out: Path, workers: int) -> dict[str, Any]:
    """One ``attnmap audit`` run; returns its rates."""
    shutil.rmtree(out, ignore_errors=True)
    started = time.monotonic()
    completed = subprocess.run([ATTNMAP, "audit", "--server", f"http://127.0.0.1:{port}", "--model", MODEL,
                                "--images", str(root), "--boxes", str(root / "corners.csv"), "--out", str(out),
                                "--concurrency", str(workers), "--quiet"],
                               capture_output=True, text=True, timeout=900, check=False)
    wall = time.monotonic() - started
    if completed.returncode != 0:
        raise RuntimeError(f"attnmap audit exited {completed.returncode}: {completed.stderr[-800:]}")
    summary = json.loads((out / "summary.json").read_text())
    measured = summary["run"]["measured"]
    errors = sum(1 for r in summary["images"] if r["error"])
    return {"images": measured, "errors": errors, "measure_s": summary["run"]["duration_s"], "wall_s": round(wall, 3),
            "measure_ips": measured / summary["run"]["duration_s"], "wall_ips": measured / wall}


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; prints a Markdown table and writes the JSON results."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--images", type=int, default=120)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--duration", type=float, default=4.0,
                        help="seconds of each capacity run (short slices, interleaved: a shared machine's load drifts)")
    args = parser.parse_args(argv)

    wrk = shutil.which("wrk")
    load = Wrk(wrk, connections=args.workers, threads=args.workers) if wrk else PythonLoad(args.workers)
    with tempfile.TemporaryDirectory(prefix="attnmap-audit-bench-") as scratch:
        work = Path(scratch)
        root = work / "images"
        generate(root, args.images, seed=5)
        bodies = request_bodies(root)
        body_dir = work / "bodies"
        body_dir.mkdir()
        body_files = []
        for index, body in enumerate(bodies):
            path = body_dir / f"{index:04d}.json"
            path.write_bytes(body)
            body_files.append(path)
        server = Server("attnmap", ATTNMAP_APP, free_port(), args.workers, work / "gunicorn.log",
                        extra_env={"ATTNMAP_BUILTIN_MODELS": MODEL})
        server.start()
        rounds = []
        try:
            server.wait_ready(timeout=180)
            for body in bodies[: 4 * args.workers]:  # warm every worker
                status, _, _ = http_request(server.port, "POST", "/visualize", body)
                if status != 200:
                    raise RuntimeError(f"warm-up request answered {status}")
            for index in range(args.repeats):
                capacity = load.run(server.port, body_files, args.duration)
                audit = run_audit(server.port, root, work / "out", args.workers)
                failed = sum(capacity.errors.values())
                rounds.append({"capacity_rps": capacity.rps, "capacity_errors": failed, **audit,
                               "measure_ratio": audit["measure_ips"] / capacity.rps,
                               "wall_ratio": audit["wall_ips"] / capacity.rps})
                print(f"round {index + 1}: capacity {capacity.rps:.1f}/s, audit {audit['measure_ips']:.1f}/s measuring "
                      f"({rounds[-1]['measure_ratio']:.2f}), {audit['wall_ips']:.1f}/s end to end "
                      f"({rounds[-1]['wall_ratio']:.2f})", flush=True)
        finally:
            server.stop()

    measure = statistics.median(r["measure_ratio"] for r in rounds)
    wall = statistics.median(r["wall_ratio"] for r in rounds)
    report = {"generator": load.version(), "workers": args.workers, "images": args.images, "model": MODEL,
              "rounds": rounds, "median_measure_ratio": measure, "median_wall_ratio": wall, "target": TARGET,
              "passed": measure >= TARGET}
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"audit_throughput-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print("\n| round | capacity (req/s) | audit measuring (img/s) | ratio | audit end to end (img/s) | ratio |")
    print("|---|---|---|---|---|---|")
    for index, r in enumerate(rounds, start=1):
        print(f"| {index} | {r['capacity_rps']:.1f} | {r['measure_ips']:.1f} | {r['measure_ratio']:.2f} | "
              f"{r['wall_ips']:.1f} | {r['wall_ratio']:.2f} |")
    print(f"\nmedian ratio: measuring {measure:.2f}, end to end {wall:.2f} (target >= {TARGET}); "
          f"{args.workers} workers, {args.images} images, generator {load.version()}; {path}")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
