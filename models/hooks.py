"""The one owner of forward hooks: registers them for one forward pass and always removes them.

Attention modules in eager mode return ``(context, attention_weights)``; the owner keeps the
weights of the layers a request asked for and, when nothing later is needed, stops the forward
pass right after the last of them by raising a private exception it catches itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn


class _StopForward(Exception):
    """Raised inside a hook to end the forward pass early; never escapes :class:`AttentionHooks`."""


class AttentionNotCaptured(RuntimeError):
    """The model ran but did not expose attention weights (e.g. a fused SDPA/flash kernel)."""


class AttentionHooks:
    """Capture attention weights from chosen layers of a model.

    Use as a context manager around the forward call::

        with AttentionHooks(modules, wanted=(3,), stop_early=True) as hooks:
            hooks.run(lambda: model(**inputs))
        weights = hooks.weights  # {3: tensor [B, H, Q, K]}
    """

    def __init__(self, modules: Sequence[nn.Module], wanted: Sequence[int], *, stop_early: bool, keep_graph: bool = False) -> None:
        self.modules = list(modules)
        self.wanted = tuple(sorted(set(wanted)))
        self.stop_early = stop_early
        self.keep_graph = keep_graph
        self.weights: dict[int, torch.Tensor] = {}
        self._handles: list[Any] = []

    def __enter__(self) -> AttentionHooks:
        for index in self.wanted:
            self._handles.append(self.modules[index].register_forward_hook(self._hook_for(index)))
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def remove(self) -> None:
        """Remove every hook this owner registered (idempotent)."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _hook_for(self, index: int) -> Any:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            weights = output[1] if isinstance(output, tuple) and len(output) > 1 else None
            if not isinstance(weights, torch.Tensor):
                raise AttentionNotCaptured(f"layer {index} returned no attention weights")
            self.weights[index] = weights if self.keep_graph else weights.detach()
            if self.stop_early and index == self.wanted[-1]:
                raise _StopForward

        return hook

    def run(self, forward: Any) -> Any:
        """Call ``forward()``; an early stop returns None instead of the model output."""
        try:
            return forward()
        except _StopForward:
            return None

    def check(self, heads: int, tokens: int) -> None:
        """Fail loudly unless exactly the wanted layers came back with shape [B, heads, tokens, tokens]."""
        if tuple(sorted(self.weights)) != self.wanted:
            raise AttentionNotCaptured(
                f"captured layers {sorted(self.weights)} but expected {list(self.wanted)}"
            )
        for index, tensor in self.weights.items():
            if tensor.dim() != 4 or tuple(tensor.shape[1:]) != (heads, tokens, tokens):
                raise AttentionNotCaptured(f"layer {index} attention has shape {tuple(tensor.shape)}")


def hooks_on(model: nn.Module) -> int:
    """Number of forward hooks registered anywhere in ``model`` (tests assert it is zero)."""
    return hooks_on_modules(tuple(model.modules()))


def hooks_on_modules(modules: tuple[nn.Module, ...]) -> int:
    """Forward hooks on an already listed set of modules (walking ``modules()`` costs ~0.1 ms per model)."""
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in modules)

