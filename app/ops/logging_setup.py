"""JSON logs: one object per line on stderr, for the app's loggers (``attnmap.*``).

Every record becomes ``{"ts", "level", "logger", "msg", ...extras}``. ``json.dumps`` with
``ensure_ascii`` escapes control characters, newlines and non-ASCII, so a client-chosen path or
header can never forge a second log line (log injection). The access log (``attnmap.access``)
carries ids, sizes and timings only: never bodies, query strings, headers or tokens.

Gunicorn's own master/worker lines (``gunicorn.error``) stay in Gunicorn's text format: the
master must not import this package (it would import torch before fork).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Mapping
from typing import Any, TextIO

# Attributes every LogRecord has; anything else on a record came in through ``extra=``.
_STANDARD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}

_HANDLER_MARK = "_attnmap_json_handler"

MAX_FIELD_CHARS = 256


class JsonFormatter(logging.Formatter):
    """Format a record as one line of JSON with its ``extra`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        """Serialise ``record``; exceptions go in ``exc`` as text, still on one line."""
        document: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            "pid": record.process,
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                document[key] = value
        if record.exc_info:
            document["exc"] = self.formatException(record.exc_info)
        return json.dumps(document, ensure_ascii=True, default=str, separators=(",", ":"))


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at emit time (test runners swap it)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value: TextIO) -> None:
        """Ignore: the stream is always the current stderr."""


def configure_logging(level: str | None = None) -> None:
    """Send ``attnmap.*`` records to stderr as JSON; idempotent (``create_app`` may run many times).

    ``propagate`` is off so that a root handler (Gunicorn's or a test runner's) does not print
    every line twice; tests that inspect records attach their own handler to ``attnmap``.
    """
    logger = logging.getLogger("attnmap")
    if any(getattr(handler, _HANDLER_MARK, False) for handler in logger.handlers):
        return
    handler = _StderrHandler()
    setattr(handler, _HANDLER_MARK, True)
    handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)
    logger.setLevel((level or os.environ.get("ATTNMAP_LOG_LEVEL", "info")).upper())
    logger.propagate = False


def clip(value: str, limit: int = MAX_FIELD_CHARS) -> str:
    """Bound a client-controlled string before it goes into a log record."""
    return value if len(value) <= limit else value[:limit] + "..."


def log_access(fields: Mapping[str, Any]) -> None:
    """Write one access-log line (``attnmap.access``, INFO) with the given fields."""
    logging.getLogger("attnmap.access").info("request", extra=dict(fields))
