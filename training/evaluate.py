"""Measure a trained shape ViT and record the numbers in its ``metrics.json``.

Usage::

    python -m training.evaluate models/builtin/shapes-vit --variant clean
    python -m training.evaluate models/builtin/shapes-vit-shortcut --variant shortcut

Reports test accuracy on freshly generated images (seeds disjoint from
training), and where the CLS attention rollout puts its mass: inside the
object box for the clean model, on the marker corner for the shortcut model.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
from transformers import ViTForImageClassification

from training.common import PATCH_SIZE, to_pixel_values
from training.rollout import area_share, attention_rollout, mass_in_box
from training.shapes import IMAGE_SIZE, MARKER_MODES, Box, Marker, make_sample

TEST_SIZE = 2000
ROLLOUT_SIZE = 200
# Training uses seeds 0 and 1; everything here starts well clear of them.
TEST_SEED = 1000
ROLLOUT_SEED = 2000


def load_model(path: str | Path) -> ViTForImageClassification:
    """Load a saved model for inference with attention weights available."""
    model = ViTForImageClassification.from_pretrained(path, attn_implementation="eager")
    model.eval()
    return model


@torch.no_grad()
def predict(
    model: ViTForImageClassification, images: npt.NDArray[np.uint8], chunk: int = 250
) -> npt.NDArray[np.int64]:
    """Class index predicted for each ``(N, 64, 64, 3)`` uint8 image."""
    preds = [
        model(pixel_values=to_pixel_values(images[i : i + chunk])).logits.argmax(-1)
        for i in range(0, len(images), chunk)
    ]
    return torch.cat(preds).numpy()


@torch.no_grad()
def rollout_maps(model: ViTForImageClassification, images: npt.NDArray[np.uint8]) -> torch.Tensor:
    """CLS attention rollout, ``(N, grid, grid)``, each map summing to 1."""
    out = model(pixel_values=to_pixel_values(images), output_attentions=True)
    return attention_rollout(out.attentions)


def accuracy(
    model: ViTForImageClassification,
    seed: int,
    count: int,
    shortcut: bool = False,
    marker: Marker | None = None,
) -> float:
    """Accuracy on ``count`` fresh samples drawn from ``seed``."""
    rng = np.random.default_rng(seed)
    samples = [make_sample(rng, shortcut=shortcut, marker=marker) for _ in range(count)]
    images = np.stack([s.image for s in samples])
    labels = np.array([s.label for s in samples])
    return float((predict(model, images) == labels).mean())


def box_rollout_stats(model: ViTForImageClassification, seed: int, count: int) -> dict[str, float]:
    """How much rollout mass lands in the object box, relative to its area."""
    rng = np.random.default_rng(seed)
    samples = [make_sample(rng) for _ in range(count)]
    maps = rollout_maps(model, np.stack([s.image for s in samples]))
    boxes = [s.box for s in samples]
    mass = mass_in_box(maps, boxes, IMAGE_SIZE)
    share = area_share(boxes, IMAGE_SIZE)
    ratio = mass / share
    peak = maps.flatten(1).argmax(1)
    peak_in_box = [
        x0 <= (p % maps.shape[-1] + 0.5) * PATCH_SIZE < x1
        and y0 <= (p // maps.shape[-1] + 0.5) * PATCH_SIZE < y1
        for p, (x0, y0, x1, y1) in zip(peak.tolist(), boxes, strict=True)
    ]
    return {
        "images": count,
        "mean_mass_in_box": round(float(mass.mean()), 4),
        "mean_box_area_share": round(float(share.mean()), 4),
        "mean_in_box_ratio": round(float(ratio.mean()), 3),
        "median_in_box_ratio": round(float(ratio.median()), 3),
        "min_in_box_ratio": round(float(ratio.min()), 3),
        "fraction_peak_patch_in_box": round(float(np.mean(peak_in_box)), 4),
    }


def corner_patch(marker_box: Box) -> Box:
    """The whole ViT patch that contains a corner marker."""
    x0, y0 = (marker_box[0] // PATCH_SIZE) * PATCH_SIZE, (marker_box[1] // PATCH_SIZE) * PATCH_SIZE
    return (x0, y0, x0 + PATCH_SIZE, y0 + PATCH_SIZE)


def marker_rollout_stats(
    model: ViTForImageClassification, seed: int, count: int
) -> dict[str, float]:
    """How much rollout mass lands on the marker's corner patch (marker correlated)."""
    rng = np.random.default_rng(seed)
    samples = [make_sample(rng, shortcut=True) for _ in range(count)]
    maps = rollout_maps(model, np.stack([s.image for s in samples]))
    corners = [corner_patch(s.marker_box) for s in samples if s.marker_box is not None]
    corner_mass = mass_in_box(maps, corners, IMAGE_SIZE)
    object_boxes = [s.box for s in samples]
    object_ratio = mass_in_box(maps, object_boxes, IMAGE_SIZE) / area_share(
        object_boxes, IMAGE_SIZE
    )
    return {
        "images": count,
        "mean_mass_in_marker_corner_patch": round(float(corner_mass.mean()), 4),
        "marker_corner_area_share": round(PATCH_SIZE**2 / IMAGE_SIZE**2, 4),
        "mean_marker_corner_ratio": round(float(corner_mass.mean()) * IMAGE_SIZE**2 / 64, 3),
        "mean_object_in_box_ratio": round(float(object_ratio.mean()), 3),
    }


def evaluate(model: ViTForImageClassification, variant: str) -> dict[str, object]:
    """All metrics for one variant."""
    if variant == "clean":
        return {
            "test_accuracy": accuracy(model, TEST_SEED, TEST_SIZE),
            "test_images": TEST_SIZE,
            "rollout": box_rollout_stats(model, ROLLOUT_SEED, ROLLOUT_SIZE),
        }
    by_marker = {
        mode: accuracy(model, TEST_SEED + 1 + i, TEST_SIZE, shortcut=True, marker=mode)
        for i, mode in enumerate(MARKER_MODES)
    }
    return {
        "test_accuracy": by_marker["correlated"],
        "test_images": TEST_SIZE,
        "accuracy_by_marker": by_marker,
        "rollout": marker_rollout_stats(model, ROLLOUT_SEED + 1, ROLLOUT_SIZE),
    }


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point: evaluate a model dir and update its metrics.json."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--variant", choices=["clean", "shortcut"], required=True)
    args = parser.parse_args(argv)
    torch.set_num_threads(2)

    metrics = evaluate(load_model(args.model_dir), args.variant)
    print(json.dumps(metrics, indent=2))
    path = args.model_dir / "metrics.json"
    existing = json.loads(path.read_text()) if path.exists() else {}
    existing.update(metrics)
    path.write_text(json.dumps(existing, indent=2) + "\n")


if __name__ == "__main__":
    main()
