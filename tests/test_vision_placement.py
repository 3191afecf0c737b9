"""Where the overlay lands: placement undoes resize and crop, output at the image's own resolution,
EXIF-rotated uploads give the same map in display orientation.

These use tiny random models, so they test geometry, not what a trained model looks at (see
``test_vision_builtin`` for that): with ``alpha=1`` and nearest interpolation the overlay pixel
at a patch cell's centre must be exactly that cell's colour, and pixels the processor cropped
away must be the original image.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from app.render.colormaps import palette
from tests.helpers import decode_png, encoded, with_orientation
from tests.vision_support import build_tiny, load_adapter, png_bytes, post_image, random_image


@pytest.fixture(scope="module")
def placement_client(make_app, tmp_path_factory):
    """Tiny random models whose processors resize, crop or keep the aspect ratio."""
    root = tmp_path_factory.mktemp("placement")
    adapters = [load_adapter(build_tiny(root, kind)) for kind in ("dinov2reg", "vit-wide", "vit-shortest")]
    return make_app(*adapters).test_client()


def _map_and_overlay(client, data: bytes, model: str, **fields):
    as_json = post_image(client, data, model=model, format="json", **fields)
    assert as_json.status_code == 200, as_json.get_json()
    png = post_image(client, data, model=model, alpha=1.0, interpolation="nearest", colormap="viridis", **fields)
    assert png.status_code == 200
    document = as_json.get_json()
    return np.asarray(document["values"]), document["meta"], decode_png(png.data)


@pytest.mark.parametrize(("model", "height", "width"), [("dinov2reg", 48, 64), ("dinov2reg", 90, 40),
                                                        ("vit-wide", 200, 300), ("vit-shortest", 48, 70)])
def test_cells_land_where_the_model_looked(placement_client, model, height, width):
    image = random_image(height, width, seed=height * width)
    values, meta, overlay = _map_and_overlay(placement_client, png_bytes(image), model, method="rollout")
    assert overlay.shape == (height, width, 3)  # the image's own resolution
    x0, y0, x1, y1 = meta["preprocessing"]["placement"]
    rows, cols = values.shape
    colours = palette("viridis")
    for pick, index in ((np.argmax, 254), (np.argmin, 0)):
        row, col = np.unravel_index(pick(values), values.shape)
        cx = x0 + (col + 0.5) * (x1 - x0) / cols
        cy = y0 + (row + 0.5) * (y1 - y0) / rows
        assert (overlay[int(cy), int(cx)] == colours[index]).all()
    # Outside the placement (cropped away, or the patch remainder) the image is untouched.
    outside = np.ones((height, width), dtype=bool)
    outside[int(np.ceil(y0)):int(np.floor(y1)), int(np.ceil(x0)):int(np.floor(x1))] = False
    border = np.zeros_like(outside)
    border[max(0, int(np.floor(y0)) - 1):int(np.ceil(y1)) + 1, max(0, int(np.floor(x0)) - 1):int(np.ceil(x1)) + 1] = True
    strictly_outside = outside & ~border
    assert (overlay[strictly_outside] == image[strictly_outside]).all()
    if model == "dinov2reg" or model == "vit-shortest":
        assert strictly_outside.any()  # the crop/remainder really left something out


@pytest.mark.parametrize("orientation", [6, 8])
def test_exif_rotated_upload_gives_the_same_map_in_display_orientation(placement_client, orientation):
    display = Image.fromarray(random_image(48, 64, seed=21))
    reference, _, reference_overlay = _map_and_overlay(placement_client, png_bytes(np.asarray(display)), "dinov2reg", method="rollout")
    values, meta, overlay = _map_and_overlay(placement_client, with_orientation(display, orientation), "dinov2reg", method="rollout")
    assert meta["preprocessing"]["image"]["orientation_applied"] is True
    assert overlay.shape == (48, 64, 3)
    np.testing.assert_array_equal(values, reference)
    np.testing.assert_array_equal(overlay, reference_overlay)
    # Without the EXIF tag the stored (rotated) pixels give a different, rotated picture.
    stored = display.transpose(Image.Transpose.ROTATE_90 if orientation == 6 else Image.Transpose.ROTATE_270)
    _, _, untagged = _map_and_overlay(placement_client, encoded(stored, "PNG"), "dinov2reg", method="rollout")
    assert untagged.shape == (64, 48, 3)


def test_region_mass_and_outline(placement_client):
    image = random_image(48, 64, seed=4)
    response = post_image(placement_client, png_bytes(image), model="vit-wide", format="json", region=[0, 0, 64, 48])
    meta = response.get_json()["meta"]
    assert meta["region_mass"] == pytest.approx(1.0) and meta["region_area_share"] == pytest.approx(1.0)
    left = post_image(placement_client, png_bytes(image), model="vit-wide", format="json", region=[0, 0, 32, 48]).get_json()["meta"]
    right = post_image(placement_client, png_bytes(image), model="vit-wide", format="json", region=[32, 0, 64, 48]).get_json()["meta"]
    assert left["region_mass"] + right["region_mass"] == pytest.approx(1.0)
    assert left["region_area_share"] == pytest.approx(0.5)
    png = post_image(placement_client, png_bytes(image), "multipart", model="vit-wide", region="8,8,40,30", alpha=0.0)
    assert png.status_code == 200
    assert float(png.headers["X-Attnmap-Region-Mass"]) >= 0.0
    overlay = decode_png(png.data)
    assert (overlay[8, 8:40] == 255).all() and (overlay[8:30, 8] == 255).all()  # the outline is drawn


def test_photo_png_is_lossless():
    from app.render.photo_png import encode_rgb_up

    rng = np.random.default_rng(8)
    for shape in ((1, 1, 3), (17, 31, 3), (240, 320, 3)):
        pixels = rng.integers(0, 256, shape, dtype=np.uint8)
        for level in (0, 1, 3, 9):
            np.testing.assert_array_equal(decode_png(encode_rgb_up(pixels, level)), pixels)


def test_large_overlays_are_shrunk_before_blending():
    from app.render.colormaps import palette
    from app.render.overlay import overlay_image

    image = random_image(300, 400, seed=2)
    values = np.zeros((4, 4))
    values[1, 2] = 1.0
    out = overlay_image(image, values, (40.0, 30.0, 360.0, 270.0), alpha=1.0, colormap="viridis",
                        interpolation="nearest", outline=None, max_side=200)
    assert out.shape == (150, 200, 3)
    # Cell (1, 2) of the placement scaled by 0.5: x 20 + 2.5 * 40 = 120, y 15 + 1.5 * 30 = 60.
    assert (out[60, 120] == palette("viridis")[254]).all()
    assert (out[60, 80] == palette("viridis")[0]).all()
