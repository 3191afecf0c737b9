"""Patch attention laid over the input image, at the image's own resolution."""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np

from app.render.colormaps import LEVELS, palette
from app.render.normalize import to_indices
from app.render.png import encode_rgb

Interpolation = Literal["nearest", "bilinear", "bicubic"]
_CV_INTERPOLATION = {"nearest": cv2.INTER_NEAREST, "bilinear": cv2.INTER_LINEAR, "bicubic": cv2.INTER_CUBIC}
_OUTLINE_RGB = (255, 255, 255)


def fit_within(height: int, width: int, max_side: int, max_pixels: int | None = None) -> tuple[int, int]:
    """Scale ``height x width`` down (never up) to at most ``max_side`` per side and ``max_pixels`` in all."""
    scale = min(1.0, max_side / max(height, width))
    if max_pixels is not None:
        scale = min(scale, (max_pixels / (height * width)) ** 0.5)
    return max(1, round(height * scale)), max(1, round(width * scale))


def overlay_rgb(image: np.ndarray, scaled: np.ndarray, placement: tuple[float, float, float, float], *,
                alpha: float, colormap: str, interpolation: Interpolation = "bilinear",
                outline: tuple[float, float, float, float] | None = None) -> np.ndarray:
    """Blend a [0, 1] patch map onto ``image`` (uint8 RGB) inside ``placement`` = x0, y0, x1, y1.

    ``placement`` is where the model's input came from, in the image's pixel coordinates (the
    processor's resize and crop undone), so a patch lands on the pixels it saw. Pixels outside
    it (cropped away by the processor) are left unblended. ``outline`` draws a box, e.g. the
    ``region`` whose attention share was measured.
    """
    height, width = image.shape[:2]
    # One rounding for every edge: the map is resized to exactly this pixel box and the slice
    # offsets below stay non-negative (a crop placement such as x0 = 12.07 is common).
    px0, py0, px1, py1 = (round(v) for v in placement)
    left, top = max(0, px0), max(0, py0)
    right, bottom = min(width, px1), min(height, py1)
    out = image.copy()
    if right > left and bottom > top:
        # Resize the scaled values (not colours) so bilinear blending stays on the colormap.
        upscaled = cv2.resize(scaled.astype(np.float32), (px1 - px0, py1 - py0),
                              interpolation=_CV_INTERPOLATION[interpolation])
        crop = upscaled[top - py0: bottom - py0, left - px0: right - px0]
        crop = np.clip(crop, 0.0, 1.0)
        colours = palette(colormap)[:LEVELS][to_indices(crop)]
        region = out[top:top + crop.shape[0], left:left + crop.shape[1]]
        blended = (1.0 - alpha) * region.astype(np.float32) + alpha * colours.astype(np.float32)
        out[top:top + crop.shape[0], left:left + crop.shape[1]] = np.rint(blended).astype(np.uint8)
    if outline is not None:
        thickness = max(1, round(max(height, width) / 200))
        cv2.rectangle(out, (round(outline[0]), round(outline[1])), (round(outline[2]) - 1, round(outline[3]) - 1),
                      _OUTLINE_RGB, thickness)
    return out


def overlay_png(image: np.ndarray, scaled: np.ndarray, placement: tuple[float, float, float, float], *,
                alpha: float, colormap: str, interpolation: Interpolation, outline: tuple[float, float, float, float] | None,
                max_side: int, max_pixels: int | None = None, level: int = 1) -> bytes:
    """Encode :func:`overlay_rgb` as PNG, downscaled if the image is larger than ``max_side``."""
    blended = overlay_rgb(image, scaled, placement, alpha=alpha, colormap=colormap,
                          interpolation=interpolation, outline=outline)
    height, width = fit_within(blended.shape[0], blended.shape[1], max_side, max_pixels)
    if (height, width) != blended.shape[:2]:
        blended = cv2.resize(blended, (width, height), interpolation=cv2.INTER_AREA)
    return encode_rgb(blended, level)
