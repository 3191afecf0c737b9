"""Uploaded image bytes -> uint8 RGB pixels, with every limit checked before any pixel is decoded.

Order matters: byte cap, then the format allow-list (Pillow only tries the PNG/JPEG/WebP
decoders, so SVG, GIF, TIFF, PSD, EPS, PDF... never reach a parser), then the header's size
against our own pixel cap (Pillow's bomb check only *warns* between 1x and 2x its limit, and
its limit is ~90 Mpx; ours is smaller), minimum side and aspect ratio, and only then ``load()``.

Conversions are explicit so the model sees what a browser shows: EXIF orientation applied,
16-bit and 32-bit greyscale scaled by their real range (a naive ``convert("RGB")`` saturates
them to white), CMYK/palette/greyscale converted, alpha composited on white. Animated PNG/WebP
give their first frame only (frames are never iterated). ICC profiles are not applied.
"""

from __future__ import annotations

import io
import warnings
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from app.core.errors import InvalidInput, TooLarge, UnsupportedFormat
from app.core.inputs import ImageInput
from app.service.config import Limits

ALLOWED_FORMATS = ("PNG", "JPEG", "WEBP")
# What transparent pixels become: white, like a transparent image on a plain page.
ALPHA_BACKGROUND = (255, 255, 255)
_EXIF_ORIENTATION = 0x0112
_HIGH_DEPTH_MODES = {"I;16", "I;16B", "I;16L", "I;16N", "I", "F"}
_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}


def check_image_bytes(size: int, limits: Limits) -> None:
    """413 ``image_too_large`` when an image of ``size`` bytes is over the byte cap (the one check of it)."""
    if size > limits.max_image_bytes:
        raise TooLarge(f"the image is larger than {limits.max_image_bytes} bytes", code="image_too_large", field="image")


def decode_image(data: bytes, limits: Limits) -> ImageInput:
    """Decode an uploaded PNG/JPEG/WebP into an :class:`ImageInput` (uint8 RGB, display orientation).

    Raises 413 ``image_too_large`` over the byte cap, 415 ``unsupported_image_format`` for
    anything that is not one of the allowed formats (including empty or random bytes), 422
    ``image_too_large`` over the pixel cap, 422 ``invalid_dimensions`` for too small or too
    elongated images, and 422 ``corrupt_image`` when the pixel data cannot be decoded.
    """
    check_image_bytes(len(data), limits)
    image = _open(data, limits)
    width, height = image.size
    meta: dict[str, Any] = {"format": image.format, "mode": image.mode, "stored_size": [width, height]}
    frames = _frame_count(image)
    if frames > 1:
        meta["frames_ignored"] = frames - 1
    try:
        image.load()  # the first frame only; later frames of APNG/animated WebP are never decoded
        orientation = _orientation(image)
        if orientation not in (None, 1):
            image = ImageOps.exif_transpose(image)
        pixels = _to_rgb(image, meta)
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise InvalidInput(f"the image data is corrupt or truncated ({_short(exc)})", code="corrupt_image", field="image") from None
    meta["orientation"] = orientation or 1
    meta["orientation_applied"] = orientation not in (None, 1)
    meta["size"] = [int(pixels.shape[1]), int(pixels.shape[0])]
    return ImageInput(pixels=pixels, meta=meta)


def _open(data: bytes, limits: Limits) -> Image.Image:
    """Identify the format (allow-list only) and check the header size; decodes no pixels."""
    if not data:
        raise UnsupportedFormat("the image is empty; send a PNG, JPEG or WebP file", code="unsupported_image_format", field="image")
    try:
        with warnings.catch_warnings():
            # Pillow's bomb warning (1x-2x its limit) becomes an error; our own cap is stricter anyway.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=list(ALLOWED_FORMATS))
    except UnidentifiedImageError:
        claimed = _claimed_format(data)
        if claimed is not None:
            # The signature says PNG/JPEG/WebP but the decoder refused the header (a bad IHDR
            # checksum, a cut-off header): a damaged file of an accepted format, not a wrong format.
            raise InvalidInput(f"the {claimed} header is corrupt (its checksum or structure is invalid)",
                               code="corrupt_image", field="image") from None
        raise UnsupportedFormat("the image format is not supported; send PNG, JPEG or WebP",
                               code="unsupported_image_format", field="image") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InvalidInput(f"the image has more than {limits.max_image_pixels} pixels", code="image_too_large", field="image") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise InvalidInput(f"the image header is corrupt ({_short(exc)})", code="corrupt_image", field="image") from None
    _check_dimensions(image.size, limits)
    if image.format == "JPEG":
        _check_jpeg_length(data, image.size)
    return image


_SIGNATURES = ((b"\x89PNG\r\n\x1a\n", "PNG"), (b"\xff\xd8\xff", "JPEG"))
# Start-of-frame markers of arithmetic-coded JPEGs: their entropy coding can go below a bit a block.
_ARITHMETIC_SOF = (b"\xff\xc9", b"\xff\xca", b"\xff\xcb", b"\xff\xcd", b"\xff\xce", b"\xff\xcf")


def _claimed_format(data: bytes) -> str | None:
    """The accepted format whose signature ``data`` starts with, if any."""
    for signature, name in _SIGNATURES:
        if data.startswith(signature):
            return name
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    return None


def _check_jpeg_length(data: bytes, size: tuple[int, int]) -> None:
    """Refuse a Huffman-coded JPEG too short to hold its own pixels (422 ``corrupt_image``).

    libjpeg fills a file that ends early with grey and only warns, so a 1 KB file claiming
    4000 x 4000 used to decode into a 48 MB grey image. Every 8 x 8 luma block carries at least
    one Huffman-coded DC symbol (at least one bit), so a complete file has at least
    ``blocks / 8`` bytes; anything shorter is truncated. Checked before any pixel is decoded.
    """
    if any(marker in data for marker in _ARITHMETIC_SOF):
        return
    width, height = size
    blocks = -(-width // 8) * -(-height // 8)
    if len(data) < blocks // 8:
        raise InvalidInput(f"the JPEG is truncated: {len(data)} bytes cannot hold {width}x{height} pixels "
                           f"(at least {blocks // 8} bytes)", code="corrupt_image", field="image")


def _check_dimensions(size: tuple[int, int], limits: Limits) -> None:
    width, height = size
    if width * height > limits.max_image_pixels:
        raise InvalidInput(f"the image has {width}x{height} pixels; the limit is {limits.max_image_pixels} pixels",
                            code="image_too_large", field="image")
    if min(width, height) < limits.min_image_side:
        raise InvalidInput(f"the image is {width}x{height}; each side must be at least {limits.min_image_side} px",
                            code="invalid_dimensions", field="image")
    if max(width, height) / min(width, height) > limits.max_image_aspect:
        raise InvalidInput(f"the image is {width}x{height}; the aspect ratio may be at most {limits.max_image_aspect:g}:1",
                            code="invalid_dimensions", field="image")


def _frame_count(image: Image.Image) -> int:
    """Frames an animated image claims (from its header; frames are not decoded)."""
    try:
        return int(getattr(image, "n_frames", 1))
    except (OSError, SyntaxError, ValueError, EOFError):
        return 1


def _orientation(image: Image.Image) -> int | None:
    """The EXIF orientation tag, or None; unreadable EXIF is ignored rather than failing the request."""
    try:
        value = image.getexif().get(_EXIF_ORIENTATION)
    except Exception:  # malformed EXIF is common in the wild and must not reject the image
        return None
    return int(value) if isinstance(value, int) and 1 <= value <= 8 else None


def _to_rgb(image: Image.Image, meta: dict[str, Any]) -> np.ndarray:
    """Any decoded mode -> contiguous uint8 ``[H, W, 3]``."""
    mode = image.mode
    if mode in _HIGH_DEPTH_MODES:
        grey, low, high = _scale_range(np.asarray(image))
        meta["intensity_range"] = [low, high]
        return np.ascontiguousarray(np.repeat(grey[:, :, np.newaxis], 3, axis=2))
    has_alpha = mode in _ALPHA_MODES or (mode in {"P", "L", "RGB"} and "transparency" in image.info)
    if has_alpha:
        rgba = np.asarray(image.convert("RGBA"), dtype=np.float32)
        alpha = rgba[:, :, 3:4] / 255.0
        background = np.asarray(ALPHA_BACKGROUND, dtype=np.float32)
        blended = rgba[:, :, :3] * alpha + background * (1.0 - alpha)
        meta["alpha_background"] = list(ALPHA_BACKGROUND)
        return np.ascontiguousarray(np.rint(blended).astype(np.uint8))
    rgb = image if mode == "RGB" else image.convert("RGB")
    return np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8))


def _scale_range(values: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Stretch a high-bit-depth greyscale image from its own min..max to 0..255.

    Medical and scientific images often use 10-16 bits of a 16-bit container; scaling by the
    real range (as viewers' auto-window does) keeps their contrast instead of saturating.
    """
    data = values.astype(np.float64)
    finite = np.isfinite(data)
    if not finite.all():
        data = np.where(finite, data, 0.0)
    low, high = float(data.min()), float(data.max())
    # A constant image keeps its level relative to the 16-bit range instead of dividing by zero.
    scaled = (data - low) * (255.0 / (high - low)) if high > low else np.full_like(data, np.clip(low / 257.0, 0.0, 255.0))
    return np.rint(scaled).astype(np.uint8), low, high


# What a decoder's complaint means, in our words: the decoder's own text can name library
# internals (Pillow's "PngImagePlugin.MAX_TEXT_CHUNK") and is never repeated to the client.
_DECODER_COMPLAINTS = (
    ("truncated", "the file ends early"),
    ("too large", "a metadata chunk is larger than allowed"),
    ("max_text", "a metadata chunk is larger than allowed"),
    ("checksum", "a checksum does not match"),
    ("crc", "a checksum does not match"),
    ("broken", "the structure is invalid"),
)


def _short(exc: BaseException) -> str:
    """A fixed description of a decoder error for the client (never the decoder's own text)."""
    text = str(exc).lower()
    for needle, meaning in _DECODER_COMPLAINTS:
        if needle in text:
            return meaning
    return "the data cannot be decoded"
