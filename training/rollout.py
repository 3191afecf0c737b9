"""Attention rollout from the CLS token and simple mass-in-region measures."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from training.shapes import Box


def attention_rollout(attentions: Sequence[torch.Tensor]) -> torch.Tensor:
    """Roll attention out from the CLS token to the patch grid.

    Args:
        attentions: one ``(batch, heads, tokens, tokens)`` tensor per layer,
            first layer first, CLS at token 0 (``output_attentions=True``).

    Returns:
        ``(batch, grid, grid)`` maps that each sum to 1.

    Per layer the heads are averaged, the residual path is modelled as
    ``0.5 * A + 0.5 * I`` and rows are renormalised; the layers are then
    multiplied, last layer on the left (``R = A'_L ... A'_1``).
    """
    rollout: torch.Tensor | None = None
    for layer in attentions:
        a = layer.float().mean(dim=1)
        eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
        a = 0.5 * a + 0.5 * eye
        a = a / a.sum(dim=-1, keepdim=True)
        rollout = a if rollout is None else a @ rollout
    if rollout is None:
        raise ValueError("need at least one attention layer")
    cls_to_patches = rollout[:, 0, 1:]
    grid = round(cls_to_patches.shape[-1] ** 0.5)
    maps = cls_to_patches.reshape(-1, grid, grid)
    return maps / maps.sum(dim=(1, 2), keepdim=True)


def mass_in_box(maps: torch.Tensor, boxes: Sequence[Box], image_size: int) -> torch.Tensor:
    """Fraction of each map's mass inside a pixel box.

    Each patch's value is spread evenly over its pixels, so a box that cuts a
    patch gets the matching share of it.
    """
    grid = maps.shape[-1]
    patch = image_size // grid
    pixels = maps.repeat_interleave(patch, dim=1).repeat_interleave(patch, dim=2) / patch**2
    return torch.stack(
        [pixels[i, y0:y1, x0:x1].sum() for i, (x0, y0, x1, y1) in enumerate(boxes)]
    )


def area_share(boxes: Sequence[Box], image_size: int) -> torch.Tensor:
    """Fraction of a square image covered by each box."""
    return torch.tensor(
        [(x1 - x0) * (y1 - y0) / image_size**2 for x0, y0, x1, y1 in boxes]
    )
