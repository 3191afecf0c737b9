"""Patch attention laid over the input image, at the image's own resolution."""

from __future__ import annotations

import math
from typing import Literal

import cv2
import numpy as np

from app.render.colormaps import LEVELS, palette

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
        # Interpolate colour *indices* (not colours), so blended values stay on the colormap. The
        # small map is quantised first and resized as uint8: the same levels within one step, no
        # full-size float temporaries (on a 1024x768 photo those cost more than the rest), and
        # uint8 saturation clips bicubic overshoot.
        small = cv2.convertScaleAbs(np.clip(scaled, 0.0, 1.0).astype(np.float32), alpha=LEVELS - 1)
        upscaled = cv2.resize(small, (px1 - px0, py1 - py0), interpolation=_CV_INTERPOLATION[interpolation])
        indices = np.ascontiguousarray(upscaled[top - py0: bottom - py0, left - px0: right - px0])
        # A user colour table is a plain lookup: given RGB entries it returns RGB pixels.
        colours = cv2.applyColorMap(indices, _lut(colormap))
        region = out[top:bottom, left:right]
        out[top:bottom, left:right] = cv2.addWeighted(region, 1.0 - alpha, colours, alpha, 0.0)
    if outline is not None:
        thickness = max(1, round(max(height, width) / 200))
        # Clamp to just outside the image: OpenCV takes 32-bit ints, and an edge beyond the image
        # is drawn (not drawn) the same whether it is 1 px or 1e6 px outside.
        x0, x1 = (_clamp(v, width + thickness) for v in (outline[0], outline[2]))
        y0, y1 = (_clamp(v, height + thickness) for v in (outline[1], outline[3]))
        cv2.rectangle(out, (x0, y0), (x1 - 1, y1 - 1), _OUTLINE_RGB, thickness)
    return out


def _clamp(value: float, bound: int) -> int:
    """``value`` rounded into ``[-bound, bound]`` (NaN counts as 0; callers pass finite values)."""
    if not math.isfinite(value):
        return 0 if math.isnan(value) else (bound if value > 0 else -bound)
    return int(min(max(round(value), -bound), bound))


def _lut(colormap: str) -> np.ndarray:
    """The colour table as OpenCV's 256-entry, 3-channel lookup table."""
    return np.ascontiguousarray(palette(colormap).reshape(256, 1, 3))


def overlay_image(image: np.ndarray, scaled: np.ndarray, placement: tuple[float, float, float, float], *,
                  alpha: float, colormap: str, interpolation: Interpolation, outline: tuple[float, float, float, float] | None,
                  max_side: int, max_pixels: int | None = None) -> np.ndarray:
    """:func:`overlay_rgb` at the image's resolution, or downscaled to ``max_side``/``max_pixels``.

    A too-large image is shrunk *before* blending (placement and outline scaled with it), so the
    blend never runs on pixels that are thrown away.
    """
    height, width = fit_within(image.shape[0], image.shape[1], max_side, max_pixels)
    if (height, width) != image.shape[:2]:
        sx, sy = width / image.shape[1], height / image.shape[0]
        image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
        placement = (placement[0] * sx, placement[1] * sy, placement[2] * sx, placement[3] * sy)
        if outline is not None:
            outline = (outline[0] * sx, outline[1] * sy, outline[2] * sx, outline[3] * sy)
    return overlay_rgb(image, scaled, placement, alpha=alpha, colormap=colormap, interpolation=interpolation, outline=outline)

