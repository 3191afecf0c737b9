"""Rendering: valid PNGs of the requested size, colours at the extremes, no NaN on constant maps."""

import numpy as np
import pytest

from app.render import annotated, plain
from app.render.colormaps import LEVELS, palette
from app.render.normalize import normalize
from tests.conftest import decode_png


@pytest.mark.parametrize(("shape", "size"), [((64, 64), 512), ((6, 6), 512), ((3, 7), 300), ((1000, 1000), 256), ((5, 5), 17)])
def test_heatmap_png_has_requested_size_and_extreme_colours(shape, size):
    values = np.random.default_rng(0).random(shape)
    scaled, _low, _high = normalize(values)
    pixels = decode_png(plain.heatmap_png(scaled, size, "viridis", 1))
    assert max(pixels.shape[:2]) == size
    table = palette("viridis")
    if shape[0] <= size:  # pooled maps average the extremes away
        assert (pixels == table[LEVELS - 1]).all(-1).any(), "largest value must get the colormap's top colour"
        assert (pixels == table[0]).all(-1).any(), "smallest value must get the colormap's bottom colour"
    np.testing.assert_array_equal(table[0], np.round(np.array(__import__("matplotlib").colormaps["viridis"](0.0)[:3]) * 255))


def test_extremes_land_where_the_values_are():
    values = np.zeros((4, 4))
    values[1, 2] = 5.0
    values[3, 0] = -5.0
    pixels = decode_png(plain.heatmap_png(normalize(values)[0], 400, "magma", 1))
    table = palette("magma")
    assert (pixels[150, 250] == table[LEVELS - 1]).all()
    assert (pixels[350, 50] == table[0]).all()


def test_constant_matrix_renders_without_nan():
    scaled, low, high = normalize(np.full((5, 5), 0.3))
    assert not np.isnan(scaled).any() and low == high == 0.3
    pixels = decode_png(plain.heatmap_png(scaled, 64, "viridis", 1))
    assert (pixels == pixels[0, 0]).all()


def test_fixed_range_normalisation_clips_and_compares_across_requests():
    scaled, low, high = normalize(np.array([[-1.0, 0.5, 2.0]]), "none", 0.0, 1.0)
    np.testing.assert_allclose(scaled, [[0.0, 0.5, 1.0]])
    assert (low, high) == (0.0, 1.0)


def test_extreme_finite_values_do_not_overflow():
    scaled, *_ = normalize(np.array([[-3e38, 3e38]], dtype=np.float32))
    np.testing.assert_allclose(scaled, [[0.0, 1.0]])


def test_grid_and_strip():
    panels = [np.random.default_rng(i).random((8, 8)) for i in range(12)]
    grid = decode_png(plain.grid_png(panels, 512, "viridis", 1))
    assert grid.shape[1] <= 512 and grid.shape[0] > 0
    strip = decode_png(plain.strip_png(np.linspace(0, 1, 10), 300, "viridis", 1))
    assert strip.shape[:2] == (37, 300)


def test_annotated_labels_are_literal_text_and_size_is_bounded():
    labels = ["$x^$", "$\\frac{1}$", "ok", "\x00ctl"]
    png = annotated.annotated_png(np.random.default_rng(0).random((4, 4)), 0.0, 1.0, size=300, colormap="viridis",
                                  row_labels=labels, col_labels=labels, max_labels=128, title="$bad^$")
    pixels = decode_png(png)
    assert pixels.shape[0] == 300
    assert annotated.open_figures() <= 8


def test_pyplot_is_never_imported():
    import sys

    annotated.bar_png(np.arange(5.0), list("abcde"), size=200, colormap="viridis", max_labels=10)
    assert "matplotlib.pyplot" not in sys.modules
