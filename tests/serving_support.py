"""Helpers for the serving tests and the load bench: real nginx in front of real Gunicorn.

nginx runs as the current user from ``deploy/nginx.conf`` rendered for loopback: upstream and
listen addresses replaced, and the ``/tmp/nginx`` prefix (pid, temp dirs) moved into a
per-test directory. Everything is started in a new session and stopped in ``finally``.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import requests

from tests.live import GUNICORN, ROOT, free_port, stop

NGINX_CONF = ROOT / "deploy" / "nginx.conf"


def render_nginx_conf(upstream: str, listen: str, prefix: Path, source: Path = NGINX_CONF) -> str:
    """``deploy/nginx.conf`` with its deployment-specific values replaced for a local run.

    Each replaced directive must occur exactly once, so that an edit of the deploy file that the
    tests no longer understand fails loudly instead of testing something else.
    """
    text = source.read_text(encoding="utf-8")
    replacements = [
        (r"^(\s*)server app:8000;", rf"\g<1>server {upstream};"),
        (r"^(\s*)listen 8080;", rf"\g<1>listen {listen};"),
    ]
    for pattern, replacement in replacements:
        text, count = re.subn(pattern, replacement, text, flags=re.MULTILINE)
        assert count == 1, f"{pattern!r} matched {count} times in {source}"
    assert text.count("/tmp/nginx") >= 6, "expected pid and temp paths under /tmp/nginx"
    return text.replace("/tmp/nginx", str(prefix / "nginx"))


@contextlib.contextmanager
def nginx_server(nginx: str, upstream: str, workdir: Path, log_path: Path | None = None) -> Iterator[str]:
    """Run nginx in the foreground on a free loopback port in front of ``upstream``; yields its base URL."""
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    conf = workdir / "nginx.conf"
    conf.write_text(render_nginx_conf(upstream, f"127.0.0.1:{port}", workdir), encoding="utf-8")
    log = open(log_path or workdir / "nginx.log", "wb")  # noqa: SIM115 - closed below
    directives = "daemon off;"
    if os.geteuid() == 0:
        # A root master would run its workers as 'nobody', who cannot write the per-test temp dirs.
        directives += f" user {pwd.getpwuid(os.geteuid()).pw_name};"
    process = subprocess.Popen([nginx, "-e", "stderr", "-p", str(workdir), "-c", str(conf), "-g", directives],
                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 15
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"nginx exited with {process.returncode}: {Path(log.name).read_text()[-2000:]}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            if time.monotonic() > deadline:
                raise TimeoutError("nginx did not start listening")
            time.sleep(0.1)
        yield base
    finally:
        # nginx: SIGQUIT is its graceful stop; stop() falls back to SIGKILL on the group.
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGQUIT)
        stop(process, timeout=10)
        log.close()


def worker_pids(master_pid: int) -> list[int]:
    """PIDs of the Gunicorn workers (children) of ``master_pid``."""
    with contextlib.suppress(psutil.NoSuchProcess):
        return sorted(child.pid for child in psutil.Process(master_pid).children())
    return []


def wait_until_heartbeating(worker_pid: int, timeout: float = 60.0) -> None:
    """Wait until a Gunicorn worker has sent its first heartbeat (it has booted and entered its loop).

    Gunicorn's heartbeat writes ``time.monotonic()`` as the mtime of an unlinked temp file, and
    the master compares it with its own monotonic clock. Before the first heartbeat the mtime is
    the file's wall-clock creation time, far in the monotonic "future", so a worker frozen while
    still booting is never timed out: a test that freezes a worker must wait for this first.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{worker_pid}/fd"):
                target = os.readlink(f"/proc/{worker_pid}/fd/{fd}")
                if "gunicorn" in target and "(deleted)" in target:
                    mtime = os.stat(f"/proc/{worker_pid}/fd/{fd}").st_mtime
                    if mtime <= time.monotonic() + 1:  # a monotonic stamp: the worker heartbeats
                        return
        time.sleep(0.1)
    raise TimeoutError(f"worker {worker_pid} sent no heartbeat within {timeout:.0f} s")


def wait_for_workers(master_pid: int, count: int, timeout: float = 60.0, exclude: set[int] | None = None) -> list[int]:
    """Wait until the master has ``count`` workers, none of them in ``exclude``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = worker_pids(master_pid)
        if len(pids) == count and not (set(pids) & (exclude or set())):
            return pids
        time.sleep(0.2)
    raise TimeoutError(f"master {master_pid} did not reach {count} workers")


def json_lines(path: Path) -> list[dict[str, Any]]:
    """Parse the JSON lines of a mixed log file (Gunicorn's own lines are plain text)."""
    records = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                records.append(json.loads(line))
    return records


def access_record(log_path: Path, request_id: str, timeout: float = 5.0) -> dict[str, Any]:
    """The app's access-log record for ``request_id`` (waits briefly for it to be flushed)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for record in json_lines(log_path):
            if record.get("logger") == "attnmap.access" and record.get("request_id") == request_id:
                return record
        time.sleep(0.1)
    raise AssertionError(f"no access-log line for {request_id}")


def raw_request(host: str, port: int, head: bytes, body: bytes = b"", timeout: float = 10.0,
                source: tuple[str, int] | None = None) -> tuple[int, dict[str, str], bytes]:
    """Send bytes as they are and read the response until the server closes: (status, headers, body)."""
    with socket.create_connection((host, port), timeout=timeout, source_address=source) as sock:
        sock.sendall(head + body)
        chunks = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
            if _complete(b"".join(chunks)):
                break
    data = b"".join(chunks)
    head_part, _, payload = data.partition(b"\r\n\r\n")
    lines = head_part.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding") == "chunked":
        payload = _dechunk(payload)
    return status, headers, payload


def _complete(data: bytes) -> bool:
    """Whether ``data`` holds a whole response with a Content-Length (servers may linger before closing)."""
    head, found, payload = data.partition(b"\r\n\r\n")
    if not found:
        return False
    match = re.search(rb"(?im)^content-length:\s*(\d+)\s*$", head)
    return bool(match) and len(payload) >= int(match.group(1))


def _dechunk(data: bytes) -> bytes:
    out = bytearray()
    while data:
        size_line, _, rest = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += rest[:size]
        data = rest[size + 2:]
    return bytes(out)


def get_ok(url: str, **kwargs: Any) -> requests.Response:
    """GET that must answer 200."""
    response = requests.get(url, timeout=kwargs.pop("timeout", 10), **kwargs)
    assert response.status_code == 200, (response.status_code, response.text[:300])
    return response


@dataclass(frozen=True)
class Halted:
    """How a Gunicorn run that must never serve ended: exit status, every /readyz status seen, seconds."""

    returncode: int
    readyz: list[int]
    seconds: float


def run_until_halt(env: dict[str, str], log_path: Path, timeout: float = 120.0) -> Halted:
    """Start ``gunicorn -c gunicorn.conf.py`` with ``env`` on a free port and poll ``/readyz`` until the
    master exits; fails the test if it is still running after ``timeout`` seconds (it is then stopped)."""
    port = free_port()
    environment = {**os.environ, "ATTNMAP_BIND": f"127.0.0.1:{port}", **env}
    readyz: list[int] = []
    with open(log_path, "wb") as log:
        process = subprocess.Popen([GUNICORN, "-c", "gunicorn.conf.py"], cwd=ROOT, env=environment, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        started = time.monotonic()
        try:
            while process.poll() is None and time.monotonic() - started < timeout:
                with contextlib.suppress(requests.RequestException):
                    readyz.append(requests.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code)
                time.sleep(0.1)
            seconds = time.monotonic() - started
            assert process.poll() is not None, f"gunicorn still running after {timeout:.0f} s; see {log_path}"
        finally:
            stop(process)
    return Halted(returncode=process.returncode, readyz=readyz, seconds=seconds)
