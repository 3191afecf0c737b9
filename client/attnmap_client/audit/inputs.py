"""What an audit measures: the image files and their regions, or the lines of a JSONL file."""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")

Box = tuple[float, float, float, float]


class InputError(ValueError):
    """Bad command-line input (a usage error: exit code 2)."""


@dataclass(frozen=True)
class TextLine:
    """One line of the ``--text`` file."""

    number: int
    """1-based line number in the file (the line's key in the summary)."""
    text: str
    query: int | str
    key: int | str
    id: str | None = None


def find_images(root: Path) -> list[str]:
    """Every PNG/JPEG/WebP file under ``root`` (recursively), as sorted POSIX paths relative to it."""
    if not root.is_dir():
        raise InputError(f"--images {root}: not a directory")
    found = [path.relative_to(root).as_posix() for path in root.rglob("*")
             if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()]
    return sorted(found)


def parse_fraction_region(text: str) -> Box:
    """``x0,y0,x1,y1`` in fractions of the image (0..1) with x1 > x0 and y1 > y0."""
    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError as exc:
        raise InputError(f"--region {text!r}: four numbers x0,y0,x1,y1 expected") from exc
    if len(values) != 4:
        raise InputError(f"--region {text!r}: four numbers x0,y0,x1,y1 expected")
    x0, y0, x1, y1 = values
    if not all(0.0 <= v <= 1.0 for v in values) or not (x1 > x0 and y1 > y0):
        raise InputError(f"--region {text!r}: fractions of the image in 0..1 with x1 > x0 and y1 > y0")
    return (x0, y0, x1, y1)


def scale_region(region: Box, width: int, height: int) -> Box:
    """A fraction region in the pixels of a ``width`` x ``height`` image."""
    x0, y0, x1, y1 = region
    return (x0 * width, y0 * height, x1 * width, y1 * height)


def _box(value: Any, where: str) -> Box:
    if isinstance(value, Mapping):
        for name in ("region", "box"):
            if name in value:
                return _box(value[name], where)
        raise InputError(f"{where}: an object needs 'region' or 'box'")
    if not isinstance(value, list | tuple) or len(value) != 4:
        raise InputError(f"{where}: a box is four numbers [x0, y0, x1, y1] in pixels")
    try:
        x0, y0, x1, y1 = (float(v) for v in value)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{where}: a box is four numbers [x0, y0, x1, y1] in pixels") from exc
    if not (x1 > x0 and y1 > y0):
        raise InputError(f"{where}: a box needs x1 > x0 and y1 > y0")
    return (x0, y0, x1, y1)


def load_boxes(path: Path) -> dict[str, Box]:
    """Read ``--boxes``: a pixel box per image, keyed by its path relative to ``--images`` (or its file name).

    JSON: ``{"a/b.png": [x0, y0, x1, y1], ...}``, values may also be objects with ``region`` or
    ``box``; or a list of ``{"path": ..., "box": [...]}``. CSV: a header with ``path,x0,y0,x1,y1``.
    """
    try:
        raw = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"--boxes {path}: {exc.strerror or exc}") from exc
    boxes: dict[str, Box] = {}
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(raw.splitlines())
        needed = {"path", "x0", "y0", "x1", "y1"}
        if reader.fieldnames is None or not needed <= set(reader.fieldnames):
            raise InputError(f"--boxes {path}: the CSV header must name path,x0,y0,x1,y1")
        for number, row in enumerate(reader, start=2):
            boxes[row["path"]] = _box([row["x0"], row["y0"], row["x1"], row["y1"]], f"--boxes {path} line {number}")
        return boxes
    try:
        document = json.loads(raw)
    except ValueError as exc:
        raise InputError(f"--boxes {path}: not JSON ({exc})") from exc
    if isinstance(document, dict):
        for name, value in document.items():
            boxes[str(name)] = _box(value, f"--boxes {path} [{name!r}]")
    elif isinstance(document, list):
        for index, item in enumerate(document):
            if not isinstance(item, Mapping) or "path" not in item:
                raise InputError(f"--boxes {path} item {index}: needs 'path'")
            boxes[str(item["path"])] = _box(item, f"--boxes {path} item {index}")
    else:
        raise InputError(f"--boxes {path}: an object or a list expected")
    return boxes


def box_for(boxes: Mapping[str, Box], relative: str) -> Box | None:
    """The box of an image by its relative path, else by its file name."""
    return boxes.get(relative) or boxes.get(relative.rsplit("/", 1)[-1])


def load_text_lines(path: Path) -> list[TextLine]:
    """Read ``--text``: JSONL with ``text``, ``query`` and ``key`` (token text or index) and an optional ``id``."""
    try:
        raw = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"--text {path}: {exc.strerror or exc}") from exc
    lines: list[TextLine] = []
    for number, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError as exc:
            raise InputError(f"--text {path} line {number}: not JSON") from exc
        if not isinstance(item, dict) or not isinstance(item.get("text"), str):
            raise InputError(f"--text {path} line {number}: an object with a 'text' string expected")
        for name in ("query", "key"):
            if not isinstance(item.get(name), str | int) or isinstance(item.get(name), bool):
                raise InputError(f"--text {path} line {number}: '{name}' must be a token text or index")
        ident = item.get("id")
        lines.append(TextLine(number=number, text=item["text"], query=item["query"], key=item["key"],
                              id=str(ident) if ident is not None else None))
    if not lines:
        raise InputError(f"--text {path}: no lines")
    return lines
