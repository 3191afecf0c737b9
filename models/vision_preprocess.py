"""Image preprocessing for Hugging Face vision transformers, without torchvision.

Reads the model directory's ``preprocessor_config.json`` (the fields ViT/DeiT/DINOv2 image
processors use) and reproduces the slow (PIL) processors' steps: resize, optional centre crop,
rescale, normalise. It also keeps the geometry of each step, so that a patch map can be put
back on the *original* image: :meth:`Plan.placement` undoes the resize and the crop.

Aspect ratio: like the Hugging Face processors, a ``{"height", "width"}`` size stretches the
image to the model's input (so the whole image is seen, distorted), and ``shortest_edge``
keeps the aspect ratio (then usually centre-crops). We follow the model's own processor rather
than invent a letterbox: that is the input the model was trained and evaluated with. Inputs
whose size differs from the model's position grid (``shortest_edge`` without a crop, or
``do_resize`` false) run with interpolated position embeddings.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

# Fallbacks when a directory has no preprocessor_config.json: the ViT processor's defaults.
DEFAULT_MEAN = (0.5, 0.5, 0.5)
DEFAULT_STD = (0.5, 0.5, 0.5)
DEFAULT_RESAMPLE = 2  # PIL bilinear, as Hugging Face's ViTImageProcessor
_RESAMPLE_NAMES = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}


class PreprocessorConfigError(ValueError):
    """``preprocessor_config.json`` asks for something this preprocessor does not do."""


@dataclass(frozen=True)
class Plan:
    """The geometry of preprocessing one image of ``source`` = (width, height)."""

    source: tuple[int, int]
    resized: tuple[int, int]
    crop: tuple[int, int, int, int]
    """Crop box (left, top, right, bottom) in resized pixels; may extend past the edges (zero padding)."""

    @property
    def input_size(self) -> tuple[int, int]:
        """(height, width) of the tensor the model receives."""
        left, top, right, bottom = self.crop
        return bottom - top, right - left

    def grid(self, patch: tuple[int, int]) -> tuple[int, int]:
        """Patch rows and columns; the patch convolution drops any remainder at the right/bottom."""
        height, width = self.input_size
        return height // patch[0], width // patch[1]

    def placement(self, patch: tuple[int, int]) -> tuple[float, float, float, float]:
        """(x0, y0, x1, y1): the part of the original image the patch grid covers.

        PIL's resize aligns pixel edges (resized pixel x spans original [x*s, (x+1)*s)), so
        undoing it is a scale; the crop is an offset in resized pixels.
        """
        rows, cols = self.grid(patch)
        left, top = self.crop[0], self.crop[1]
        scale_x = self.source[0] / self.resized[0]
        scale_y = self.source[1] / self.resized[1]
        return (left * scale_x, top * scale_y, (left + cols * patch[1]) * scale_x, (top + rows * patch[0]) * scale_y)


@dataclass(frozen=True)
class Preprocessor:
    """What to do to an image before the model sees it (see the module docstring)."""

    size: tuple[int, int] | None = None
    """Fixed (height, width) resize target."""
    shortest_edge: int | None = None
    resample: int = DEFAULT_RESAMPLE
    crop_size: tuple[int, int] | None = None
    crop_pct: float | None = None
    rescale: float | None = 1 / 255
    mean: tuple[float, ...] | None = DEFAULT_MEAN
    std: tuple[float, ...] | None = DEFAULT_STD
    source: str = "preprocessor_config.json"

    @classmethod
    def from_directory(cls, path: Path, image_size: tuple[int, int]) -> Preprocessor:
        """Read ``preprocessor_config.json`` in ``path``; without one, resize to ``image_size``."""
        config_path = path / "preprocessor_config.json"
        if not config_path.is_file():
            return cls(size=image_size, source="defaults (no preprocessor_config.json)")
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise PreprocessorConfigError(f"preprocessor_config.json is unreadable: {exc}") from exc
        if not isinstance(config, dict):
            raise PreprocessorConfigError("preprocessor_config.json must hold an object")
        return cls.from_config(config, image_size)

    @classmethod
    def from_config(cls, config: dict[str, Any], image_size: tuple[int, int]) -> Preprocessor:
        """Build from the fields of a Hugging Face image processor config."""
        size: tuple[int, int] | None = None
        shortest: int | None = None
        if config.get("do_resize", True):
            size, shortest = _parse_size(config.get("size"), image_size)
        crop = _parse_hw(config.get("crop_size"), "crop_size") if config.get("do_center_crop", False) else None
        crop_pct = config.get("crop_pct")
        if crop_pct is not None and not (isinstance(crop_pct, int | float) and 0 < crop_pct <= 1):
            raise PreprocessorConfigError("crop_pct must be in (0, 1]")
        if crop_pct is not None and crop is None and shortest is not None:
            crop = (shortest, shortest)  # ConvNeXt-style: resize to shortest/crop_pct, crop back to shortest
        rescale = float(config.get("rescale_factor", 1 / 255)) if config.get("do_rescale", True) else None
        mean = std = None
        if config.get("do_normalize", True):
            mean = _triple(config.get("image_mean", DEFAULT_MEAN), "image_mean")
            std = _triple(config.get("image_std", DEFAULT_STD), "image_std")
            if min(std) <= 0:
                raise PreprocessorConfigError("image_std must be positive")
        resample = config.get("resample", DEFAULT_RESAMPLE)
        if resample not in _RESAMPLE_NAMES:
            raise PreprocessorConfigError(f"unsupported resample {resample!r}")
        return cls(size=size, shortest_edge=shortest, resample=int(resample), crop_size=crop,
                   crop_pct=float(crop_pct) if crop_pct is not None else None, rescale=rescale, mean=mean, std=std)

    @property
    def fixed_input_size(self) -> tuple[int, int] | None:
        """(height, width) every input gets, or None when it depends on the image."""
        if self.crop_size is not None:
            return self.crop_size
        return self.size

    def plan(self, width: int, height: int) -> Plan:
        """Geometry for a ``width x height`` image (no pixels touched)."""
        resized = (width, height)
        if self.size is not None:
            target_h, target_w = self.size
            if self.crop_pct is not None and self.crop_size is not None:
                target_h, target_w = int(target_h / self.crop_pct), int(target_w / self.crop_pct)
            resized = (target_w, target_h)
        elif self.shortest_edge is not None:
            edge = int(self.shortest_edge / self.crop_pct) if self.crop_pct is not None else self.shortest_edge
            # Hugging Face's rule: the short side becomes `edge`, the long side is truncated.
            resized = (edge, int(edge * height / width)) if width <= height else (int(edge * width / height), edge)
        if self.crop_size is None:
            return Plan((width, height), resized, (0, 0, resized[0], resized[1]))
        crop_h, crop_w = self.crop_size
        top = (resized[1] - crop_h) // 2
        left = (resized[0] - crop_w) // 2
        return Plan((width, height), resized, (left, top, left + crop_w, top + crop_h))

    def __call__(self, pixels: np.ndarray) -> tuple[np.ndarray, Plan]:
        """uint8 RGB ``[H, W, 3]`` -> float32 ``[3, h, w]`` model input, and its plan."""
        plan = self.plan(pixels.shape[1], pixels.shape[0])
        if plan.resized != plan.source:
            pixels = np.asarray(Image.fromarray(pixels).resize(plan.resized, resample=self.resample))
        pixels = _crop(pixels, plan.crop)
        values = pixels.astype(np.float32)
        if self.rescale is not None:
            values *= np.float32(self.rescale)
        if self.mean is not None and self.std is not None:
            values -= np.asarray(self.mean, dtype=np.float32)
            values /= np.asarray(self.std, dtype=np.float32)
        return np.ascontiguousarray(values.transpose(2, 0, 1)), plan

    def describe(self, plan: Plan, patch: tuple[int, int]) -> dict[str, Any]:
        """What was done to one image, for the response's provenance."""
        return {
            "source": self.source,
            "original_size": list(plan.source),
            "resized_to": list(plan.resized),
            "resample": _RESAMPLE_NAMES[self.resample],
            "crop_box": list(plan.crop) if plan.crop != (0, 0, *plan.resized) else None,
            "input_size": list(plan.input_size),
            "rescale": self.rescale,
            "mean": list(self.mean) if self.mean is not None else None,
            "std": list(self.std) if self.std is not None else None,
            "placement": [round(v, 4) for v in plan.placement(patch)],
        }


def _crop(pixels: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """Crop to ``box``, padding with zeros where it extends past the image (as HF's center_crop)."""
    left, top, right, bottom = box
    height, width = pixels.shape[:2]
    if left >= 0 and top >= 0 and right <= width and bottom <= height:
        return pixels[top:bottom, left:right]
    out = np.zeros((bottom - top, right - left, pixels.shape[2]), dtype=pixels.dtype)
    src_x0, src_y0 = max(0, left), max(0, top)
    src_x1, src_y1 = min(width, right), min(height, bottom)
    out[src_y0 - top:src_y1 - top, src_x0 - left:src_x1 - left] = pixels[src_y0:src_y1, src_x0:src_x1]
    return out


def _parse_size(value: Any, image_size: tuple[int, int]) -> tuple[tuple[int, int] | None, int | None]:
    """``size`` as (height, width) or a shortest edge; a missing size means the model's own."""
    if value is None:
        return image_size, None
    if isinstance(value, int) and not isinstance(value, bool):
        return (value, value), None
    if isinstance(value, dict):
        if "height" in value and "width" in value:
            return _parse_hw(value, "size"), None
        edge = value.get("shortest_edge")
        if isinstance(edge, int) and not isinstance(edge, bool) and edge > 0:
            return None, edge
    raise PreprocessorConfigError(f"unsupported size {value!r} (use height/width or shortest_edge)")


def _parse_hw(value: Any, name: str) -> tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = {"height": value, "width": value}
    if isinstance(value, dict):
        height, width = value.get("height"), value.get("width")
        if all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (height, width)):
            return int(height), int(width)  # type: ignore[arg-type]
    raise PreprocessorConfigError(f"unsupported {name} {value!r} (use height and width)")


def _triple(value: Any, name: str) -> tuple[float, ...]:
    if isinstance(value, int | float):
        value = [value] * 3
    if isinstance(value, list | tuple) and len(value) == 3 and all(isinstance(v, int | float) for v in value):
        return tuple(float(v) for v in value)
    raise PreprocessorConfigError(f"{name} must be three numbers")
