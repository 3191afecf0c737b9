"""The web page at ``GET /``: static files, page security headers and the built-in examples.

The page (``app/static``) is plain HTML, CSS and JavaScript modules with no build step. It only
calls the public API with relative URLs, so it works behind a proxy and under a path prefix.
``GET /examples`` lists the example images shipped with the built-in models plus sample
sentences; ``GET /examples/<name>`` serves one of those images, looked up by name in that
listing (a request never supplies a path).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, current_app, send_file

from app.core.errors import NotFound
from app.http.responses import json_response
from app.http.state import state
from models.registry import BUILTIN_DIR

STATIC_DIR = Path(__file__).resolve().parents[1] / "static"
web = Blueprint("web", __name__, static_folder=STATIC_DIR, static_url_path="/assets")

# Only the page's own files: no inline script or style, no third-party origin, no framing.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' blob: data:; script-src 'self'; style-src 'self'; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'self'; form-action 'self'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}

# Where the examples are: ``app.service.config`` key (tests), else this environment variable, else the
# built-in models' examples folder.
EXAMPLES_DIR_KEY = "ATTNMAP_EXAMPLES_DIR"
DEFAULT_EXAMPLES_DIR = BUILTIN_DIR / "examples"
EXAMPLE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp"}
_EXAMPLE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}\.(?:png|jpe?g|webp)$")
MAX_EXAMPLES = 64
MAX_EXAMPLE_BYTES = 10 * 1024 * 1024

SAMPLE_SENTENCES = (
    "He never smoked.",
    "The animal didn't cross the street because it was too tired.",
    "The keys to the cabinet are on the table.",
)
# Pairs of built-in models worth seeing side by side on the same picture.
COMPARISONS = (
    {
        "title": "Clean vs shortcut",
        "models": ["shapes-vit", "shapes-vit-shortcut"],
        "labels": ["clean", "shortcut"],
        "note": "The same picture through a model trained on clean shapes and one trained with a "
                "corner marker that gives the answer away: watch where each one looks. The demo starts "
                "on the gradient method, where the difference is clearest.",
        # Measured on the shipped marked example: the shortcut model puts 86% of its gradient map
        # on the marker corner, the clean one 7%; last-layer attention puts 6% and 31%.
        "method": "gradient",
    },
)


@dataclass(frozen=True)
class Example:
    """One example image: its public name, where it lives, and what boxes.json says about it."""

    name: str
    path: Path
    info: dict[str, Any]

    def as_json(self) -> dict[str, Any]:
        """The entry ``GET /examples`` shows (a relative URL, never the file path)."""
        return {"name": self.name, "url": f"examples/{self.name}", **self.info}


def examples_dir() -> Path:
    """Where the example images are (``ATTNMAP_EXAMPLES_DIR`` in the app config or environment overrides)."""
    configured = current_app.config.get(EXAMPLES_DIR_KEY) or os.environ.get(EXAMPLES_DIR_KEY)
    return Path(configured) if configured else DEFAULT_EXAMPLES_DIR


def list_examples(directory: Path) -> dict[str, Example]:
    """Example images in ``directory`` by name: plain files with a safe name and an image suffix."""
    if not directory.is_dir():
        return {}
    annotations = _read_annotations(directory / "boxes.json")
    found: dict[str, Example] = {}
    for path in sorted(directory.iterdir()):
        if len(found) >= MAX_EXAMPLES:
            break
        if not _EXAMPLE_NAME.match(path.name) or path.is_symlink() or not path.is_file():
            continue
        if path.stat().st_size > MAX_EXAMPLE_BYTES:
            continue
        info = annotations.get(path.name) or annotations.get(path.stem) or {}
        found[path.name] = Example(path.name, path, info)
    return found


def _read_annotations(path: Path) -> dict[str, dict[str, Any]]:
    """What boxes.json says per image: the object's box ``[x0, y0, x1, y1]``, the shortcut marker's box
    if one was drawn, and a few short strings.

    Accepted shapes: ``{"name.png": [x0, y0, x1, y1]}``, ``{"name.png": {"box": [...], "label": ...}}``
    or a list of such objects with a ``file``/``name`` key. Anything else is ignored.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if isinstance(data, dict) and isinstance(data.get("images"), list | dict):
        data = data["images"]
    entries: dict[str, Any] = {}
    if isinstance(data, dict):
        entries = data
    elif isinstance(data, list):
        for item in data:
            if isinstance(item, dict):
                key = item.get("file") or item.get("name") or item.get("image")
                if isinstance(key, str):
                    entries[key] = item
    return {str(key): _clean_annotation(value) for key, value in entries.items()}


def _clean_annotation(value: Any) -> dict[str, Any]:
    """Keep only numeric boxes and short string (or boolean) fields from one boxes.json entry."""
    if isinstance(value, list):
        value = {"box": value}
    if not isinstance(value, dict):
        return {}
    clean: dict[str, Any] = {}
    for key, names in (("box", ("box", "bbox", "object_box")), ("marker_box", ("marker_box",))):
        box = next((value[name] for name in names if name in value), None)
        if isinstance(box, list) and len(box) == 4 and all(isinstance(v, int | float) and not isinstance(v, bool) for v in box):
            clean[key] = [float(v) for v in box]
    for key in ("label", "shape", "title", "note", "marker"):
        item = value.get(key)
        if (isinstance(item, str) and len(item) <= 200) or isinstance(item, bool):
            clean[key] = item
    return clean


@web.get("/")
def index() -> Response:
    """The page itself."""
    response = web.send_static_file("index.html")
    response.headers["Cache-Control"] = "no-cache"
    return response


@web.get("/examples")
def examples() -> Response:
    """Example images of the built-in models, sample sentences and model pairs to compare."""
    loaded = set(state().registry.names())
    comparisons = [pair for pair in COMPARISONS if all(name in loaded for name in pair["models"])]
    images = [example.as_json() for example in list_examples(examples_dir()).values()]
    return json_response({"images": images, "sentences": list(SAMPLE_SENTENCES), "comparisons": comparisons})


@web.get("/examples/<name>")
def example_image(name: str) -> Response:
    """One example image, found by name in the listing; anything else is a JSON 404."""
    example = list_examples(examples_dir()).get(name)
    if example is None:
        raise NotFound("no such example; GET /examples lists them", code="unknown_example")
    response = send_file(example.path, mimetype=EXAMPLE_TYPES[example.path.suffix.lower()], conditional=True)
    response.headers["Cache-Control"] = "no-cache"
    return response


@web.after_request
def _asset_caching(response: Response) -> Response:
    """Page files revalidate (ETag) instead of being stored forever or never."""
    response.headers.setdefault("Cache-Control", "no-cache")
    return response


@web.after_app_request
def _page_security_headers(response: Response) -> Response:
    """Every HTML document this app sends gets the page's security headers."""
    if response.mimetype == "text/html":
        for name, value in PAGE_HEADERS.items():
            response.headers.setdefault(name, value)
    return response
