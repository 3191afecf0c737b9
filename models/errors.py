"""Errors of the model side that are not request errors (those come from :mod:`app.core.errors`)."""

from __future__ import annotations


class ModelLoadError(RuntimeError):
    """A configured model could not be loaded; the worker must not become ready."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"model {name!r} failed to load: {reason}")
        self.name = name
