"""Optimised PNG encoders keep every pixel: decoded output equals the plain, obvious computation.

* ``encode_blocks`` (filtered scanlines built from the small map, ISA-L deflate) decodes, with
  Pillow, to ``np.repeat(np.repeat(cells, rows, 0), cols, 1)`` for any shape and any block sizes,
  including sizes that do not divide, blocks of zero pixels and 1-pixel maps; its deflate input
  is byte-for-byte what the original implementation (kept below as the oracle) produced.
* ``encode_indexed`` and the RGB encoder of annotated figures decode to their input.
* The annotated figure after the encoder change has the same pixels as OpenCV's PNG writer gave.
"""

from __future__ import annotations

import io
import struct
import zlib

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from app.render import annotated, plain
from app.render.colormaps import BLANK_INDEX, palette
from app.render.photo_png import encode_rgb_up
from app.render.png import block_counts, encode_blocks, encode_indexed

PALETTE = palette("viridis")


def decode_indices(data: bytes) -> np.ndarray:
    """Palette indices of an indexed PNG, decoded by Pillow (not by our code)."""
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG" and image.mode == "P"
    return np.asarray(image)


def decode_rgb(data: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG"
    return np.asarray(image.convert("RGB"))


def idat_payload(data: bytes) -> bytes:
    """The inflated IDAT stream (filter bytes + scanlines) of a PNG."""
    position, chunks = 8, []
    while position < len(data):
        (length,) = struct.unpack(">I", data[position:position + 4])
        kind = data[position + 4:position + 8]
        if kind == b"IDAT":
            chunks.append(data[position + 8:position + 8 + length])
        position += 12 + length
    return zlib.decompress(b"".join(chunks))


def reference_filtered(cells: np.ndarray, row_counts: np.ndarray, col_counts: np.ndarray) -> bytes:
    """The original encode_blocks scanline construction (before the layout cache and row gather)."""
    cells = np.ascontiguousarray(cells, dtype=np.uint8)
    keep_rows = row_counts > 0
    cells, row_counts = cells[keep_rows], row_counts[keep_rows]
    keep_cols = col_counts > 0
    cells, col_counts = cells[:, keep_cols], col_counts[keep_cols]
    height, width = int(row_counts.sum()), int(col_counts.sum())
    diffs = np.empty_like(cells)
    diffs[:, 0] = cells[:, 0]
    diffs[:, 1:] = cells[:, 1:] - cells[:, :-1]
    starts = np.concatenate(([0], np.cumsum(col_counts)[:-1]))
    first_rows = np.zeros((cells.shape[0], width + 1), dtype=np.uint8)
    first_rows[:, 0] = 1
    first_rows[:, 1 + starts] = diffs
    filtered = np.zeros((height, width + 1), dtype=np.uint8)
    filtered[:, 0] = 2
    row_starts = np.concatenate(([0], np.cumsum(row_counts)[:-1]))
    filtered[row_starts] = first_rows
    return filtered.tobytes()


def check_blocks(cells: np.ndarray, row_counts: np.ndarray, col_counts: np.ndarray) -> None:
    data = encode_blocks(cells, row_counts, col_counts, PALETTE)
    expected = np.repeat(np.repeat(cells, row_counts, 0), col_counts, 1)
    decoded = decode_indices(data)
    assert decoded.shape == expected.shape
    np.testing.assert_array_equal(decoded, expected)
    np.testing.assert_array_equal(decode_rgb(data), PALETTE[expected])
    assert idat_payload(data) == reference_filtered(cells, np.asarray(row_counts), np.asarray(col_counts))


@pytest.mark.parametrize(("rows", "cols", "height", "width"), [
    (64, 64, 512, 512),     # the benchmark case: 8 px blocks
    (64, 64, 500, 333),     # sizes that do not divide: blocks of 7 and 8, 5 and 6 px
    (3, 7, 100, 33),
    (1, 1, 1, 1),
    (1, 9, 64, 512),        # a strip
    (9, 1, 512, 64),
    (5, 5, 5, 5),           # 1 px blocks
    (200, 3, 512, 16),
])
def test_encode_blocks_equals_repeat(rows: int, cols: int, height: int, width: int) -> None:
    cells = np.random.default_rng(rows * 1000 + cols).integers(0, 256, (rows, cols), dtype=np.uint8)
    check_blocks(cells, block_counts(rows, height), block_counts(cols, width))


def test_encode_blocks_drops_zero_sized_blocks() -> None:
    """More cells than pixels gives zero-pixel blocks: they vanish, as with np.repeat."""
    cells = np.random.default_rng(1).integers(0, 256, (64, 64), dtype=np.uint8)
    check_blocks(cells, block_counts(64, 37), block_counts(64, 50))
    check_blocks(cells[:3, :4], np.array([0, 2, 0]), np.array([1, 0, 0, 3]))


def test_block_counts_are_cached_and_read_only() -> None:
    counts = block_counts(64, 500)
    assert counts is block_counts(64, 500)
    assert counts.sum() == 500 and not counts.flags.writeable
    with pytest.raises(ValueError):
        counts[0] = 1


@settings(max_examples=150, deadline=None)
@given(
    st.integers(1, 40), st.integers(1, 40), st.integers(1, 300), st.integers(1, 300),
    st.integers(0, 2**32 - 1),
)
def test_encode_blocks_property(rows: int, cols: int, height: int, width: int, seed: int) -> None:
    cells = np.random.default_rng(seed).integers(0, 256, (rows, cols), dtype=np.uint8)
    check_blocks(cells, block_counts(rows, height), block_counts(cols, width))


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 30), st.integers(1, 30), st.lists(st.integers(0, 5), min_size=30, max_size=30),
       st.lists(st.integers(0, 5), min_size=30, max_size=30), st.integers(0, 2**32 - 1))
def test_encode_blocks_arbitrary_counts(rows: int, cols: int, row_counts: list[int], col_counts: list[int], seed: int) -> None:
    """Any non-negative block sizes, not only those block_counts produces."""
    r, c = np.array(row_counts[:rows]), np.array(col_counts[:cols])
    if r.sum() == 0 or c.sum() == 0:
        return  # an empty image is not a PNG
    cells = np.random.default_rng(seed).integers(0, 256, (rows, cols), dtype=np.uint8)
    check_blocks(cells, r, c)


@settings(max_examples=80, deadline=None)
@given(st.integers(1, 64), st.integers(1, 64), st.integers(0, 2**32 - 1), st.booleans())
def test_encode_indexed_roundtrip(height: int, width: int, seed: int, repeated_rows: bool) -> None:
    rng = np.random.default_rng(seed)
    indices = rng.integers(0, 256, (height, width), dtype=np.uint8)
    if repeated_rows:
        indices = np.repeat(indices[: max(1, height // 4)], 4, axis=0)[:height]
        indices[-1:, :] = BLANK_INDEX
    np.testing.assert_array_equal(decode_indices(encode_indexed(indices, PALETTE)), indices)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 80), st.integers(1, 80), st.integers(0, 2**32 - 1), st.integers(0, 3))
def test_rgb_encoders_roundtrip(height: int, width: int, seed: int, level: int) -> None:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    image[: height // 2] = image[:1]  # repeated rows, as in figures
    np.testing.assert_array_equal(decode_rgb(encode_rgb_up(image, level)), image)


@pytest.mark.parametrize("size", [200, 512, 777])
def test_heatmap_png_matches_repeat_of_colour_indices(size: int) -> None:
    values = np.random.default_rng(size).random((64, 48))
    data = plain.heatmap_png(values, size, "viridis", 1)
    height, width = plain.output_shape(64, 48, size)
    cells = np.rint(values * 254).astype(np.uint8)
    expected = np.repeat(np.repeat(cells, block_counts(64, height), 0), block_counts(48, width), 1)
    np.testing.assert_array_equal(decode_indices(data), expected)


def test_annotated_figure_png_holds_the_canvas_pixels() -> None:
    """The annotated PNG decodes to exactly the pixels matplotlib drew (as OpenCV's writer did)."""
    labels = [f"tok{i:02d}" for i in range(16)]
    values = np.random.default_rng(7).random((16, 16))
    data = annotated.annotated_png(values, 0.0, 1.0, size=300, colormap="magma", row_labels=labels, col_labels=labels,
                                   max_labels=128, title="t")
    layout = list(annotated._cache.values())[-1]  # the cache keeps the most recently used layout last
    canvas_rgb = np.asarray(layout.canvas.buffer_rgba())[:, :, :3]
    np.testing.assert_array_equal(decode_rgb(data), canvas_rgb)
    ok, opencv = cv2.imencode(".png", cv2.cvtColor(np.ascontiguousarray(canvas_rgb), cv2.COLOR_RGB2BGR))
    assert ok
    np.testing.assert_array_equal(decode_rgb(opencv.tobytes()), decode_rgb(data))
