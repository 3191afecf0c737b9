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

import cv2
import numpy as np

try:  # ISA-L's deflate; the zlib fallback writes identical PNGs, only slower.
    from isal import isal_zlib

    _compress = isal_zlib.compress
except ImportError:  # pragma: no cover - isal ships wheels for every platform we build for
    _compress = zlib.compress

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_FILTER_SUB = 1
_FILTER_UP = 2


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def block_counts(cells: int, pixels: int) -> np.ndarray:
    """How many output pixels each of ``cells`` gets so that they add up to exactly ``pixels``."""
    edges = np.round(np.linspace(0, pixels, cells + 1)).astype(np.int64)
    return np.diff(edges)


def _indexed_png(width: int, height: int, filtered: bytes, palette: np.ndarray, level: int) -> bytes:
    header = struct.pack(">IIBBBBB", width, height, 8, 3, 0, 0, 0)
    return b"".join(
        (
            _SIGNATURE,
            _chunk(b"IHDR", header),
            _chunk(b"PLTE", np.ascontiguousarray(palette, dtype=np.uint8).tobytes()),
            _chunk(b"IDAT", _compress(filtered, level)),
            _chunk(b"IEND", b""),
        )
    )


def encode_blocks(cells: np.ndarray, row_counts: np.ndarray, col_counts: np.ndarray, palette: np.ndarray, level: int = 1) -> bytes:
    """Indexed PNG of ``cells`` (uint8 ``[h, w]``) with cell (i, j) drawn ``row_counts[i]`` x ``col_counts[j]`` px.

    Equivalent to encoding ``np.repeat(np.repeat(cells, row_counts, 0), col_counts, 1)`` but the
    filtered scanlines are built from the small map directly.
    """
    cells = np.ascontiguousarray(cells, dtype=np.uint8)
    keep_rows = row_counts > 0
    cells, row_counts = cells[keep_rows], row_counts[keep_rows]
    keep_cols = col_counts > 0
    cells, col_counts = cells[:, keep_cols], col_counts[keep_cols]
    height, width = int(row_counts.sum()), int(col_counts.sum())
    # Sub filter of an upscaled row: the cell difference at each block start, zero elsewhere.
    diffs = np.empty_like(cells)
    diffs[:, 0] = cells[:, 0]
    diffs[:, 1:] = cells[:, 1:] - cells[:, :-1]
    starts = np.concatenate(([0], np.cumsum(col_counts)[:-1]))
    first_rows = np.zeros((cells.shape[0], width + 1), dtype=np.uint8)
    first_rows[:, 0] = _FILTER_SUB
    first_rows[:, 1 + starts] = diffs
    filtered = np.zeros((height, width + 1), dtype=np.uint8)
    filtered[:, 0] = _FILTER_UP
    row_starts = np.concatenate(([0], np.cumsum(row_counts)[:-1]))
    filtered[row_starts] = first_rows
    return _indexed_png(width, height, filtered.tobytes(), palette, level)


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
    return _indexed_png(width, height, filtered.tobytes(), palette, level)


def encode_rgb(image: np.ndarray, level: int = 1) -> bytes:
    """Encode a uint8 RGB ``[H, W, 3]`` image (overlays, annotated figures) with OpenCV."""
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, level])
    if not ok:  # pragma: no cover - OpenCV only fails on invalid arrays, which callers never pass
        raise RuntimeError("PNG encoding failed")
    return encoded.tobytes()
