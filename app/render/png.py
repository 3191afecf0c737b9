"""PNG encoding tuned for attention maps.

A colour-mapped map has at most 256 colours, so it is written as an indexed PNG (one byte per
pixel instead of three). Maps are upscaled by repeating each cell into a block, and the PNG
row filters are chosen from that structure: a row equal to the one above gets "Up" (all zeros),
the first row of a block gets "Sub" (zero except where a block starts). The filtered rows are
built straight from the small map, and the deflate stream, mostly zeros, goes through ISA-L,
several times faster than zlib at the same ratio.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

try:  # ISA-L's deflate; the zlib fallback writes PNGs with identical pixels, only slower.
    from isal import isal_zlib

    compress = isal_zlib.compress
except ImportError:  # pragma: no cover - isal ships wheels for every platform we build for
    compress = zlib.compress

SIGNATURE = b"\x89PNG\r\n\x1a\n"
_IEND = struct.pack(">I", 0) + b"IEND" + struct.pack(">I", zlib.crc32(b"IEND"))
_FILTER_SUB = 1
_FILTER_UP = 2


def chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, type, data and CRC (shared with :mod:`app.render.photo_png`)."""
    # The CRC covers type and data; chaining it avoids concatenating (copying) a large IDAT first.
    crc = zlib.crc32(data, zlib.crc32(kind)) & 0xFFFFFFFF
    return b"".join((struct.pack(">I", len(data)), kind, data, struct.pack(">I", crc)))


def block_counts(cells: int, pixels: int) -> np.ndarray:
    """How many output pixels each of ``cells`` gets so that they add up to exactly ``pixels``.

    The same few (cells, pixels) pairs come back on every request, so the result is cached and
    returned read-only.
    """
    return _block_counts(int(cells), int(pixels))


@lru_cache(maxsize=512)
def _block_counts(cells: int, pixels: int) -> np.ndarray:
    edges = np.round(np.linspace(0, pixels, cells + 1)).astype(np.int64)
    counts = np.diff(edges)
    counts.setflags(write=False)
    return counts


@lru_cache(maxsize=64)
def _palette_chunk(palette: bytes) -> bytes:
    return chunk(b"PLTE", palette)


def _indexed_png(width: int, height: int, filtered: bytes | np.ndarray, palette: np.ndarray, level: int) -> bytes:
    header = struct.pack(">IIBBBBB", width, height, 8, 3, 0, 0, 0)
    return b"".join(
        (
            SIGNATURE,
            chunk(b"IHDR", header),
            _palette_chunk(np.ascontiguousarray(palette, dtype=np.uint8).tobytes()),
            chunk(b"IDAT", compress(filtered, level)),
            _IEND,
        )
    )


@dataclass(frozen=True)
class _BlockLayout:
    """Where the blocks of one (row counts, column counts) pair go; shared by every map of that shape."""

    width: int
    height: int
    kept_rows: np.ndarray | None  # cell rows / columns with at least one pixel, or None when all have
    kept_cols: np.ndarray | None
    block_starts: np.ndarray  # scanline byte offset (after the filter byte) where each column block starts
    row_template: np.ndarray  # per output row: the block row whose first row it is, or the "Up" row after them


@lru_cache(maxsize=256)
def _block_layout(row_counts: bytes, col_counts: bytes) -> _BlockLayout:
    rows = np.frombuffer(row_counts, dtype=np.int64)
    cols = np.frombuffer(col_counts, dtype=np.int64)
    # Blocks of zero pixels (more cells than pixels) vanish from the image, as with np.repeat.
    kept_rows = None if (rows > 0).all() else np.flatnonzero(rows > 0)
    kept_cols = None if (cols > 0).all() else np.flatnonzero(cols > 0)
    rows, cols = rows[rows > 0], cols[cols > 0]
    block_starts = 1 + np.concatenate(([0], np.cumsum(cols)[:-1]))
    row_template = np.full(int(rows.sum()), len(rows), dtype=np.intp)
    row_template[np.concatenate(([0], np.cumsum(rows)[:-1]))] = np.arange(len(rows))
    for array in (kept_rows, kept_cols, block_starts, row_template):
        if array is not None:
            array.setflags(write=False)
    return _BlockLayout(int(cols.sum()), int(rows.sum()), kept_rows, kept_cols, block_starts, row_template)


def encode_blocks(cells: np.ndarray, row_counts: np.ndarray, col_counts: np.ndarray, palette: np.ndarray, level: int = 1) -> bytes:
    """Indexed PNG of ``cells`` (uint8 ``[h, w]``) with cell (i, j) drawn ``row_counts[i]`` x ``col_counts[j]`` px.

    Equivalent to encoding ``np.repeat(np.repeat(cells, row_counts, 0), col_counts, 1)`` but the
    filtered scanlines are built from the small map directly: one "Sub" row per block row (zero
    except where a block starts) and one all-zero "Up" row, gathered into place. Everything that
    depends only on the block sizes is computed once per shape and cached.
    """
    layout = _block_layout(np.asarray(row_counts, dtype=np.int64).tobytes(), np.asarray(col_counts, dtype=np.int64).tobytes())
    cells = np.ascontiguousarray(cells, dtype=np.uint8)
    if layout.kept_rows is not None:
        cells = cells[layout.kept_rows]
    if layout.kept_cols is not None:
        cells = cells[:, layout.kept_cols]
    block_rows = cells.shape[0]
    templates = np.zeros((block_rows + 1, layout.width + 1), dtype=np.uint8)
    templates[:block_rows, 0] = _FILTER_SUB
    # Sub filter of an upscaled row: the cell difference at each block start (uint8 wraps modulo 256).
    templates[:block_rows, layout.block_starts[0]] = cells[:, 0]
    templates[:block_rows, layout.block_starts[1:]] = cells[:, 1:] - cells[:, :-1]
    templates[block_rows, 0] = _FILTER_UP
    return _indexed_png(layout.width, layout.height, templates[layout.row_template], palette, level)


def encode_indexed(indices: np.ndarray, palette: np.ndarray, level: int = 1) -> bytes:
    """Indexed PNG of an arbitrary uint8 ``[H, W]`` index image (grids, strips with gaps)."""
    rows = np.ascontiguousarray(indices, dtype=np.uint8)
    height, width = rows.shape
    filtered = np.empty((height, width + 1), dtype=np.uint8)
    same_as_above = np.zeros(height, dtype=bool)
    same_as_above[1:] = (rows[1:] == rows[:-1]).all(axis=1)
    filtered[:, 0] = np.where(same_as_above, _FILTER_UP, _FILTER_SUB)
    filtered[:, 1] = rows[:, 0]
    filtered[:, 2:] = rows[:, 1:] - rows[:, :-1]
    filtered[same_as_above, 1:] = 0
    return _indexed_png(width, height, filtered, palette, level)

