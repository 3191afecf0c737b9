"""The built-in models on freshly generated pictures: does the overlay land where it should?

Images come from ``training.shapes`` with seeds the training never used, at the native
64 px and at larger, non-square sizes (the service resizes them, so the boxes are checked in
original-image pixels through the API's ``region`` field). Measures, all from ``format=json``:

* ``region_mass``: share of the rollout map's mass inside the object box;
* ``region_area_share``: the box's share of the image, i.e. what a map with no idea where the
  object is (uniform, or random) scores on average. The ratio of the two is the lift over chance.

Thresholds are set well below what the shipped models reach (numbers in the assertions'
comments), so they catch a broken pipeline (wrong prefix count, transposed grid, placement not
undone, EXIF ignored: each of those drops the lift to about 1) without flaking on retraining.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from app.http.factory import create_app
from models.registry import BUILTIN_DIR
from tests.test_image_decode import with_orientation
from tests.vision_support import png_bytes, post_image

pytestmark = pytest.mark.skipif(
    not all((BUILTIN_DIR / name / "model.safetensors").is_file() for name in ("shapes-vit", "shapes-vit-shortcut")),
    reason="built-in vision models not trained yet (models/builtin/shapes-vit*)",
)

SEED = 20261125  # not a training or evaluation seed
SIZES = ((64, 64), (160, 120), (96, 144))  # (width, height): native, landscape, portrait
COUNT = 36


@pytest.fixture(scope="module")
def client():
    app = create_app({"builtin_models": ("shapes-vit", "shapes-vit-shortcut")})
    return app.test_client()


def _samples(count: int, **kwargs):
    from training.shapes import make_sample

    rng = np.random.default_rng(SEED)
    return [make_sample(rng, size=SIZES[i % len(SIZES)], **kwargs) for i in range(count)]


def _rollout(client, model: str, pixels: np.ndarray | bytes, region) -> dict:
    data = pixels if isinstance(pixels, bytes) else png_bytes(pixels)
    response = post_image(client, data, model=model, method="rollout", format="json", region=[float(v) for v in region])
    assert response.status_code == 200, response.get_json()
    document = response.get_json()
    return {"values": np.asarray(document["values"]), **document["meta"]}


def _lift(meta: dict) -> float:
    return meta["region_mass"] / meta["region_area_share"]


def _peak_xy(meta: dict) -> tuple[float, float]:
    """Centre of the map's hottest cell, in original-image pixels (placement undone)."""
    values = meta["values"]
    row, col = np.unravel_index(np.argmax(values), values.shape)
    x0, y0, x1, y1 = meta["preprocessing"]["placement"]
    return x0 + (col + 0.5) * (x1 - x0) / values.shape[1], y0 + (row + 0.5) * (y1 - y0) / values.shape[0]


def _near(box, x: float, y: float, margin: float) -> bool:
    return box[0] - margin <= x <= box[2] + margin and box[1] - margin <= y <= box[3] + margin


def test_clean_model_rollout_lands_on_the_object(client):
    """Rollout mass in the object box, against the box's area share (chance) and a control.

    Measured on these 36 images: median lift 2.05 (about 27 % of the mass on 13 % of the image),
    every image above 1.5, the hottest cell on the object (within half a patch) in all of them;
    with ``discard_ratio=0.9`` (only the strongest 10 % of links kept) the median lift is 4.6.
    Rollout stays diffuse by construction (each layer keeps half of the identity), so 2x is what
    a model that looks at the object reaches, not a weak result. The control, each image's map
    scored on *another* image's box, stays near 1: the lift is about the object's position.
    """
    lifts, control, peaks, sharp = [], [], [], []
    samples = _samples(COUNT)
    for index, sample in enumerate(samples):
        meta = _rollout(client, "shapes-vit", sample.image, sample.box)
        lifts.append(_lift(meta))
        other = samples[(index + len(SIZES)) % len(samples)].box  # same image size, another object
        control.append(_lift(_rollout(client, "shapes-vit", sample.image, other)))
        patch = sample.image.shape[1] / meta["grid"][1]
        peaks.append(_near(sample.box, *_peak_xy(meta), margin=patch / 2))
        response = post_image(client, png_bytes(sample.image), model="shapes-vit", method="rollout", discard_ratio=0.9,
                              format="json", region=[float(v) for v in sample.box])
        sharp.append(_lift(response.get_json()["meta"]))
    assert np.median(lifts) >= MIN_MEDIAN_LIFT, lifts
    assert min(lifts) >= MIN_EVERY_LIFT, lifts
    assert np.mean(peaks) >= MIN_PEAK_IN_BOX, peaks
    assert np.median(sharp) >= MIN_SHARP_MEDIAN_LIFT, sharp
    assert np.median(control) <= MAX_CONTROL_MEDIAN_LIFT, control


def test_physically_rotated_pictures_rotate_the_hot_spot(client):
    """Rotate the pixels 90 degrees (no EXIF): the object moves, and the mass follows it."""
    lifts = []
    for sample in _samples(COUNT // 2):
        height = sample.image.shape[0]
        rotated = np.ascontiguousarray(np.rot90(sample.image))  # counter-clockwise: (x, y) -> (y, W - x)
        x0, y0, x1, y1 = sample.box
        width = sample.image.shape[1]
        box = (y0, width - x1, y1, width - x0)
        assert rotated.shape[:2] == (width, height)
        lifts.append(_lift(_rollout(client, "shapes-vit", rotated, box)))
    assert np.median(lifts) >= MIN_MEDIAN_LIFT, lifts


@pytest.mark.parametrize("orientation", [6, 8])
def test_exif_rotated_copies_give_the_same_hot_spot(client, orientation):
    """Stored rotated with an EXIF tag: displayed (and so analysed) like the original."""
    for sample in _samples(4):
        original = _rollout(client, "shapes-vit", sample.image, sample.box)
        tagged = _rollout(client, "shapes-vit", with_orientation(Image.fromarray(sample.image), orientation), sample.box)
        np.testing.assert_array_equal(tagged["values"], original["values"])
        assert tagged["region_mass"] == original["region_mass"]


def _rollout_or(client, model: str, pixels: np.ndarray, region, method: str) -> dict:
    response = post_image(client, png_bytes(pixels), model=model, method=method, format="json",
                          region=[float(v) for v in region])
    assert response.status_code == 200, response.get_json()
    return response.get_json()["meta"]


def test_shortcut_model_looks_at_the_marker_corner(client):
    """The shortcut model reads the corner marker, not the (faint) object.

    The region is the ViT patch holding the marker: 1/64 of the image. Rollout keeps half of
    every layer on the residual path, so its maps stay diffuse; it still puts ~9x chance on that
    one patch (median 0.14 of the mass) and more than on the object box in every image, while the
    object box gets less than chance (lift ~0.9). The gradient-weighted method (Chefer et al.)
    isolates what the prediction used: most of the mass (median 0.80) lands on the marker patch.
    """
    corner_lifts, corner_beats_object, gradient_mass = [], [], []
    for sample in _samples(COUNT, shortcut=True):
        assert sample.marker_box is not None
        height, width = sample.image.shape[:2]
        patch_w, patch_h = width / 8, height / 8  # the marker sits inside one corner patch
        mx0, my0 = (sample.marker_box[0] // patch_w) * patch_w, (sample.marker_box[1] // patch_h) * patch_h
        corner = (mx0, my0, mx0 + patch_w, my0 + patch_h)
        corner_meta = _rollout(client, "shapes-vit-shortcut", sample.image, corner)
        object_meta = _rollout(client, "shapes-vit-shortcut", sample.image, sample.box)
        corner_lifts.append(_lift(corner_meta))
        corner_beats_object.append(corner_meta["region_mass"] > object_meta["region_mass"])
        gradient_mass.append(_rollout_or(client, "shapes-vit-shortcut", sample.image, corner, "gradient")["region_mass"])
    assert np.median(corner_lifts) >= MIN_CORNER_LIFT, corner_lifts
    assert np.mean(corner_beats_object) >= MIN_CORNER_BEATS_OBJECT, corner_beats_object
    assert np.median(gradient_mass) >= MIN_GRADIENT_CORNER_MASS, gradient_mass


MIN_MEDIAN_LIFT = 1.6  # measured 2.05 (clean), 2.08 (rotated)
MIN_EVERY_LIFT = 1.2  # measured min 1.54
MIN_PEAK_IN_BOX = 0.9  # measured 1.0
MIN_SHARP_MEDIAN_LIFT = 3.0  # measured 4.6 with discard_ratio=0.9
MAX_CONTROL_MEDIAN_LIFT = 1.4  # measured 1.07; chance is 1
MIN_CORNER_LIFT = 4.0  # measured: median 9.2, min 2.1
MIN_CORNER_BEATS_OBJECT = 0.9  # measured: 1.0
MIN_GRADIENT_CORNER_MASS = 0.5  # measured: median 0.80 on 1/64 of the image
