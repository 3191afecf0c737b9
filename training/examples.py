"""Render the example images shipped in ``models/builtin/examples``.

Usage::

    python -m training.examples --out models/builtin/examples

Writes a few PNGs plus ``boxes.json`` (object box of each image in its own
pixel coordinates, ``x1``/``y1`` exclusive). Each example is the first sample,
counting up from a fixed seed, that has the wanted class and that the shipped
model classifies correctly, so the demo images show the models at work.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image
from transformers import AutoImageProcessor, ViTForImageClassification

from training.evaluate import load_model
from training.shapes import SHAPES, Box, Sample, make_sample

CLEAN_MODEL = Path("models/builtin/shapes-vit")
SHORTCUT_MODEL = Path("models/builtin/shapes-vit-shortcut")


@dataclass(frozen=True)
class Example:
    """One example image to render."""

    filename: str
    shape: str
    shortcut: bool = False
    size: tuple[int, int] = (64, 64)
    upscale: int = 1
    """Render at ``size`` and enlarge by this factor (box scaled to match)."""


EXAMPLES: tuple[Example, ...] = (
    Example("circle_64.png", "circle"),
    Example("triangle_64.png", "triangle"),
    Example("cross_64.png", "cross"),
    Example("square_shortcut_marker_64.png", "square", shortcut=True),
    Example("triangle_256.png", "triangle", upscale=4),
    Example("square_scene_320x240.png", "square", size=(320, 240)),
)


def predicted_label(model: ViTForImageClassification, processor_dir: Path, image: Image.Image) -> int:
    """Class the model predicts for a PIL image, preprocessed like the web app would."""
    processor = AutoImageProcessor.from_pretrained(processor_dir)
    with torch.no_grad():
        logits = model(**processor(images=image, return_tensors="pt")).logits
    return int(logits.argmax(-1))


def render(example: Example, seed: int) -> tuple[Image.Image, Sample, Box]:
    """Draw the example's sample for ``seed``; returns image, sample and final box."""
    rng = np.random.default_rng(seed)
    sample = make_sample(
        rng, shortcut=example.shortcut, size=example.size, label=SHAPES.index(example.shape)
    )
    pixels = sample.image
    box = sample.box
    if example.upscale > 1:
        k = example.upscale
        # Nearest keeps the box exact: every source pixel becomes a k x k block.
        pixels = np.asarray(cv2.resize(pixels, None, fx=k, fy=k, interpolation=cv2.INTER_NEAREST), dtype=np.uint8)
        box = (box[0] * k, box[1] * k, box[2] * k, box[3] * k)
    return Image.fromarray(pixels), sample, box


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point: write the example PNGs and boxes.json."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=3000)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    models = {False: load_model(CLEAN_MODEL), True: load_model(SHORTCUT_MODEL)}

    boxes: dict[str, dict[str, object]] = {}
    for example in EXAMPLES:
        model_dir = SHORTCUT_MODEL if example.shortcut else CLEAN_MODEL
        for seed in range(args.seed, args.seed + 200):
            image, sample, box = render(example, seed)
            if predicted_label(models[example.shortcut], model_dir, image) == sample.label:
                break
        else:
            raise RuntimeError(f"no correctly classified sample for {example.filename}")
        image.save(args.out / example.filename)
        boxes[example.filename] = {
            "label": example.shape,
            "box": list(box),
            "width": image.width,
            "height": image.height,
            "model": model_dir.name,
            "seed": seed,
        }
        if sample.marker_box is not None:
            boxes[example.filename]["marker_box"] = list(sample.marker_box)
        print(example.filename, boxes[example.filename])
    (args.out / "boxes.json").write_text(json.dumps(boxes, indent=2) + "\n")


if __name__ == "__main__":
    main()
