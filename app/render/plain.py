"""Colour-mapped maps without matplotlib figures: colour table, block upscale, indexed PNG."""

from __future__ import annotations

import math

import numpy as np

from app.render.colormaps import BLANK_INDEX, BLANK_RGB, LEVELS, masked_colour, masked_palette, palette
from app.render.normalize import to_indices
from app.render.png import block_counts, encode_blocks, encode_indexed

# In a masked grid the highest level's entry shows masked cells (the blank entry draws the gaps).
GRID_MASK_INDEX = LEVELS - 1
MASKED_GRID_GAP_RGB = (0, 0, 0)


def output_shape(rows: int, cols: int, size: int) -> tuple[int, int]:
    """Pixel ``(height, width)`` of a ``rows x cols`` map whose longer side is ``size`` px."""
    if rows >= cols:
        return size, max(1, round(size * cols / rows))
    return max(1, round(size * rows / cols)), size


def pool_to(values: np.ndarray, max_rows: int, max_cols: int) -> np.ndarray:
    """Block-average a map so it has at most ``max_rows x max_cols`` cells (display only)."""
    rows, cols = values.shape
    if rows <= max_rows and cols <= max_cols:
        return values
    row_groups = np.array_split(np.arange(rows), min(rows, max_rows))
    col_groups = np.array_split(np.arange(cols), min(cols, max_cols))
    row_sums = np.add.reduceat(values, [g[0] for g in row_groups], axis=0)
    pooled = np.add.reduceat(row_sums, [g[0] for g in col_groups], axis=1)
    return pooled / np.outer([len(g) for g in row_groups], [len(g) for g in col_groups])


def _masked_cells(cells: np.ndarray, masked: np.ndarray | None, rows: int, cols: int, colormap: str) -> tuple[np.ndarray, np.ndarray]:
    """Colour indices with masked cells set to the spare entry, and the palette to draw them with.

    A pooled cell is masked when most of the cells it averages are (the mask is pooled like the values).
    """
    if masked is None or not masked.any():
        return cells, palette(colormap)
    share = pool_to(masked.astype(np.float64), rows, cols)
    cells = cells.copy()
    cells[share > 0.5] = BLANK_INDEX
    return cells, masked_palette(colormap)


def heatmap_png(scaled: np.ndarray, size: int, colormap: str, level: int, masked: np.ndarray | None = None) -> bytes:
    """PNG of a [0, 1] map, nearest-neighbour upscaled so its longer side is ``size`` px.

    ``masked`` (bool, same shape) cells are drawn in the colormap's masked colour.
    """
    height, width = output_shape(scaled.shape[0], scaled.shape[1], size)
    cells = to_indices(pool_to(scaled, height, width))
    cells, colours = _masked_cells(cells, masked, height, width, colormap)
    return encode_blocks(cells, block_counts(cells.shape[0], height), block_counts(cells.shape[1], width), colours, level)


def strip_png(scaled_row: np.ndarray, size: int, colormap: str, level: int, masked: np.ndarray | None = None) -> bytes:
    """PNG of one query row as a horizontal strip ``size`` px wide and ``size // 8`` px tall."""
    width = size
    height = max(8, size // 8)
    cells = to_indices(pool_to(scaled_row.reshape(1, -1), 1, width))
    cells, colours = _masked_cells(cells, None if masked is None else masked.reshape(1, -1), 1, width, colormap)
    return encode_blocks(cells, np.array([height]), block_counts(cells.shape[1], width), colours, level)


def grid_layout(panels: int) -> tuple[int, int]:
    """Rows and columns of a near-square panel grid."""
    columns = math.ceil(math.sqrt(panels))
    return math.ceil(panels / columns), columns


def grid_png(scaled_panels: list[np.ndarray], size: int, colormap: str, level: int,
             masked: np.ndarray | None = None) -> bytes:
    """All panels (each a [0, 1] map) side by side in one PNG about ``size`` px on its longer side.

    The panel count is capped by the request plan (``max_panels``) before any work. ``masked``
    (bool, one panel's shape, the same cells in every panel) is drawn in the masked colour, and the
    gaps between panels turn black where that colour is the blank white, so panels keep their edges.
    """
    rows, columns = grid_layout(len(scaled_panels))
    gap = 2
    panel_rows, panel_cols = scaled_panels[0].shape
    cell = max(1, (size - gap * (columns - 1)) // columns)
    panel_h, panel_w = output_shape(panel_rows, panel_cols, cell)
    colours = palette(colormap)
    hidden: np.ndarray | None = None
    if masked is not None and masked.any():
        # The top colour level gives its entry to the masked colour (one level of 255 is not visible).
        hidden = pool_to(masked.astype(np.float64), panel_h, panel_w) > 0.5
        colours = palette(colormap).copy()
        colours[GRID_MASK_INDEX] = masked_colour(colormap)
        if masked_colour(colormap) == BLANK_RGB:  # white masked cells would run into white gaps
            colours[BLANK_INDEX] = MASKED_GRID_GAP_RGB
    canvas = np.full((rows * panel_h + gap * (rows - 1), columns * panel_w + gap * (columns - 1)), BLANK_INDEX, np.uint8)
    for index, panel in enumerate(scaled_panels):
        cells = to_indices(pool_to(panel, panel_h, panel_w))
        if hidden is not None:
            cells = np.minimum(cells, GRID_MASK_INDEX - 1)
            cells[hidden] = GRID_MASK_INDEX
        block = np.repeat(np.repeat(cells, block_counts(cells.shape[0], panel_h), 0), block_counts(cells.shape[1], panel_w), 1)
        top, left = (index // columns) * (panel_h + gap), (index % columns) * (panel_w + gap)
        canvas[top : top + panel_h, left : left + panel_w] = block
    return encode_indexed(canvas, colours, level)
