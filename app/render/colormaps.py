"""Colour tables from matplotlib's colormap registry, computed once per name.

The table has 255 colours (index 0 = the colormap's bottom, 254 = its top) plus one spare
entry, 255, used for gaps and blank areas, so every rendered map fits an indexed PNG.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from app.core.errors import InvalidInput

LEVELS = 255
BLANK_INDEX = 255
BLANK_RGB = (255, 255, 255)

# Allow-listed names: perceptually uniform first, then the classics people ask for by name.
ALLOWED_COLORMAPS: tuple[str, ...] = (
    "viridis", "magma", "inferno", "plasma", "cividis", "turbo", "jet", "hot", "gray", "bone",
    "Blues", "Reds", "Greens", "Purples", "Oranges", "YlOrRd", "coolwarm", "RdBu_r", "bwr", "seismic",
)


def check_colormap(name: str) -> str:
    """Return ``name`` if it is allow-listed, else a 422 listing the choices."""
    if name not in ALLOWED_COLORMAPS:
        raise InvalidInput(
            f"colormap must be one of {', '.join(ALLOWED_COLORMAPS)}", code="invalid_colormap", field="colormap"
        )
    return name


@lru_cache(maxsize=len(ALLOWED_COLORMAPS))
def palette(name: str) -> np.ndarray:
    """256 RGB entries (uint8 ``[256, 3]``): 255 colormap levels then the blank colour."""
    import matplotlib  # imported lazily: only the first request per colormap pays for it

    cmap = matplotlib.colormaps[check_colormap(name)]
    levels = cmap(np.linspace(0.0, 1.0, LEVELS))[:, :3]
    table = np.empty((256, 3), dtype=np.uint8)
    table[:LEVELS] = np.round(levels * 255.0).astype(np.uint8)
    table[BLANK_INDEX] = BLANK_RGB
    table.setflags(write=False)
    return table


# Candidates for the colour of masked cells (a causal model's future keys), in order of preference:
# the first that no level of the colormap comes near is used, so masked never reads as "low".
_MASK_CANDIDATES: tuple[tuple[int, int, int], ...] = ((255, 255, 255), (200, 200, 200), (0, 0, 0), (255, 0, 255), (0, 200, 0))
_MASK_DISTANCE = 90.0


@lru_cache(maxsize=len(ALLOWED_COLORMAPS))
def masked_colour(name: str) -> tuple[int, int, int]:
    """RGB for masked cells on colormap ``name``: the first candidate at least 90 RGB units from every level."""
    levels = palette(name)[:LEVELS].astype(np.float64)
    best, best_distance = _MASK_CANDIDATES[0], -1.0
    for candidate in _MASK_CANDIDATES:
        distance = float(np.sqrt(((levels - np.asarray(candidate, dtype=np.float64)) ** 2).sum(axis=1)).min())
        if distance >= _MASK_DISTANCE:
            return candidate
        if distance > best_distance:
            best, best_distance = candidate, distance
    return best


@lru_cache(maxsize=len(ALLOWED_COLORMAPS))
def masked_palette(name: str) -> np.ndarray:
    """:func:`palette` with the spare entry (``BLANK_INDEX``) set to :func:`masked_colour`."""
    table = palette(name).copy()
    table[BLANK_INDEX] = masked_colour(name)
    table.setflags(write=False)
    return table
