"""Pieces shared by training, evaluation and tests: model config and preprocessing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from transformers import ViTConfig

from training.shapes import IMAGE_SIZE, SHAPES

PATCH_SIZE = 8
GRID = IMAGE_SIZE // PATCH_SIZE
# Map [0, 255] to [-1, 1]; the same numbers go into preprocessor_config.json.
IMAGE_MEAN = (0.5, 0.5, 0.5)
IMAGE_STD = (0.5, 0.5, 0.5)
RESCALE_FACTOR = 1 / 255


def build_config(
    hidden_size: int = 96,
    num_layers: int = 4,
    num_heads: int = 4,
    intermediate_size: int = 192,
) -> ViTConfig:
    """Return the small ViT config used for the built-in models."""
    # Eager attention is what returns attention weights; the keyword is handled
    # by the PretrainedConfig base, so it is not in ViTConfig's typed signature.
    base: dict[str, Any] = {"attn_implementation": "eager"}
    return ViTConfig(
        image_size=IMAGE_SIZE,
        patch_size=PATCH_SIZE,
        num_channels=3,
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        intermediate_size=intermediate_size,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        id2label=dict(enumerate(SHAPES)),
        label2id={name: i for i, name in enumerate(SHAPES)},
        **base,
    )


def to_pixel_values(images: npt.NDArray[np.uint8]) -> torch.Tensor:
    """Turn ``(N, H, W, 3)`` uint8 images into normalised ``(N, 3, H, W)`` floats.

    Mirrors what a ``ViTImageProcessor`` built from
    :func:`preprocessor_config` does to an image that already has the model's
    size, so the shipped model sees identical inputs in the web app.
    """
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
    mean = torch.tensor(IMAGE_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGE_STD).view(1, 3, 1, 1)
    return (x * RESCALE_FACTOR - mean) / std


def preprocessor_config() -> dict[str, object]:
    """Return ViTImageProcessor settings matching :func:`to_pixel_values`."""
    return {
        "image_processor_type": "ViTImageProcessor",
        "do_resize": True,
        "size": {"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        "resample": 2,  # PIL bilinear
        "do_center_crop": False,
        "do_rescale": True,
        "rescale_factor": RESCALE_FACTOR,
        "do_normalize": True,
        "image_mean": list(IMAGE_MEAN),
        "image_std": list(IMAGE_STD),
        "do_convert_rgb": True,
    }


def write_preprocessor_config(out: Path) -> None:
    """Write ``preprocessor_config.json`` into the model directory ``out``."""
    text = json.dumps(preprocessor_config(), indent=2) + "\n"
    (out / "preprocessor_config.json").write_text(text)
