"""Maps with axes, token labels and a colorbar, drawn with matplotlib's object API (never pyplot).

Building a figure with many tick labels costs hundreds of milliseconds, most of it text layout,
and the labels repeat across requests (same model, same sentence, same token list). So a
figure is laid out once per (shape, labels, size, colormap) and kept in a small LRU cache with a
snapshot of its background; a request restores the background, draws only the image and the
colorbar's value labels, and reads the pixels. Labels are literal text: ``parse_math=False``
keeps a token such as ``$x^$`` away from mathtext.

The figure is written as an RGB PNG with "Up"-filtered rows and ISA-L deflate
(:func:`app.render.photo_png.encode_rgb_up`): lossless like OpenCV's writer but about 20x faster
on these figures (0.4 ms against 7.6 ms at 512 px), for a file about 6% larger. A palette PNG
would need quantising: antialiased text and the colorbar give a figure ~760 colours.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure

from app.render.colormaps import LEVELS, palette
from app.render.figure_cache import BytesBoundedLRU
from app.render.labels import bound_label, bound_labels, bound_title
from app.render.photo_png import encode_rgb_up

_CACHE_SIZE = 8
# Laid-out figures weigh two RGBA buffers each; 96 MiB holds eight 1024 px figures or two at
# 2048 px. A 4096 px figure (about 150 MB) is never kept.
_CACHE_BYTES = 96 * 1024 * 1024
_TICKS = 5
_DPI = 100


@dataclass
class _Layout:
    figure: Figure
    canvas: FigureCanvasAgg
    image: Any
    background: Any
    tick_texts: list[Any]


_cache: BytesBoundedLRU[_Layout] = BytesBoundedLRU(_CACHE_SIZE, _CACHE_BYTES)
_lock = threading.Lock()  # matplotlib is not thread-safe; one render at a time per process


def _rgb(canvas: FigureCanvasAgg) -> np.ndarray:
    """A contiguous RGB copy of the canvas (OpenCV drops alpha ~50x faster than a strided numpy copy)."""
    return cv2.cvtColor(np.asarray(canvas.buffer_rgba()), cv2.COLOR_RGBA2RGB)


def _cmap(name: str) -> ListedColormap:
    return ListedColormap(palette(name)[:LEVELS] / 255.0)


def _visible_labels(labels: list[str], max_labels: int) -> tuple[list[int], list[str]]:
    """Every label when few, else every k-th, so layout time stays bounded."""
    step = max(1, -(-len(labels) // max_labels))
    positions = list(range(0, len(labels), step))
    return positions, [_clean_label(labels[i]) for i in positions]


def _clean_label(label: str) -> str:
    """Printable, short label text (see :mod:`app.render.labels` for how it is shortened)."""
    return bound_label(label)


def _layout_bytes(layout: _Layout) -> int:
    """What a cached layout pins: the canvas and the background snapshot, RGBA each."""
    width, height = layout.canvas.get_width_height()
    return 2 * 4 * width * height


def _build(rows: int, cols: int, row_labels: list[str] | None, col_labels: list[str] | None,
           size: int, colormap: str, max_labels: int, title: str) -> _Layout:
    inches = size / _DPI
    figure = Figure(figsize=(inches * 1.15, inches), dpi=_DPI)
    canvas = FigureCanvasAgg(figure)
    axes = figure.add_axes((0.16, 0.16, 0.66, 0.76))
    image = axes.imshow(np.zeros((rows, cols)), cmap=_cmap(colormap), vmin=0.0, vmax=1.0,
                        interpolation="nearest", aspect="auto")
    font = max(3.0, min(9.0, 0.55 * size / max(rows, cols, 1)))
    for labels, setter_ticks, setter_labels, rotation in (
        (col_labels, axes.set_xticks, axes.set_xticklabels, 90),
        (row_labels, axes.set_yticks, axes.set_yticklabels, 0),
    ):
        if labels:
            positions, texts = _visible_labels(labels, max_labels)
            setter_ticks(positions)
            setter_labels(texts, rotation=rotation, fontsize=font, parse_math=False)
    axes.set_title(title, fontsize=9, parse_math=False)
    bar_axes = figure.add_axes((0.85, 0.16, 0.03, 0.76))
    figure.colorbar(image, cax=bar_axes, ticks=[])
    tick_texts = [
        figure.text(0.895, 0.16 + 0.76 * i / (_TICKS - 1), "", fontsize=7, va="center", parse_math=False)
        for i in range(_TICKS)
    ]
    image.set_visible(False)
    canvas.draw()
    background = canvas.copy_from_bbox(figure.bbox)
    image.set_visible(True)
    return _Layout(figure, canvas, image, background, tick_texts)


def annotated_png(scaled: np.ndarray, low: float, high: float, *, size: int, colormap: str,
                  row_labels: list[str] | None, col_labels: list[str] | None, max_labels: int,
                  title: str = "", level: int = 1) -> bytes:
    """PNG of a [0, 1] map with labelled axes and a colorbar showing the ``low..high`` value range."""
    row_labels, col_labels, title = bound_labels(row_labels), bound_labels(col_labels), bound_title(title)
    key = (scaled.shape, tuple(row_labels or ()), tuple(col_labels or ()), size, colormap, max_labels, title)
    with _lock:
        layout = _cache.get(key)
        if layout is None:
            layout = _build(scaled.shape[0], scaled.shape[1], row_labels, col_labels, size, colormap, max_labels, title)
            _cache.put(key, layout, _layout_bytes(layout))
        layout.canvas.restore_region(layout.background)
        layout.image.set_data(scaled)
        layout.image.axes.draw_artist(layout.image)
        for i, text in enumerate(layout.tick_texts):
            text.set_text(f"{low + (high - low) * i / (_TICKS - 1):.3g}")
            layout.figure.draw_artist(text)
        rgb = _rgb(layout.canvas)
    return encode_rgb_up(rgb, level)


def bar_png(values: np.ndarray, labels: list[str] | None, *, size: int, colormap: str, max_labels: int,
            title: str = "", level: int = 1) -> bytes:
    """Bar chart of one query row (value per key token), for ``annotate`` with ``query``."""
    labels, title = bound_labels(labels), bound_title(title)
    inches = size / _DPI
    figure = Figure(figsize=(inches, inches * 0.5), dpi=_DPI)
    canvas = FigureCanvasAgg(figure)
    axes = figure.add_axes((0.1, 0.3, 0.87, 0.6))
    span = float(values.max() - values.min()) or 1.0
    colours = palette(colormap)[np.rint((values - values.min()) / span * (LEVELS - 1)).astype(int)] / 255.0
    axes.bar(np.arange(len(values)), values, color=colours, width=0.9)
    if labels:
        positions, texts = _visible_labels(labels, max_labels)
        axes.set_xticks(positions)
        axes.set_xticklabels(texts, rotation=90, fontsize=max(3.0, min(9.0, 0.55 * size / len(values))), parse_math=False)
    axes.set_title(title, fontsize=9, parse_math=False)
    with _lock:
        canvas.draw()
        rgb = _rgb(canvas)
    return encode_rgb_up(rgb, level)


def open_figures() -> int:
    """Figures held by the layout cache (bounded); used by leak tests and metrics."""
    return len(_cache)
