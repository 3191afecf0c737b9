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
from matplotlib.colors import Colormap, ListedColormap
from matplotlib.figure import Figure

from app.render.colormaps import LEVELS, masked_colour, palette
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


def _cmap(name: str) -> Colormap:
    red, green, blue = masked_colour(name)
    # "bad" (masked) cells of a causal map get the masked colour, never a colormap level.
    return ListedColormap(palette(name)[:LEVELS] / 255.0).with_extremes(bad=(red / 255.0, green / 255.0, blue / 255.0))


def _visible_labels(labels: list[str], max_labels: int) -> tuple[list[int], list[str]]:
    """Every label when few, else every k-th, so layout time stays bounded."""
    step = max(1, -(-len(labels) // max_labels))
    positions = list(range(0, len(labels), step))
    return positions, [_clean_label(labels[i]) for i in positions]


_WHITESPACE_GLYPHS = {"\n": "\u21b5", "\r": "\u21b5", "\t": "\u21e5"}


def _clean_label(label: str) -> str:
    """Printable, short label text (see :mod:`app.render.labels` for how it is shortened).

    Line breaks and tabs are common tokens of decoder LLMs: they show as arrows, not as the
    replacement mark.
    """
    return bound_label("".join(_WHITESPACE_GLYPHS.get(ch, ch) for ch in label[:64]))


def _clean_labels(labels: list[str] | None) -> list[str] | None:
    """:func:`_clean_label` for every label of an axis (``None`` stays ``None``)."""
    return None if labels is None else [_clean_label(label) for label in labels]


def _layout_bytes(layout: _Layout) -> int:
    """What a cached layout pins: the canvas and the background snapshot, RGBA each."""
    width, height = layout.canvas.get_width_height()
    return 2 * 4 * width * height


def _label_points(cell_px: float, size: int) -> float:
    """Tick label size in points: as large as a cell allows (with some air), at most 9 pt per 512 px."""
    return max(3.0, min(9.0 * max(1.0, size / 512), 20.0, cell_px * 0.8 * 72 / _DPI))


def readable_labels(size: int, max_labels: int) -> int:
    """How many token labels fit along an axis of an annotated map ``size`` px tall at >= 6 pt.

    Beyond this (or ``max_labels``) neighbouring tokens are pooled for display (the title says so).
    """
    axis_px = 0.74 * size
    per_label_px = 6.0 / 0.8 * _DPI / 72  # a 6 pt label needs a cell of about 10 px
    return max(8, min(max_labels, int(axis_px / per_label_px)))


def _build(rows: int, cols: int, row_labels: list[str] | None, col_labels: list[str] | None,
           size: int, colormap: str, max_labels: int, title: str,
           axis_titles: tuple[str, str] = ("query", "key")) -> _Layout:
    # Everything is measured in pixels of a (1.15 size) x size figure: fonts, colorbar and margins
    # grow with ``size`` instead of staying at their 512 px values.
    width_px, height_px = size * 1.15, float(size)
    scale = max(1.0, size / 512)
    text_pt = min(9.0 * scale, 24.0)
    text_px = text_pt * _DPI / 72
    figure = Figure(figsize=(width_px / _DPI, height_px / _DPI), dpi=_DPI)
    canvas = FigureCanvasAgg(figure)
    cell_px = min(0.74 * height_px / max(rows, 1), 0.66 * width_px / max(cols, 1))
    label_pt = _label_points(cell_px, size)
    label_px = label_pt * _DPI / 72

    def margin(labels: list[str] | None) -> float:
        if not labels:
            return text_px * 2.5
        longest = max(len(text) for text in _visible_labels(labels, max_labels)[1])
        return longest * label_px * 0.62 + label_px + text_px * 2.2

    left = min(0.3 * width_px, margin(row_labels))
    bottom = min(0.3 * height_px, margin(col_labels))
    top = text_px * 2.4
    bar_px = max(10.0, 0.025 * width_px)
    right = bar_px + text_px * 6.2  # room for a value label such as "3.59e-05"
    axes_box = (left / width_px, bottom / height_px, 1 - (left + right) / width_px, 1 - (bottom + top) / height_px)
    axes = figure.add_axes(axes_box)
    image = axes.imshow(np.zeros((rows, cols)), cmap=_cmap(colormap), vmin=0.0, vmax=1.0,
                        interpolation="nearest", aspect="auto")
    for labels, setter_ticks, setter_labels, rotation in (
        (col_labels, axes.set_xticks, axes.set_xticklabels, 90),
        (row_labels, axes.set_yticks, axes.set_yticklabels, 0),
    ):
        if labels:
            positions, texts = _visible_labels(labels, max_labels)
            setter_ticks(positions)
            setter_labels(texts, rotation=rotation, fontsize=label_pt, parse_math=False)
        else:
            setter_ticks([])
    axes.tick_params(length=max(2.0, label_px * 0.3), width=0.6)
    row_title, col_title = axis_titles
    if row_labels:
        axes.set_ylabel(row_title, fontsize=text_pt, parse_math=False)
    axes.set_xlabel(col_title, fontsize=text_pt, parse_math=False)
    axes.set_title(title, fontsize=text_pt, parse_math=False)
    bar_left = axes_box[0] + axes_box[2] + 0.6 * text_px / width_px
    bar_axes = figure.add_axes((bar_left, axes_box[1], bar_px / width_px, axes_box[3]))
    figure.colorbar(image, cax=bar_axes, ticks=[])
    tick_texts = [
        figure.text(bar_left + (bar_px + 0.4 * text_px) / width_px, axes_box[1] + axes_box[3] * i / (_TICKS - 1), "",
                    fontsize=text_pt * 0.85, va="center", parse_math=False)
        for i in range(_TICKS)
    ]
    image.set_visible(False)
    canvas.draw()
    background = canvas.copy_from_bbox(figure.bbox)
    image.set_visible(True)
    return _Layout(figure, canvas, image, background, tick_texts)


def _release(figure: Figure, canvas: FigureCanvasAgg) -> None:
    """Free a figure's pixel buffer now, for a figure that is not kept.

    A matplotlib figure is a web of reference cycles (figure, canvas, axes, artists), so dropping
    the last reference does not free it: only the cyclic garbage collector's next *full* pass
    does, and in a worker holding models that comes only after a few figures' worth of new
    objects. Meanwhile each figure pins its renderer, an RGBA buffer of the canvas (77 MB at
    4096 px), through the canvas and every Text drawn with it (``Text._renderer``). Dropping those
    references frees the buffer at once; the rest of the cycle is small and waits for the collector.
    """
    from matplotlib.text import Text

    for text in figure.findobj(Text):
        text._renderer = None  # type: ignore[attr-defined]  # set by Text.draw, read only during a draw
    canvas.__dict__.pop("renderer", None)
    canvas._lastKey = None  # the next get_renderer() (there is none) would build a new buffer
    figure.clear()


def annotated_png(scaled: np.ndarray, low: float, high: float, *, size: int, colormap: str,
                  row_labels: list[str] | None, col_labels: list[str] | None, max_labels: int,
                  title: str = "", level: int = 1, axis_titles: tuple[str, str] = ("query", "key"),
                  masked: np.ndarray | None = None) -> bytes:
    """PNG of a [0, 1] map with labelled axes and a colorbar showing the ``low..high`` value range.

    ``masked`` (bool, same shape) cells are drawn in the colormap's masked colour, not its low end.
    """
    row_labels, col_labels, title = _clean_labels(row_labels), _clean_labels(col_labels), bound_title(title)
    key = (scaled.shape, tuple(row_labels or ()), tuple(col_labels or ()), size, colormap, max_labels, title, axis_titles)
    with _lock:
        layout = _cache.get(key)
        kept = True
        if layout is None:
            layout = _build(scaled.shape[0], scaled.shape[1], row_labels, col_labels, size, colormap, max_labels, title,
                            axis_titles)
            kept = _cache.put(key, layout, _layout_bytes(layout))
        layout.canvas.restore_region(layout.background)
        layout.image.set_data(scaled if masked is None else np.ma.masked_array(scaled, mask=masked))
        layout.image.axes.draw_artist(layout.image)
        for i, text in enumerate(layout.tick_texts):
            text.set_text(f"{low + (high - low) * i / (_TICKS - 1):.3g}")
            layout.figure.draw_artist(text)
        rgb = _rgb(layout.canvas)
        if not kept:  # too heavy for the cache (a 4096 px figure): its two buffers go now, not at the next full GC
            layout.background = None
            _release(layout.figure, layout.canvas)
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
        _release(figure, canvas)  # never cached: free its buffer now (see _release)
    return encode_rgb_up(rgb, level)


def open_figures() -> int:
    """Figures held by the layout cache (bounded); used by leak tests and metrics."""
    return len(_cache)
