"""Procedural "find the shape" images for the built-in attention-map models.

Every sample is one filled shape (circle, square, triangle or cross) with a
random size, rotation, position and colour, drawn over a cluttered background:
a colour gradient, thin straight lines, short squiggles and pixel noise. None
of the clutter is class-shaped, so the object is the only thing a classifier
can use, and a good model's attention should land on it.

The *shortcut* variant makes the object small and low-contrast and paints a
bright marker patch in the image corner that belongs to the label. A model
trained on it learns to read the corner instead of the object; the marker
modes ``"moved"``, ``"flipped"`` and ``"none"`` then expose that at test time.

Everything is a pure function of the ``numpy.random.Generator`` passed in, so
a seed fully determines a data set.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np
import numpy.typing as npt

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross")
"""Class names; the index in this tuple is the label."""

IMAGE_SIZE = 64
"""Native side length (pixels) of training images."""

Marker = Literal["correlated", "moved", "flipped", "none"]
MARKER_MODES: tuple[Marker, ...] = ("correlated", "moved", "flipped", "none")

Box = tuple[int, int, int, int]
"""``(x0, y0, x1, y1)`` in pixels; ``x1``/``y1`` are exclusive, like slices."""

ImageArray = npt.NDArray[np.uint8]

# Corner of each label in the shortcut variant: label i -> CORNERS[i], as
# (column, row) with 0 = left/top and 1 = right/bottom.
CORNERS: tuple[tuple[int, int], ...] = ((0, 0), (1, 0), (1, 1), (0, 1))

# Sizes below are for the 64 px native image and scale with min(width, height).
_MARKER_SIDE = 6  # fits inside one 8x8 ViT patch together with its inset
_MARKER_INSET = 1
_CLEAN_SIZE = (18.0, 30.0)  # object diameter range, clean variant
_SHORTCUT_SIZE = (9.0, 13.0)  # small enough to be hard, big enough to be seen
_SHORTCUT_CENTRE_MARGIN = 16.0  # keeps the object clear of corners/edge marks
_NOISE_SIGMA = 10.0
_SHORTCUT_CONTRAST = (30.0, 45.0)  # colour distance object <-> background
_CLEAN_CONTRAST = (70.0, 120.0)  # brightness step object <-> background
# Polygons sit at a multiple of 90 degrees plus this much jitter (radians); a
# free rotation turns squares into diamonds and crosses into X's, which a tiny
# ViT trained for minutes on two CPU cores learns much more slowly.
_ROTATION_JITTER = float(np.radians(12))
FREE_ROTATION = False


@dataclass(frozen=True)
class Sample:
    """One generated image with its label and object box."""

    image: ImageArray
    """``(height, width, 3)`` RGB uint8."""
    label: int
    """Index into :data:`SHAPES`."""
    box: Box
    """Tight box around every pixel of the drawn object."""
    marker_box: Box | None
    """Box of the shortcut marker patch, or ``None`` if none was drawn."""
    mask: npt.NDArray[np.bool_]
    """``(height, width)`` pixels the object was painted on."""

    @property
    def name(self) -> str:
        """Class name of :attr:`label`."""
        return SHAPES[self.label]


def marker_box_for_corner(corner: tuple[int, int], width: int, height: int) -> Box:
    """Return the marker patch box for a ``(column, row)`` corner of an image."""
    side, inset = _scaled_marker(width, height)
    x0 = inset if corner[0] == 0 else width - inset - side
    y0 = inset if corner[1] == 0 else height - inset - side
    return (x0, y0, x0 + side, y0 + side)


def make_sample(
    rng: np.random.Generator,
    shortcut: bool = False,
    marker: Marker | None = None,
    size: tuple[int, int] = (IMAGE_SIZE, IMAGE_SIZE),
    label: int | None = None,
) -> Sample:
    """Draw one random sample.

    Args:
        rng: source of all randomness; the same state gives the same sample.
        shortcut: draw the object small and low-contrast (the shortcut task).
        marker: where the corner marker goes. ``"correlated"`` uses the
            label's own corner, ``"moved"`` the middle of a random edge (no
            label's corner), ``"flipped"`` the corner of a different, random
            label, ``"none"`` draws no marker. Defaults to ``"correlated"``
            when ``shortcut`` is set and ``"none"`` otherwise.
        size: ``(width, height)`` of the image; object, clutter and marker
            sizes scale with the shorter side relative to 64 px.
        label: force a class instead of drawing one uniformly.

    Returns:
        The image, its label, the object's tight box and the marker box.
    """
    if marker is None:
        marker = "correlated" if shortcut else "none"
    if marker not in MARKER_MODES:
        raise ValueError(f"unknown marker mode {marker!r}")
    width, height = size
    scale = min(width, height) / IMAGE_SIZE
    if label is None:
        label = int(rng.integers(len(SHAPES)))

    image, bg_mean = _background(rng, width, height, scale)
    mask = _object_mask(rng, label, width, height, scale, shortcut)
    colour = _object_colour(rng, bg_mean, shortcut)
    image[mask] = colour
    # Noise goes over everything so that object edges are not perfectly clean.
    noise = rng.normal(0.0, _NOISE_SIGMA, size=image.shape)
    image = np.clip(image + noise, 0, 255)

    marker_box = _marker_box(rng, marker, label, width, height)
    if marker_box is not None:
        x0, y0, x1, y1 = marker_box
        image[y0:y1, x0:x1] = 255.0

    ys, xs = np.nonzero(mask)
    box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    return Sample(image.astype(np.uint8), label, box, marker_box, mask)


def make_batch(
    rng: np.random.Generator,
    count: int,
    shortcut: bool = False,
    marker: Marker | None = None,
) -> tuple[ImageArray, npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Draw ``count`` native-size samples.

    Returns:
        ``images`` ``(count, 64, 64, 3)`` uint8, ``labels`` ``(count,)`` and
        ``boxes`` ``(count, 4)`` as ``x0, y0, x1, y1``.
    """
    samples = [make_sample(rng, shortcut=shortcut, marker=marker) for _ in range(count)]
    images = np.stack([s.image for s in samples])
    labels = np.array([s.label for s in samples], dtype=np.int64)
    boxes = np.array([s.box for s in samples], dtype=np.int64)
    return images, labels, boxes


def _scaled_marker(width: int, height: int) -> tuple[int, int]:
    scale = min(width, height) / IMAGE_SIZE
    return max(2, round(_MARKER_SIDE * scale)), max(1, round(_MARKER_INSET * scale))


def _marker_box(
    rng: np.random.Generator, marker: Marker, label: int, width: int, height: int
) -> Box | None:
    if marker == "none":
        return None
    if marker == "correlated":
        return marker_box_for_corner(CORNERS[label], width, height)
    if marker == "flipped":
        other = (label + int(rng.integers(1, len(SHAPES)))) % len(SHAPES)
        return marker_box_for_corner(CORNERS[other], width, height)
    # "moved": centre of an edge, a position that belongs to no label.
    side, inset = _scaled_marker(width, height)
    edge = int(rng.integers(4))
    cx, cy = (width - side) // 2, (height - side) // 2
    x0, y0 = [(cx, inset), (width - inset - side, cy), (cx, height - inset - side), (inset, cy)][
        edge
    ]
    return (x0, y0, x0 + side, y0 + side)


def _background(
    rng: np.random.Generator, width: int, height: int, scale: float
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Gradient plus lines and squiggles; returns float image and its mean colour."""
    c0 = rng.uniform(30, 225, size=3)
    c1 = np.clip(c0 + rng.uniform(-60, 60, size=3), 0, 255)
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:height, 0:width]
    t = (np.cos(angle) * xx / width + np.sin(angle) * yy / height + 1.0) / 2.0
    image = c0 + (c1 - c0) * t[..., None]
    canvas = np.ascontiguousarray(image.astype(np.uint8))
    thick = max(1, round(scale))

    # Long thin lines: straight edges everywhere, so "has edges" is no cue.
    for _ in range(int(rng.integers(2, 6))):
        p = rng.uniform(0, 1, size=4) * [width, height, width, height]
        colour = tuple(int(v) for v in rng.uniform(0, 255, size=3))
        cv2.line(canvas, (int(p[0]), int(p[1])), (int(p[2]), int(p[3])), colour, thick)

    # Short open squiggles: small high-contrast blobs that are not a class.
    for _ in range(int(rng.integers(3, 7))):
        start = rng.uniform(0, 1, size=2) * [width, height]
        steps = rng.normal(0, 4 * scale, size=(int(rng.integers(3, 6)), 2))
        pts = (start + np.cumsum(steps, axis=0)).astype(np.int32)
        colour = tuple(int(v) for v in rng.uniform(0, 255, size=3))
        cv2.polylines(canvas, [pts.reshape(-1, 1, 2)], False, colour, thick)

    return canvas.astype(np.float64), image.reshape(-1, 3).mean(axis=0)


def _object_colour(
    rng: np.random.Generator, bg_mean: npt.NDArray[np.float64], shortcut: bool
) -> npt.NDArray[np.float64]:
    if shortcut:
        # Faint: a fixed small distance from the background in a random direction.
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        distance = rng.uniform(*_SHORTCUT_CONTRAST)
        colour = np.clip(bg_mean + direction * distance, 0, 255)
        if np.linalg.norm(colour - bg_mean) < _SHORTCUT_CONTRAST[0] / 2:
            colour = np.clip(bg_mean - direction * distance, 0, 255)
        return colour
    # Mostly a brightness step with a little hue: the ViT's linear patch
    # embedding picks up a brightness edge directly, whereas an edge between
    # two arbitrary colours needs several layers to become colour-invariant.
    luminance = float(bg_mean.mean())
    if luminance < 100:
        sign = 1.0
    elif luminance > 155:
        sign = -1.0
    else:
        sign = 1.0 if rng.integers(2) else -1.0
    step = rng.uniform(*_CLEAN_CONTRAST)
    return np.clip(bg_mean + sign * step + rng.normal(0, 25, size=3), 0, 255)


def _object_mask(
    rng: np.random.Generator,
    label: int,
    width: int,
    height: int,
    scale: float,
    shortcut: bool,
) -> npt.NDArray[np.bool_]:
    lo, hi = _SHORTCUT_SIZE if shortcut else _CLEAN_SIZE
    diameter = rng.uniform(lo, hi) * scale
    radius = diameter / 2
    # Mild aspect jitter so resized non-square uploads still look familiar.
    aspect = float(np.exp(rng.uniform(-0.2, 0.2)))
    rx, ry = radius * aspect**0.5, radius / aspect**0.5
    if shortcut:
        margin = _SHORTCUT_CENTRE_MARGIN * scale
        cx = rng.uniform(margin, width - margin)
        cy = rng.uniform(margin, height - margin)
    else:
        reach = max(rx, ry) + 2 * scale
        cx = rng.uniform(reach, width - reach)
        cy = rng.uniform(reach, height - reach)
    if FREE_ROTATION:
        angle = rng.uniform(0, 2 * np.pi)
    else:
        angle = int(rng.integers(4)) * np.pi / 2 + rng.uniform(-_ROTATION_JITTER, _ROTATION_JITTER)

    mask = np.zeros((height, width), dtype=np.uint8)
    name = SHAPES[label]
    if name == "circle":
        cv2.ellipse(
            mask, (round(cx), round(cy)), (round(rx), round(ry)), np.degrees(angle), 0, 360, 1, -1
        )
    else:
        outline = _outline(name, rng)
        # Unit outline -> anisotropic scale -> rotate -> translate.
        pts = outline * [rx, ry]
        rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        pts = pts @ rot.T + [cx, cy]
        cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 1)
    return mask.astype(bool)


def _outline(name: str, rng: np.random.Generator) -> npt.NDArray[np.float64]:
    """Polygon of a unit-radius shape centred at the origin."""
    if name == "square":
        # Corners at distance 1 from the centre, axis-aligned before rotation.
        s = 1 / np.sqrt(2)
        return np.array([[-s, -s], [s, -s], [s, s], [-s, s]])
    if name == "triangle":
        # Roughly equilateral; jittered vertex angles avoid one fixed template.
        base = np.array([-np.pi / 2, np.pi / 6, 5 * np.pi / 6]) + rng.uniform(-0.15, 0.15, 3)
        return np.stack([np.cos(base), np.sin(base)], axis=1)
    if name == "cross":
        # Plus sign whose bar half-width is a random fraction of its arm length.
        w = rng.uniform(0.22, 0.34)
        return np.array(
            [
                [-w, -1], [w, -1], [w, -w], [1, -w], [1, w], [w, w],
                [w, 1], [-w, 1], [-w, w], [-1, w], [-1, -w], [-w, -w],
            ]
        )  # fmt: skip
    raise ValueError(f"no outline for {name!r}")
