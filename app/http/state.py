"""Per-app state kept in ``app.extensions['attnmap']``."""

from __future__ import annotations

from dataclasses import dataclass

from flask import Flask, current_app

from app.service.config import Settings
from models.registry import ModelRegistry


@dataclass
class ServiceState:
    """Settings, the worker's model registry, and whether it should receive traffic."""

    settings: Settings
    registry: ModelRegistry
    ready: bool = False
    draining: bool = False


def state(app: Flask | None = None) -> ServiceState:
    """The state of ``app`` (default: the current app)."""
    target = app or current_app
    value: ServiceState = target.extensions["attnmap"]
    return value
