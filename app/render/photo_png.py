"""Fast lossless PNG for photo-like RGB images (image overlays).

OpenCV's PNG writer runs libpng's adaptive filter selection and zlib: about 160 ms for a
1024x768 photo at level 1 on this machine. Here every row uses the "Up" filter (the difference
to the row above: one vectorised subtraction, and on photos and blended heatmaps as good as the
adaptive choice) and the deflate stream goes through ISA-L: about 8 ms, and a smaller file
(1.44 MB against 1.51 MB on the benchmark's photo). Still lossless: decoders give back the
exact pixels.
"""

from __future__ import annotations

import struct

import numpy as np

from app.render.png import SIGNATURE, chunk, compress

_FILTER_UP = 2
# ISA-L's deflate has levels 0-3; zlib-style levels above 3 map to its strongest.
_MAX_LEVEL = 3


def encode_rgb_up(image: np.ndarray, level: int = 1) -> bytes:
    """PNG of a uint8 RGB ``[H, W, 3]`` image, "Up"-filtered rows, ISA-L deflate at ``level``."""
    pixels = np.ascontiguousarray(image, dtype=np.uint8)
    height, width = pixels.shape[:2]
    rows = pixels.reshape(height, width * 3)
    filtered = np.empty((height, width * 3 + 1), dtype=np.uint8)
    filtered[:, 0] = _FILTER_UP
    filtered[0, 1:] = rows[0]  # the row above the first is defined as zeros
    np.subtract(rows[1:], rows[:-1], out=filtered[1:, 1:])  # uint8 arithmetic wraps modulo 256, as PNG wants
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"".join((
        SIGNATURE,
        chunk(b"IHDR", header),
        # The array goes to deflate through the buffer protocol: no 2.4 MB copy for a 1024x768 photo.
        chunk(b"IDAT", compress(filtered, min(max(level, 0), _MAX_LEVEL))),
        chunk(b"IEND", b""),
    ))
