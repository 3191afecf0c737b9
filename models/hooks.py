"""Forward-hook hygiene and the capture failure error.

attnmap no longer captures with forward hooks: the capture engine (:mod:`models.capture`) records
weights inside the registered attention function. What stays here is the error a model raises
when a wanted layer never delivered its weights, and the hook counts that prove nothing is left
registered on a model between requests (tests and the per-request resource metric).
"""

from __future__ import annotations

from torch import nn


class AttentionNotCaptured(RuntimeError):
    """The model ran but a wanted layer never delivered attention weights (e.g. outside the attention interface)."""


def hooks_on(model: nn.Module) -> int:
    """Number of forward hooks registered anywhere in ``model`` (tests assert it is zero)."""
    return hooks_on_modules(tuple(model.modules()))


def hooks_on_modules(modules: tuple[nn.Module, ...]) -> int:
    """Forward hooks on an already listed set of modules (walking ``modules()`` costs ~0.1 ms per model)."""
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in modules)
