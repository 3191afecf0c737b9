"""Typed client of the attnmap HTTP API, and the ``attnmap`` command-line tool (``attnmap audit``).

Standard library only: it installs and runs where torch is absent::

    from attnmap_client import Client
    client = Client("http://127.0.0.1:8000")
    result = client.visualize(model="shapes-vit", image=Path("x.png"), region=[0, 0, 8, 8], format="json")
    print(result.region_mass, result.prediction)
"""

__version__ = "0.1.0"

from attnmap_client.client import Client
from attnmap_client.errors import (
    ApiError,
    AttnmapError,
    BadRequestError,
    MethodNotAllowedError,
    NotFoundError,
    PayloadTooLargeError,
    ServerError,
    ServiceUnavailableError,
    TransportError,
    UnauthorizedError,
    UnprocessableError,
    UnsupportedMediaError,
)
from attnmap_client.types import AttentionMap, Health, ModelInfo, Readiness, RenderedMap

__all__ = [
    "ApiError",
    "AttentionMap",
    "AttnmapError",
    "BadRequestError",
    "Client",
    "Health",
    "MethodNotAllowedError",
    "ModelInfo",
    "NotFoundError",
    "PayloadTooLargeError",
    "Readiness",
    "RenderedMap",
    "ServerError",
    "ServiceUnavailableError",
    "TransportError",
    "UnauthorizedError",
    "UnprocessableError",
    "UnsupportedMediaError",
    "__version__",
]
