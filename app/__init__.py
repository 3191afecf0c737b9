"""attnmap: an HTTP service that renders transformer attention maps.

``create_app`` is imported lazily so that importing a light module such as ``app.attention``
(which the model side needs) does not pull in the web layer and the model registry, which
import the model side in turn.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from app.factory import create_app

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from app.factory import create_app

        return create_app
    raise AttributeError(f"module 'app' has no attribute {name!r}")
