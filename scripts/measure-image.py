"""Measure the CPU image: its size (and what it is made of) and its cold start.

    .venv/bin/python scripts/measure-image.py [--runs 3]

Cold start = `podman run -d` until /readyz answers 200, with docker-compose.yml's settings
(2 workers, read-only root, tmpfs /tmp). The reference, measured in the same run: the same
Gunicorn config started from the project's .venv on the host (`make serve`'s command). Run
`make image` first. Prints a Markdown summary for the README.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.container_support import (  # noqa: E402
    IMAGE,
    compose_run_flags,
    compose_service,
    podman,
    run_container,
    wait_for_status,
)
from tests.live import free_port, gunicorn_server  # noqa: E402

SITE = "/opt/venv/lib/python3.11/site-packages"


def image_report() -> list[str]:
    """Image size, its layers above 1 MB, and the largest installed packages."""
    size = int(podman("image", "inspect", "--format", "{{.Size}}", IMAGE).stdout)
    lines = [f"image {IMAGE}: {size / 1e6:.0f} MB"]
    for layer in json.loads(podman("history", "--format", "json", IMAGE).stdout):
        if int(layer["size"]) > 1_000_000:
            lines.append(f"  layer {int(layer['size']) / 1e6:7.0f} MB  {layer['CreatedBy'].strip()[:110]}")
    du = podman("run", "--rm", "--network=host", "--ulimit", "nofile=4096:4096", "--ulimit", "nproc=4096:4096",
                "--entrypoint", "sh", IMAGE, "-c",
                f"du -sm /opt/venv {SITE}/* /srv/attnmap | sort -rn | head -16").stdout
    lines += [f"  du {row}" for row in du.splitlines()]
    return lines


def parse_ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def cold_start(workdir: Path) -> dict[str, float]:
    """One container start to /readyz, with the phases its log shows."""
    port = free_port()
    env = {key: str(value) for key, value in compose_service("app")["environment"].items()}
    env.update({"ATTNMAP_BIND": f"127.0.0.1:{port}", "ATTNMAP_DEVICE": "cpu"})
    wall_start = time.time()
    with run_container(IMAGE, workdir / "cold.log", compose_run_flags(compose_service("app")), env=env) as container:
        total = wait_for_status(f"http://127.0.0.1:{port}/readyz", container, timeout=600)
        # Both workers ready (the first answering /readyz is enough for traffic, not for the figure).
        deadline = time.monotonic() + 120
        while container.logs().count('"msg":"worker ready"') < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        log = container.logs()
    records = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    ready = [r for r in records if r.get("msg") == "worker ready"]
    first_app_line = min(parse_ts(r["ts"]) for r in records)
    first_ready = min(ready, key=lambda r: parse_ts(r["ts"]))
    loads = first_ready["load_seconds"]
    return {
        "readyz_s": total,
        "first_app_log_s": first_app_line - wall_start,  # container up + imports (torch, flask, matplotlib, app)
        "model_load_s": sum(loads.values()),
        **{f"load_{name}_s": seconds for name, seconds in loads.items()},
    }


def host_reference(workdir: Path) -> float:
    """The same Gunicorn config from the host .venv (2 workers): process start to /readyz."""
    env = {"ATTNMAP_DEVICE": "cpu", "ATTNMAP_WORKERS": "2"}
    started = time.monotonic()
    with gunicorn_server(env, workers=2, log_path=workdir / "host.log"):
        return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="attnmap-measure-"))
    print("\n".join(image_report()))
    container_runs, host_runs = [], []
    for _ in range(args.runs):
        container_runs.append(cold_start(workdir))
        host_runs.append(host_reference(workdir))
        print(f"  container {container_runs[-1]}  host {host_runs[-1]:.1f} s", flush=True)
    median = {key: statistics.median(run[key] for run in container_runs) for key in container_runs[0]}
    host = statistics.median(host_runs)
    print(f"\ncold start, median of {args.runs}: container {median['readyz_s']:.1f} s, host .venv {host:.1f} s "
          f"(ratio {median['readyz_s'] / host:.2f})")
    print("  " + ", ".join(f"{key} {value:.1f}" for key, value in median.items()))


if __name__ == "__main__":
    main()
