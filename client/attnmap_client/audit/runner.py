"""Run many independent requests over threads and servers, with progress, a journal and Ctrl-C.

Each finished task's record is appended to ``OUT/results.jsonl`` at once (one JSON object a
line, flushed), so ``--resume`` can skip what is done and an interrupted run loses at most
the requests in flight. Workers take tasks from one queue; worker ``i`` talks to server
``i % len(servers)`` and moves to the next server when its own cannot be reached.
"""

from __future__ import annotations

import json
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from attnmap_client.client import Client
from attnmap_client.errors import ApiError, AttnmapError, TransportError

Record = dict[str, Any]
JOURNAL = "results.jsonl"


@dataclass(frozen=True)
class Task:
    """One request of the audit: ``measure(client)`` returns the measured fields of the record."""

    key: str
    """Unique within a run: what ``--resume`` matches on."""
    base: Record
    """Fields every record of this task has (path or line, model)."""
    measure: Callable[[Client], Record]


def error_record(exc: BaseException) -> Record:
    """The ``error`` field of a failed task: the API's code, field, status and request id, or the transport's."""
    if isinstance(exc, ApiError):
        return exc.to_dict()
    if isinstance(exc, TransportError):
        return {"status": None, "code": "connection_error", "message": exc.message, "field": None, "request_id": None}
    return {"status": None, "code": "client_error", "message": str(exc)[:300], "field": None, "request_id": None}


def run_task(task: Task, clients: Sequence[Client], first: int) -> Record:
    """Measure one task, moving on to the other servers when one cannot be reached."""
    last: BaseException | None = None
    for step in range(len(clients)):
        client = clients[(first + step) % len(clients)]
        try:
            return {**task.base, **task.measure(client), "server": client.base_url, "error": None}
        except TransportError as exc:
            last = exc
        except (AttnmapError, OSError, ValueError) as exc:
            return {**task.base, "server": client.base_url, "error": error_record(exc)}
    assert last is not None
    return {**task.base, "server": None, "error": error_record(last)}


class Progress:
    """A progress line on stderr: done/total, percent, bar, rate, ETA and errors.

    On a terminal the line is redrawn in place (at most 10 times a second); otherwise (CI logs)
    a line is printed every ``log_interval`` seconds and at the end.
    """

    def __init__(self, total: int, already: int, label: str, stream: TextIO | None = None,
                 log_interval: float = 5.0, enabled: bool = True) -> None:
        self.total = total
        self.done = already
        self.already = already
        self.errors = 0
        self.label = label
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval = 0.1 if self.tty else log_interval
        self.enabled = enabled
        self.started = time.monotonic()
        self._last = 0.0

    def rate(self) -> float:
        """Tasks per second finished in this run (resumed ones do not count)."""
        elapsed = time.monotonic() - self.started
        return (self.done - self.already) / elapsed if elapsed > 0 else 0.0

    def line(self) -> str:
        """The progress line as text."""
        share = self.done / self.total if self.total else 1.0
        width = 24
        filled = int(share * width)
        bar = "#" * filled + "-" * (width - filled)
        rate = self.rate()
        remaining = self.total - self.done
        eta = _clock(remaining / rate) if rate > 0 else "--:--"
        return (f"{self.label} {self.done}/{self.total} {share:6.1%} [{bar}] {rate:6.1f}/s ETA {eta}"
                f" errors {self.errors}")

    def update(self, record: Record, force: bool = False) -> None:
        """Count one finished record and redraw when due."""
        self.done += 1
        if record.get("error"):
            self.errors += 1
        self.show(force)

    def show(self, force: bool = False) -> None:
        """Draw the line if the interval has passed (or ``force``)."""
        now = time.monotonic()
        if not self.enabled or (not force and now - self._last < self.interval):
            return
        self._last = now
        if self.tty:
            self.stream.write("\r" + self.line())
        else:
            self.stream.write(self.line() + "\n")
        self.stream.flush()

    def finish(self) -> None:
        """Final line (and the newline a terminal needs)."""
        if not self.enabled:
            return
        if self.tty:
            self.stream.write("\r" + self.line() + "\n")
        else:
            self.stream.write(self.line() + "\n")
        self.stream.flush()


def _clock(seconds: float) -> str:
    hours, rest = divmod(round(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def read_journal(out: Path) -> list[Record]:
    """Records of an earlier run in ``out`` (a torn last line, from a kill mid-write, is skipped)."""
    path = out / JOURNAL
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if isinstance(item, dict) and isinstance(item.get("task"), str):
            records.append(item)
    return records


class Interrupted(Exception):
    """The run was stopped by Ctrl-C (or SIGTERM) before every task finished."""


def run_all(tasks: Iterable[Task], clients: Sequence[Client], concurrency: int, journal: TextIO,
            progress: Progress, on_record: Callable[[Record], None]) -> None:
    """Run ``tasks`` on ``concurrency`` threads; each record goes to ``on_record`` and the journal.

    Raises :class:`Interrupted` on KeyboardInterrupt after saving every finished record; the
    requests still in flight are abandoned (their threads are daemons and stop at once when
    the process exits).
    """
    pending: queue.Queue[Task | None] = queue.Queue()
    count = 0
    for task in tasks:
        pending.put(task)
        count += 1
    finished: queue.Queue[Record] = queue.Queue()
    stop = threading.Event()

    def worker(index: int) -> None:
        while not stop.is_set():
            try:
                task = pending.get_nowait()
            except queue.Empty:
                return
            if task is None:
                return
            record = run_task(task, clients, index % len(clients))
            finished.put({"task": task.key, **record})

    threads = [threading.Thread(target=worker, args=(i,), name=f"attnmap-audit-{i}", daemon=True)
               for i in range(max(1, min(concurrency, count)))]
    for thread in threads:
        thread.start()
    received = 0
    try:
        while received < count:
            try:
                record = finished.get(timeout=0.2)
            except queue.Empty:
                progress.show()
                if not any(thread.is_alive() for thread in threads) and finished.empty():
                    break
                continue
            received += 1
            journal.write(json.dumps(record, separators=(",", ":")) + "\n")
            journal.flush()
            on_record(record)
            progress.update(record)
    except KeyboardInterrupt:
        stop.set()
        for client in clients:
            client.close()  # ends any Retry-After wait
        # Keep what already came back but was not yet written.
        while True:
            try:
                record = finished.get_nowait()
            except queue.Empty:
                break
            journal.write(json.dumps(record, separators=(",", ":")) + "\n")
            on_record(record)
            progress.update(record)
        journal.flush()
        progress.finish()
        raise Interrupted from None
    progress.finish()
