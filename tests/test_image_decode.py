"""The image catalogue (hostile-inputs E-1..E-15) through the HTTP API, plus decode_image's conversions.

Every rejection is checked for status, error code, a JSON body without internals, and that the
worker still serves a valid request right after. Images go in both as multipart file parts and
as base64 in JSON.
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from app.core.errors import AttnmapError
from app.decode.image import decode_image
from app.service.config import Limits
from tests.conftest import decode_png
from tests.vision_support import app_for, build_tiny, load_adapter, png_bytes, post_image, random_image

TRANSPORTS = ("json", "multipart")
LEAK_MARKERS = ("Traceback", "/work", "/tmp", "site-packages", ".py\"", "PIL", "File \"")
GOOD = png_bytes(random_image(48, 64, seed=2))


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    adapter = load_adapter(build_tiny(tmp_path_factory.mktemp("decode-model"), "vit"), "tiny")
    return app_for(adapter, limits={"max_image_bytes": 2 * 1024 * 1024}).test_client()


# -- building the catalogue ------------------------------------------------------------------------


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_claiming(width: int, height: int) -> bytes:
    """A ~100-byte PNG whose header claims ``width x height`` RGB pixels (a decompression bomb)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(b"\0" * 64)) + _chunk(b"IEND", b"")


def encoded(image: Image.Image, fmt: str, **save) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **save)
    return buffer.getvalue()


def rgb(height: int = 48, width: int = 64, seed: int = 0) -> Image.Image:
    return Image.fromarray(random_image(height, width, seed))


def with_orientation(display: Image.Image, orientation: int, fmt: str = "PNG") -> bytes:
    """Stored pixels rotated so that applying EXIF ``orientation`` gives ``display`` back."""
    stored = display.transpose(Image.Transpose.ROTATE_90 if orientation == 6 else Image.Transpose.ROTATE_270)
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encoded(stored, fmt, exif=exif, **({"quality": 95} if fmt == "JPEG" else {}))


def sixteen_bit() -> bytes:
    values = (np.linspace(1000, 40000, 48 * 64).reshape(48, 64)).astype(np.uint16)
    return encoded(Image.fromarray(values), "PNG")


def palette_with_transparency() -> bytes:
    image = Image.new("P", (40, 40), 1)
    image.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    image.paste(0, (0, 0, 20, 40))  # left half index 0 (red), declared transparent below
    return encoded(image, "PNG", transparency=0)


def animated(fmt: str) -> bytes:
    frames = [Image.new("RGB", (32, 32), (40 * i, 100, 200)) for i in range(5)]
    extra = {"lossless": True} if fmt == "WEBP" else {}
    return encoded(frames[0], fmt, save_all=True, append_images=frames[1:], **extra)


def polyglot() -> bytes:
    """A valid PNG followed by an HTML page and a ZIP end record (decodes as the PNG)."""
    return GOOD + b"<html><script>alert(1)</script></html>" + b"PK\x05\x06" + b"\0" * 18


REJECTED = {
    "bomb-10000-squared (1x-2x Pillow's limit)": (png_claiming(10_000, 10_000), 422, "image_too_large"),
    "bomb-50000-squared (over 2x)": (png_claiming(50_000, 50_000), 422, "image_too_large"),
    "over our pixel cap (6000x5000)": (png_claiming(6000, 5000), 422, "image_too_large"),
    "truncated-jpeg": (encoded(rgb(), "JPEG")[:400], 422, "corrupt_image"),
    "truncated-png": (GOOD[: len(GOOD) // 2], 422, "corrupt_image"),
    "svg": (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="64" height="64">'
            b'<image href="http://169.254.169.254/latest"/></svg>', 415, "unsupported_image_format"),
    "gif": (encoded(rgb(), "GIF"), 415, "unsupported_image_format"),
    "tiff": (encoded(rgb(), "TIFF"), 415, "unsupported_image_format"),
    "bmp": (encoded(rgb(), "BMP"), 415, "unsupported_image_format"),
    "psd-header": (b"8BPS\x00\x01" + b"\0" * 200, 415, "unsupported_image_format"),
    "pdf": (b"%PDF-1.7\n1 0 obj<<>>endobj\n%%EOF", 415, "unsupported_image_format"),
    "1x1": (encoded(Image.new("RGB", (1, 1)), "PNG"), 422, "invalid_dimensions"),
    "1000x10 (aspect 100)": (encoded(Image.new("RGB", (1000, 10)), "PNG"), 422, "invalid_dimensions"),
    "zero-bytes": (b"", 415, "unsupported_image_format"),
    "random-bytes": (np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes(), 415, "unsupported_image_format"),
    "html": (b"<!doctype html><html><body>not an image</body></html>", 415, "unsupported_image_format"),
}


def _assert_clean_error(response, status: int, code: str) -> None:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert body["error"]["code"] == code
    assert body["error"]["field"] == "image"
    text = response.get_data(as_text=True)
    assert not any(marker in text for marker in LEAK_MARKERS), text


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("case", list(REJECTED))
def test_rejected_images(client, case, transport):
    data, status, code = REJECTED[case]
    _assert_clean_error(post_image(client, data, transport, model="tiny"), status, code)
    assert post_image(client, GOOD, transport, model="tiny").status_code == 200


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_image_over_the_byte_cap_is_413(client, transport):
    big = np.random.default_rng(1).integers(0, 256, (1100, 1100, 3), dtype=np.uint8)
    data = png_bytes(big)
    assert len(data) > 2 * 1024 * 1024
    _assert_clean_error(post_image(client, data, transport, model="tiny"), 413, "image_too_large")
    assert post_image(client, GOOD, transport, model="tiny").status_code == 200


def _overlay_of(client, data, transport="multipart", **fields):
    """alpha=0 returns the decoded image itself, at its own resolution: what the model was given."""
    response = post_image(client, data, transport, model="tiny", alpha=0.0, **fields)
    assert response.status_code == 200, response.get_json()
    assert response.mimetype == "image/png"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    return decode_png(response.data)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_sixteen_bit_png_keeps_its_contrast(client, transport):
    pixels = _overlay_of(client, sixteen_bit(), transport)
    assert pixels.shape == (48, 64, 3)
    assert pixels.mean() < 200 and pixels.min() == 0 and pixels.max() == 255  # not saturated to white


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_cmyk_jpeg_converts_to_plausible_rgb(client, transport):
    cyan = Image.new("CMYK", (40, 40), (255, 0, 0, 0))
    pixels = _overlay_of(client, encoded(cyan, "JPEG", quality=95), transport)
    red, green, blue = pixels.reshape(-1, 3).mean(axis=0)
    assert red < 40 and green > 215 and blue > 215


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("orientation", [6, 8])
@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_exif_orientation_is_applied(client, orientation, fmt, transport):
    display = rgb(48, 64, seed=9)
    pixels = _overlay_of(client, with_orientation(display, orientation, fmt), transport)
    assert pixels.shape == (48, 64, 3)  # display orientation, not the stored 64 x 48
    assert np.abs(pixels.astype(int) - np.asarray(display, dtype=int)).mean() < (1 if fmt == "PNG" else 6)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_palette_transparency_is_composited_on_white(client, transport):
    pixels = _overlay_of(client, palette_with_transparency(), transport)
    assert (pixels[:, :20] == 255).all()  # transparent red -> white background
    assert (pixels[:, 20:] == [0, 0, 255]).all()


@pytest.mark.parametrize("mode", ["LA", "RGBA"])
def test_alpha_modes_are_composited(client, mode):
    image = Image.new(mode, (32, 32), (0, 0) if mode == "LA" else (0, 0, 0, 0))
    assert (_overlay_of(client, encoded(image, "PNG")) == 255).all()


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_animated_images_use_the_first_frame(client, fmt):
    data = animated(fmt)
    response = post_image(client, data, model="tiny", format="json")
    assert response.status_code == 200
    image_meta = response.get_json()["meta"]["preprocessing"]["image"]
    assert image_meta["frames_ignored"] == 4 and image_meta["format"] == fmt
    pixels = _overlay_of(client, data)
    assert np.abs(pixels.astype(int) - [0, 100, 200]).max() <= 2


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_polyglot_decodes_as_its_image_and_is_never_echoed(client, transport):
    data = polyglot()
    response = post_image(client, data, transport, model="tiny")
    assert response.status_code == 200 and response.mimetype == "image/png"
    assert b"<html>" not in response.data and b"PK\x05\x06" not in response.data
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_webp_and_grey_and_data_url(client):
    assert post_image(client, encoded(rgb(), "WEBP", quality=80), model="tiny").status_code == 200
    assert post_image(client, encoded(rgb().convert("L"), "PNG"), "json", model="tiny").status_code == 200
    import base64

    url = "data:image/png;base64," + base64.b64encode(GOOD).decode()
    assert client.post("/visualize", json={"model": "tiny", "image": url}).status_code == 200


# -- decode_image directly ---------------------------------------------------------------------------


def test_decode_meta_records_what_was_done():
    decoded = decode_image(with_orientation(rgb(48, 64), 6), Limits())
    assert decoded.pixels.dtype == np.uint8 and decoded.pixels.shape == (48, 64, 3)
    assert decoded.meta | {"mode": None} == {"format": "PNG", "mode": None, "stored_size": [48, 64], "orientation": 6,
                                              "orientation_applied": True, "size": [64, 48]}
    sixteen = decode_image(sixteen_bit(), Limits())
    assert sixteen.meta["mode"] == "I;16" and sixteen.meta["intensity_range"] == [1000.0, 40000.0]


def test_limits_are_checked_before_pixels_are_decoded(monkeypatch):
    """Over-cap images never reach load(): a spy on ImageFile.load proves it."""
    from PIL import ImageFile

    loads = []
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: loads.append(self.size))
    for data in (png_claiming(6000, 5000), encoded(Image.new("RGB", (1000, 10)), "PNG"), encoded(rgb(), "GIF")):
        with pytest.raises(AttnmapError):
            decode_image(data, Limits())
    assert loads == []


def test_constant_sixteen_bit_image_does_not_divide_by_zero():
    flat = encoded(Image.fromarray(np.full((20, 20), 51400, dtype=np.uint16)), "PNG")
    assert (decode_image(flat, Limits()).pixels == 200).all()
