"""A typed client of the attnmap HTTP API (``POST /visualize``, ``GET /models``, ``/healthz``, ``/readyz``).

Standard library only (``http.client``). One :class:`Client` may be shared by threads: each
thread keeps its own connection, reused while the server keeps it open. ``POST /visualize``
has no side effects, so a request that met a connection the server had closed is sent again
on a fresh one.
"""

from __future__ import annotations

import base64
import http.client
import json
import socket
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypedDict, overload
from urllib.parse import urlsplit

from attnmap_client import __version__
from attnmap_client.errors import ApiError, ServiceUnavailableError, TransportError, error_from_response
from attnmap_client.types import AttentionMap, Health, ModelInfo, Readiness, RenderedMap

Method = Literal["attention", "rollout", "gradient"]
View = Literal["heatmap", "overlay", "grid", "trace"]
Head = int | Literal["mean", "max", "min"]
Box = Sequence[float]



class SelectionOptions(TypedDict, total=False):
    """The visualize options an audit passes through unchanged (``--layer``, ``--head``, ``--discard-ratio``)."""

    layer: int
    head: Head
    discard_ratio: float


_RETRY_STATUSES = (502, 503, 504)
_STALE_CONNECTION = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError,
                     http.client.BadStatusLine, ConnectionAbortedError)


class Client:
    """Talks to one attnmap server (or one load-balanced URL).

    Args:
        base_url: e.g. ``http://127.0.0.1:8000`` (a path prefix behind a proxy is kept).
        token: bearer token, when the operator set ``ATTNMAP_API_TOKENS``.
        timeout: seconds to wait for connecting and for each read.
        retries: how many times a 503 (or a proxy's 502/504) is retried, waiting ``Retry-After``.
        max_retry_wait: cap on one wait, in seconds, whatever ``Retry-After`` says.
    """

    def __init__(self, base_url: str, *, token: str | None = None, timeout: float = 60.0, retries: int = 0,
                 max_retry_wait: float = 30.0) -> None:
        parts = urlsplit(base_url.rstrip("/"))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"server URL must be http(s)://host[:port][/prefix]; got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port
        self._prefix = parts.path.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.retries = retries
        self.max_retry_wait = max_retry_wait
        self._local = threading.local()
        self._closing = threading.Event()
        self.retried = 0
        """How many 503/502/504 answers were retried so far (all threads)."""
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ public API

    def healthz(self) -> Health:
        """``GET /healthz``: liveness."""
        document = self._json("GET", "/healthz")
        return Health(status=str(document.get("status")))

    def readyz(self) -> Readiness:
        """``GET /readyz``: ready to serve (raises :class:`ServiceUnavailableError` while loading or draining)."""
        document = self._json("GET", "/readyz")
        return Readiness(status=str(document.get("status")), models=tuple(str(m) for m in document.get("models") or ()))

    def models(self) -> list[ModelInfo]:
        """``GET /models``: the models this server has loaded."""
        document = self._json("GET", "/models")
        return [ModelInfo.from_json(item) for item in document.get("models") or ()]

    def wait_ready(self, timeout: float = 60.0, interval: float = 0.5) -> Readiness:
        """Poll ``/readyz`` until it answers 200 or ``timeout`` passes (then the last error is raised)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.readyz()
            except (ServiceUnavailableError, TransportError):
                if time.monotonic() + interval > deadline:
                    raise
                time.sleep(interval)

    @overload
    def visualize(self, *, format: Literal["json"], model: str | None = ..., image: bytes | Path | None = ...,
                  text: str | None = ..., text_pair: str | None = ..., weights: Sequence[Any] | None = ...,
                  layer: int | None = ..., head: Head | None = ..., method: Method | None = ...,
                  query: int | str | None = ..., key: int | str | None = ..., view: View | None = ...,
                  colormap: str | None = ..., alpha: float | None = ..., size: int | None = ...,
                  annotate: bool | None = ..., normalize: Literal["minmax", "none"] | None = ...,
                  vmin: float | None = ..., vmax: float | None = ..., discard_ratio: float | None = ...,
                  interpolation: Literal["nearest", "bilinear", "bicubic"] | None = ..., region: Box | None = ...,
                  target: int | None = ..., target_text: str | None = ..., mask_special: bool | None = ...,
                  merge_subwords: bool | None = ..., truncate: bool | None = ..., tokens: Sequence[str] | None = ...,
                  request_id: str | None = ...) -> AttentionMap: ...

    @overload
    def visualize(self, *, format: Literal["png"] = ..., model: str | None = ..., image: bytes | Path | None = ...,
                  text: str | None = ..., text_pair: str | None = ..., weights: Sequence[Any] | None = ...,
                  layer: int | None = ..., head: Head | None = ..., method: Method | None = ...,
                  query: int | str | None = ..., key: int | str | None = ..., view: View | None = ...,
                  colormap: str | None = ..., alpha: float | None = ..., size: int | None = ...,
                  annotate: bool | None = ..., normalize: Literal["minmax", "none"] | None = ...,
                  vmin: float | None = ..., vmax: float | None = ..., discard_ratio: float | None = ...,
                  interpolation: Literal["nearest", "bilinear", "bicubic"] | None = ..., region: Box | None = ...,
                  target: int | None = ..., target_text: str | None = ..., mask_special: bool | None = ...,
                  merge_subwords: bool | None = ..., truncate: bool | None = ..., tokens: Sequence[str] | None = ...,
                  request_id: str | None = ...) -> RenderedMap: ...

    def visualize(self, *, format: Literal["png", "json"] = "png", model: str | None = None,
                  image: bytes | Path | None = None, text: str | None = None, text_pair: str | None = None,
                  weights: Sequence[Any] | None = None, layer: int | None = None, head: Head | None = None,
                  method: Method | None = None, query: int | str | None = None, key: int | str | None = None,
                  view: View | None = None, colormap: str | None = None, alpha: float | None = None,
                  size: int | None = None, annotate: bool | None = None,
                  normalize: Literal["minmax", "none"] | None = None, vmin: float | None = None,
                  vmax: float | None = None, discard_ratio: float | None = None,
                  interpolation: Literal["nearest", "bilinear", "bicubic"] | None = None, region: Box | None = None,
                  target: int | None = None, target_text: str | None = None, mask_special: bool | None = None,
                  merge_subwords: bool | None = None, truncate: bool | None = None,
                  tokens: Sequence[str] | None = None, request_id: str | None = None) -> AttentionMap | RenderedMap:
        """``POST /visualize``: give exactly one source, ``weights``; ``image`` with ``model``; or ``text`` with ``model``.

        ``image`` is the file's bytes or a path. Options left at None are not sent (the server's
        defaults apply; see openapi.yaml). ``format="json"`` returns an :class:`AttentionMap`
        (numbers and provenance, e.g. ``region_mass`` when ``region`` is given), ``"png"`` a
        :class:`RenderedMap`. Raises an :class:`~attnmap_client.errors.ApiError` subclass for
        the API's errors and :class:`~attnmap_client.errors.TransportError` when no answer came.
        """
        if isinstance(image, Path):
            image = image.read_bytes()
        body: dict[str, Any] = {
            "model": model, "text": text, "text_pair": text_pair, "weights": weights, "layer": layer, "head": head,
            "method": method, "query": query, "key": key, "view": view, "colormap": colormap, "alpha": alpha,
            "size": size, "annotate": annotate, "normalize": normalize, "vmin": vmin, "vmax": vmax,
            "discard_ratio": discard_ratio, "interpolation": interpolation,
            "region": [float(v) for v in region] if region is not None else None, "target": target,
            "target_text": target_text, "mask_special": mask_special, "merge_subwords": merge_subwords,
            "truncate": truncate, "tokens": list(tokens) if tokens is not None else None, "format": format,
            "image": base64.b64encode(image).decode("ascii") if image is not None else None,
        }
        payload = json.dumps({k: v for k, v in body.items() if v is not None}, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json"}
        if request_id is not None:
            headers["X-Request-ID"] = request_id
        _status, response_headers, data = self._request("POST", "/visualize", payload, headers)
        rid = response_headers.get("x-request-id")
        if format == "json":
            document = _decode_json(data, self.base_url)
            try:
                return AttentionMap(values=document["values"], shape=tuple(int(v) for v in document["shape"]),
                                    meta=document["meta"], request_id=rid)
            except (KeyError, TypeError, ValueError) as exc:
                raise TransportError("the answer is not an attnmap map document", url=self.base_url) from exc
        return RenderedMap(png=data, headers=response_headers, request_id=rid)

    def close(self) -> None:
        """Close this thread's connection and make pending retry waits of every thread end early."""
        self._closing.set()
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
            self._local.connection = None

    # ------------------------------------------------------------------ transport

    def _json(self, method: str, path: str) -> dict[str, Any]:
        _status, _headers, data = self._request(method, path, None, {})
        return _decode_json(data, self.base_url)

    def _connection(self) -> http.client.HTTPConnection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            connection = cls(self._host, self._port, timeout=self.timeout)
            self._local.connection = connection
        return connection

    def _drop_connection(self) -> None:
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
        self._local.connection = None

    def _request(self, method: str, path: str, body: bytes | None,
                 headers: Mapping[str, str]) -> tuple[int, dict[str, str], bytes]:
        """Send with the retry policy; returns (status, lower-cased headers, body) of a 2xx answer."""
        attempt = 0
        while True:
            status, response_headers, data = self._send(method, path, body, headers)
            if 200 <= status < 300:
                return status, response_headers, data
            error = error_from_response(status, data, response_headers)
            if status in _RETRY_STATUSES and attempt < self.retries and not self._closing.is_set():
                attempt += 1
                with self._lock:
                    self.retried += 1
                wait = error.retry_after if isinstance(error, ServiceUnavailableError) else None
                # No Retry-After (a proxy's 502): back off 0.5 s, 1 s, 2 s, ... up to the cap.
                delay = min(self.max_retry_wait, wait if wait is not None else 0.5 * 2 ** (attempt - 1))
                if self._closing.wait(delay):
                    raise error
                continue
            raise error

    def _send(self, method: str, path: str, body: bytes | None,
              headers: Mapping[str, str]) -> tuple[int, dict[str, str], bytes]:
        all_headers = {"Accept": "application/json, image/png", "User-Agent": f"attnmap-client/{__version__}",
                       **headers}
        if self.token:
            all_headers["Authorization"] = f"Bearer {self.token}"
        url = self._prefix + path
        for fresh_try in (False, True):
            connection = self._connection()
            reused = getattr(connection, "sock", None) is not None
            try:
                connection.request(method, url, body=body, headers=all_headers)
                response = connection.getresponse()
                data = response.read()
            except _STALE_CONNECTION as exc:
                self._drop_connection()
                if reused and not fresh_try:
                    continue  # the server closed a kept-alive connection: send once more on a new one
                raise TransportError(f"{self.base_url}: connection lost ({type(exc).__name__})", url=self.base_url) from exc
            except (OSError, http.client.HTTPException) as exc:
                self._drop_connection()
                reason = "timed out" if isinstance(exc, socket.timeout | TimeoutError) else str(exc) or type(exc).__name__
                raise TransportError(f"{self.base_url}: {reason}", url=self.base_url) from exc
            response_headers = {k.lower(): v for k, v in response.getheaders()}
            if response.will_close:
                self._drop_connection()
            return response.status, response_headers, data
        raise AssertionError("unreachable")


def _decode_json(data: bytes, url: str) -> dict[str, Any]:
    try:
        document = json.loads(data)
    except ValueError as exc:
        raise TransportError(f"{url}: the answer is not JSON", url=url) from exc
    if not isinstance(document, dict):
        raise TransportError(f"{url}: the answer is not a JSON object", url=url)
    return document


__all__ = ["ApiError", "Client"]
