"""Generate a shape-image set for ``attnmap audit``: marked and unmarked images with their marker corners.

Usage::

    python -m training.audit_set --out audit-images [--count 300] [--seed 7]

Writes ``OUT/marked/<shape>/NNNN.png`` (the shortcut variant: small faint shape, bright marker
in the corner that belongs to its label) and ``OUT/unmarked/<shape>/NNNN.png`` (the same
kind of small faint shape, no marker), half of ``--count`` each, plus ``OUT/corners.csv`` and
``OUT/corners.json``: for every image the corner patch where its label's marker goes (one
eighth of each side, the ViT patch the marker sits in), in pixels. ``attnmap audit --boxes
OUT/corners.csv`` measures how much attention each image puts there: a model that learnt the
marker shortcut looks there on marked images; a model that learnt the shapes does not.
Everything is a pure function of ``--seed``.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
from PIL import Image

from training.shapes import CORNERS, IMAGE_SIZE, SHAPES, Box, make_sample

CORNER_FRACTION = 1 / 8
"""Side of the corner region as a share of the image side: one 8x8 patch of a 64 px image."""


def corner_region(label: int, width: int, height: int) -> Box:
    """Pixel box of the corner patch where the shortcut marker of ``label`` is painted."""
    column, row = CORNERS[label]
    side_x, side_y = round(width * CORNER_FRACTION), round(height * CORNER_FRACTION)
    x0 = 0 if column == 0 else width - side_x
    y0 = 0 if row == 0 else height - side_y
    return (x0, y0, x0 + side_x, y0 + side_y)


def generate(out: Path, count: int, seed: int) -> list[dict[str, object]]:
    """Write ``count`` images (half marked, half unmarked) under ``out``; returns one row per image."""
    rng = np.random.default_rng(seed)
    rows: list[dict[str, object]] = []
    for index in range(count):
        marked = index % 2 == 0
        label = (index // 2) % len(SHAPES)
        sample = make_sample(rng, shortcut=True, marker="correlated" if marked else "none", label=label)
        group = "marked" if marked else "unmarked"
        relative = f"{group}/{SHAPES[label]}/{index:04d}.png"
        path = out / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(sample.image).save(path)
        x0, y0, x1, y1 = corner_region(label, IMAGE_SIZE, IMAGE_SIZE)
        rows.append({"path": relative, "x0": x0, "y0": y0, "x1": x1, "y1": y1, "label": SHAPES[label], "marked": marked})
    with open(out / "corners.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["path", "x0", "y0", "x1", "y1", "label", "marked"])
        writer.writeheader()
        writer.writerows(rows)
    corners = {str(r["path"]): {"region": [r["x0"], r["y0"], r["x1"], r["y1"]], "label": r["label"], "marked": r["marked"]}
               for r in rows}
    (out / "corners.json").write_text(json.dumps(corners, indent=1) + "\n", encoding="utf-8")
    return rows


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--count", type=int, default=300, help="images in all, half of them marked (default 300)")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    if args.count < 2:
        parser.error("--count must be at least 2")
    rows = generate(args.out, args.count, args.seed)
    marked = sum(1 for r in rows if r["marked"])
    print(f"wrote {len(rows)} images ({marked} marked, {len(rows) - marked} unmarked) and corners.csv to {args.out}")


if __name__ == "__main__":
    main()
