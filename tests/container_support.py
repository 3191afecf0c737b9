"""Helpers for the container tests: build the images once, run containers the way compose does.

Podman runs here with the settings this kind of build machine needs (runc, lowered ulimits, host
networking); see scripts/build-image.sh. Each container gets a unique name and is removed in
``finally``; its log is saved next to the test's files first.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
import yaml

from tests.live import ROOT

IMAGE = "localhost/attnmap:cpu"
NGINX_IMAGE = "localhost/attnmap-nginx:local"
PODMAN = ["podman", "--runtime", "runc"]
LIMITS = ["--ulimit", "nofile=4096:4096", "--ulimit", "nproc=4096:4096"]
# A full build from nothing (debootstrap, pip downloads) takes about 15 minutes here.
BUILD_TIMEOUT_S = 45 * 60


def podman(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``podman --runtime runc ARGS``; raise with its stderr when ``check`` and it fails."""
    result = subprocess.run([*PODMAN, *args], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise RuntimeError(f"podman {' '.join(args[:3])} failed ({result.returncode}): {result.stderr[-3000:]}")
    return result


def build_images(log_path: Path) -> float:
    """``scripts/build-image.sh all`` (cached layers are reused); returns the seconds it took."""
    started = time.monotonic()
    with open(log_path, "wb") as log:
        result = subprocess.run([str(ROOT / "scripts" / "build-image.sh"), "all"], cwd=ROOT, stdout=log,
                                stderr=subprocess.STDOUT, timeout=BUILD_TIMEOUT_S)
    if result.returncode != 0:
        tail = log_path.read_text(errors="replace")[-4000:]
        raise RuntimeError(f"scripts/build-image.sh failed ({result.returncode}):\n{tail}")
    return time.monotonic() - started


def compose_service(name: str) -> dict[str, Any]:
    """One service of docker-compose.yml."""
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"][name]


def compose_run_flags(service: dict[str, Any]) -> list[str]:
    """The ``podman run`` flags for a compose service's isolation settings.

    Read-only root (and no podman-added tmpfs besides the listed ones), tmpfs mounts, shared-memory
    size, dropped capabilities and security options, as docker compose would apply them. Ports,
    volumes, devices and restart policy are the caller's business (the tests use host networking).
    """
    flags: list[str] = []
    if service.get("read_only"):
        flags += ["--read-only", "--read-only-tmpfs=false"]
    for mount in service.get("tmpfs", []):
        flags += ["--tmpfs", mount]
    if "shm_size" in service:
        flags += ["--shm-size", str(service["shm_size"])]
    for capability in service.get("cap_drop", []):
        flags += ["--cap-drop", capability]
    for option in service.get("security_opt", []):
        # compose writes no-new-privileges:true; podman wants no-new-privileges.
        flags += ["--security-opt", re.sub(r"^no-new-privileges:true$", "no-new-privileges", option)]
    return flags


def grace_seconds(service: dict[str, Any]) -> int:
    """A compose service's stop_grace_period in seconds (``45s``)."""
    return int(str(service["stop_grace_period"]).rstrip("s"))


@dataclass
class Container:
    """A running container: its name, the host PID of its first process and where its log goes."""

    name: str
    log_path: Path
    started_at: float
    pid: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def logs(self) -> str:
        """Everything the container wrote so far (stdout and stderr)."""
        result = podman("logs", self.name, check=False, timeout=60)
        return result.stdout + result.stderr

    def exec(self, *command: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run a command inside the container (as its user), unchecked."""
        return podman("exec", self.name, *command, check=False, timeout=timeout)

    def inspect(self) -> dict[str, Any]:
        """``podman inspect`` of the container."""
        return json.loads(podman("inspect", self.name).stdout)[0]


@contextlib.contextmanager
def run_container(image: str, log_path: Path, flags: list[str], command: list[str] | None = None,
                  env: dict[str, str] | None = None, network: str = "host") -> Iterator[Container]:
    """``podman run -d`` with host networking and the lowered ulimits; removed (log saved) at the end."""
    name = f"attnmap-test-{uuid.uuid4().hex[:10]}"
    environment = [item for key, value in (env or {}).items() for item in ("-e", f"{key}={value}")]
    started_at = time.monotonic()
    podman("run", "-d", "--name", name, f"--network={network}", *LIMITS, *flags, *environment, image, *(command or []))
    container = Container(name, log_path, started_at)
    try:
        container.pid = int(podman("inspect", "--format", "{{.State.Pid}}", name).stdout.strip() or 0)
        yield container
    finally:
        with contextlib.suppress(Exception):
            log_path.write_text(container.logs(), encoding="utf-8")
        podman("rm", "--force", "--time", "2", name, check=False, timeout=60)


def wait_for_status(url: str, container: Container, status: int = 200, timeout: float = 300) -> float:
    """Poll ``url`` until it answers ``status``; fail early if the container stops. Returns the seconds waited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(requests.RequestException):
            if requests.get(url, timeout=2).status_code == status:
                return time.monotonic() - container.started_at
        state = podman("inspect", "--format", "{{.State.Status}}", container.name, check=False).stdout.strip()
        if state not in {"running", "created", "configured"}:
            raise RuntimeError(f"container {state}: {container.logs()[-3000:]}")
        time.sleep(0.25)
    raise TimeoutError(f"{url} did not answer {status} within {timeout:.0f} s: {container.logs()[-3000:]}")
