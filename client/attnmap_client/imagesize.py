"""Width and height of PNG, JPEG and WebP files from their headers (standard library only).

The audit turns ``--region`` fractions into the pixel box the API expects, so it needs each
image's size as the server sees it: after the EXIF orientation is applied (the server applies
it, like a browser), a quarter-turned photo swaps width and height.
"""

from __future__ import annotations

import struct

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_SWAPPING_ORIENTATIONS = {5, 6, 7, 8}  # the EXIF orientations that turn the image by 90 degrees
_EXIF_ORIENTATION_TAG = 0x0112


class ImageSizeError(ValueError):
    """The bytes are not a PNG, JPEG or WebP file whose size can be read."""


def image_format(data: bytes) -> str | None:
    """``"png"``, ``"jpeg"``, ``"webp"`` from the magic bytes, or None."""
    if data.startswith(_PNG_SIGNATURE):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


def image_size(data: bytes) -> tuple[int, int]:
    """``(width, height)`` as displayed, i.e. after the EXIF orientation; raises :class:`ImageSizeError`."""
    kind = image_format(data)
    try:
        if kind == "png":
            width, height, exif = _png(data)
        elif kind == "jpeg":
            width, height, exif = _jpeg(data)
        elif kind == "webp":
            width, height, exif = _webp(data)
        else:
            raise ImageSizeError("not a PNG, JPEG or WebP file")
    except (struct.error, IndexError) as exc:
        raise ImageSizeError(f"truncated {kind} header") from exc
    if width <= 0 or height <= 0:
        raise ImageSizeError(f"{kind} header gives an empty image")
    if exif is not None and exif_orientation(exif) in _SWAPPING_ORIENTATIONS:
        width, height = height, width
    return width, height


def _png(data: bytes) -> tuple[int, int, bytes | None]:
    if data[12:16] != b"IHDR":
        raise ImageSizeError("PNG without IHDR")
    width, height = struct.unpack(">II", data[16:24])
    exif = None
    offset = 8
    # eXIf may come before or after IDAT; walk the chunk list (headers only, no decoding).
    while offset + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[offset:offset + 8])
        if kind == b"eXIf":
            exif = data[offset + 8:offset + 8 + length]
            break
        if kind == b"IEND":
            break
        offset += 12 + length
    return width, height, exif


# Start-of-frame markers carry the size; C4 (Huffman tables), C8 and CC are not frames.
_SOF_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg(data: bytes) -> tuple[int, int, bytes | None]:
    offset = 2
    exif = None
    while offset < len(data):
        if data[offset] != 0xFF:
            raise ImageSizeError("JPEG marker expected")
        marker = data[offset + 1]
        if marker == 0xFF:  # fill byte
            offset += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # no length
            offset += 2
            continue
        (length,) = struct.unpack(">H", data[offset + 2:offset + 4])
        segment = data[offset + 4:offset + 2 + length]
        if marker == 0xE1 and segment.startswith(b"Exif\x00\x00") and exif is None:
            exif = segment[6:]
        if marker in _SOF_MARKERS:
            height, width = struct.unpack(">HH", segment[1:5])
            return width, height, exif
        if marker in (0xD9, 0xDA):  # end of image / start of scan before any frame header
            break
        offset += 2 + length
    raise ImageSizeError("JPEG without a frame header")


def _webp(data: bytes) -> tuple[int, int, bytes | None]:
    chunk = data[12:16]
    if chunk == b"VP8 ":
        if data[23:26] != b"\x9d\x01\x2a":
            raise ImageSizeError("VP8 frame tag missing")
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF, None
    if chunk == b"VP8L":
        if data[20] != 0x2F:
            raise ImageSizeError("VP8L signature missing")
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1, None
    if chunk == b"VP8X":
        width = int.from_bytes(data[24:27], "little") + 1
        height = int.from_bytes(data[27:30], "little") + 1
        return width, height, _riff_chunk(data, b"EXIF")
    raise ImageSizeError("unknown WebP chunk")


def _riff_chunk(data: bytes, name: bytes) -> bytes | None:
    offset = 12
    while offset + 8 <= len(data):
        kind = data[offset:offset + 4]
        (length,) = struct.unpack("<I", data[offset + 4:offset + 8])
        if kind == name:
            payload = data[offset + 8:offset + 8 + length]
            return payload[6:] if payload.startswith(b"Exif\x00\x00") else payload
        offset += 8 + length + (length & 1)
    return None


def exif_orientation(tiff: bytes) -> int | None:
    """The orientation tag (1-8) of a TIFF-structured EXIF block, or None (unreadable EXIF is ignored)."""
    try:
        order = {b"II": "<", b"MM": ">"}[tiff[:2]]
        (ifd,) = struct.unpack(order + "I", tiff[4:8])
        (count,) = struct.unpack(order + "H", tiff[ifd:ifd + 2])
        for index in range(count):
            entry = tiff[ifd + 2 + 12 * index:ifd + 14 + 12 * index]
            tag, kind = struct.unpack(order + "HH", entry[:4])
            if tag == _EXIF_ORIENTATION_TAG and kind == 3:  # SHORT
                (value,) = struct.unpack(order + "H", entry[8:10])
                return int(value)
    except (KeyError, struct.error):
        return None
    return None
