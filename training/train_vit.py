"""Train one of the built-in shape ViTs.

Usage::

    python -m training.train_vit --variant clean --out models/builtin/shapes-vit
    python -m training.train_vit --variant shortcut \
        --out models/builtin/shapes-vit-shortcut

The run is deterministic (fixed seeds, deterministic torch kernels, two
threads): the same command on the same software gives the same weights.
It ends by running :mod:`training.evaluate`, which writes
``metrics.json`` next to the weights.
"""

from __future__ import annotations

import os

# Must be set before torch loads its OpenMP runtime: on a shared two-core box,
# spinning OpenMP workers made each step ~20x slower than waiting passively.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
from transformers import ViTForImageClassification

from training import evaluate
from training.common import build_config, to_pixel_values, write_preprocessor_config
from training.shapes import make_batch


@dataclass(frozen=True)
class Settings:
    """Hyper-parameters of one variant."""

    shortcut: bool
    train_size: int
    steps: int
    batch_size: int = 64
    lr: float = 1e-3
    warmup_steps: int = 150
    weight_decay: float = 0.05
    # Rotations/flips are label-preserving for the shapes, but would move the
    # shortcut marker to another label's corner, so the shortcut run skips them.
    augment: bool = True
    data_seed: int = 0
    torch_seed: int = 0
    hidden_size: int = 64
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 128


VARIANTS: dict[str, Settings] = {
    "clean": Settings(shortcut=False, train_size=20000, steps=5000, data_seed=0),
    "shortcut": Settings(shortcut=True, train_size=12000, steps=1200, augment=False, data_seed=1),
}


def set_determinism(seed: int) -> None:
    """Fix seeds, thread count and kernel choice so runs repeat exactly."""
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(2)


def augment(images: npt.NDArray[np.uint8], rng: np.random.Generator) -> npt.NDArray[np.uint8]:
    """Randomly rotate each image by a multiple of 90 degrees and maybe mirror it."""
    out = np.empty_like(images)
    turns = rng.integers(4, size=len(images))
    mirror = rng.integers(2, size=len(images)).astype(bool)
    for i, image in enumerate(images):
        turned = np.rot90(image, k=int(turns[i]))
        out[i] = turned[:, ::-1] if mirror[i] else turned
    return out


def lr_at(step: int, settings: Settings) -> float:
    """Linear warm-up, then cosine decay to zero."""
    if step < settings.warmup_steps:
        return settings.lr * (step + 1) / settings.warmup_steps
    progress = (step - settings.warmup_steps) / max(1, settings.steps - settings.warmup_steps)
    return settings.lr * 0.5 * (1 + math.cos(math.pi * progress))


def train(settings: Settings) -> tuple[ViTForImageClassification, dict[str, float]]:
    """Generate the training set and train a fresh model on it."""
    set_determinism(settings.torch_seed)
    data_rng = np.random.default_rng(settings.data_seed)
    t0 = time.perf_counter()
    images, labels, _ = make_batch(data_rng, settings.train_size, shortcut=settings.shortcut)
    gen_seconds = time.perf_counter() - t0
    print(f"generated {len(images)} images in {gen_seconds:.1f}s", flush=True)

    config = build_config(
        settings.hidden_size, settings.num_layers, settings.num_heads, settings.intermediate_size
    )
    model = ViTForImageClassification(config)
    model.train()
    optimiser = torch.optim.AdamW(
        model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay
    )
    batch_rng = np.random.default_rng(settings.data_seed + 10_000)
    order = batch_rng.permutation(len(images))
    cursor = 0
    t1 = time.perf_counter()
    running = 0.0
    for step in range(settings.steps):
        if cursor + settings.batch_size > len(order):
            order, cursor = batch_rng.permutation(len(images)), 0
        idx = order[cursor : cursor + settings.batch_size]
        cursor += settings.batch_size
        batch = images[idx]
        if settings.augment:
            batch = augment(batch, batch_rng)
        for group in optimiser.param_groups:
            group["lr"] = lr_at(step, settings)
        out = model(pixel_values=to_pixel_values(batch), labels=torch.from_numpy(labels[idx]))
        optimiser.zero_grad(set_to_none=True)
        assert out.loss is not None
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimiser.step()
        running = 0.9 * running + 0.1 * out.loss.item() if step else out.loss.item()
        if step % 100 == 0 or step == settings.steps - 1:
            elapsed = time.perf_counter() - t1
            print(f"step {step:5d}  loss {running:.4f}  {elapsed:6.1f}s", flush=True)
    model.eval()
    timing = {
        "generate_seconds": round(gen_seconds, 1),
        "train_seconds": round(time.perf_counter() - t1, 1),
    }
    return model, timing


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point: train, save and evaluate one variant."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variant", choices=sorted(VARIANTS), required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    settings = VARIANTS[args.variant]

    model, timing = train(settings)
    args.out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(args.out, safe_serialization=True)
    write_preprocessor_config(args.out)
    training = {"variant": args.variant, **asdict(settings), **timing}
    (args.out / "metrics.json").write_text(json.dumps({"training": training}, indent=2) + "\n")
    evaluate.main([str(args.out), "--variant", args.variant])


if __name__ == "__main__":
    main()
