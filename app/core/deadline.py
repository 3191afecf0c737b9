"""A request's deadline, visible from inside a long stage (a forward pass, a decoding loop).

The pipeline checks the deadline between stages; a forward pass over 8,192 tokens can itself run
longer than the whole deadline (and than Gunicorn's worker timeout, which would kill the worker and
cost a model reload). So the deadline is also set here for the duration of a stage, and code inside
the stage (the capture engine's attention function, once per layer call) calls :func:`check`.

A context variable, not a global: two threads (or a test client beside a server) never see each
other's deadline, and code run with none set never stops.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from app.core.errors import Unavailable


@dataclass(frozen=True)
class Deadline:
    """``at``: the :func:`time.perf_counter` instant the request must be done by; ``seconds``: its length."""

    at: float
    seconds: float


_CURRENT: ContextVar[Deadline | None] = ContextVar("attnmap_deadline", default=None)


def exceeded(seconds: float) -> Unavailable:
    """The 503 a request gets when it runs past its deadline (between stages or inside one)."""
    return Unavailable(f"the request ran past the {seconds:g} s deadline; ask for less (fewer layers, fewer "
                       f"tokens, a smaller size) or retry", code="deadline_exceeded")


@contextmanager
def within(at: float, seconds: float) -> Iterator[None]:
    """Run the block under a deadline at perf-counter instant ``at`` (``seconds`` is for the message)."""
    token = _CURRENT.set(Deadline(at, seconds))
    try:
        yield
    finally:
        _CURRENT.reset(token)


def check() -> None:
    """Raise the deadline's 503 when the current deadline has passed; a no-op when none is set."""
    current = _CURRENT.get()
    if current is not None and time.perf_counter() > current.at:
        raise exceeded(current.seconds)
