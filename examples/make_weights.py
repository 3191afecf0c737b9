"""Write the README's example attention stacks: examples/attn.npy and examples/attn.safetensors.

Both hold the same float32 ``[2 layers, 4 heads, 6 queries, 6 keys]`` stack of softmax rows
(seeded, so the files are identical on every machine); the tokens are those of
``examples/tokens.json``. Run from the repository root: ``python examples/make_weights.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

HERE = Path(__file__).resolve().parent
TOKENS = ["[CLS]", "he", "never", "smoked", ".", "[SEP]"]


def example_stack() -> np.ndarray:
    """Softmax rows of seeded random logits, with a bias towards the first ([CLS]) column."""
    logits = np.random.default_rng(13).normal(size=(2, 4, len(TOKENS), len(TOKENS)))
    logits[..., 0] += 1.0
    weights = np.exp(logits)
    return (weights / weights.sum(axis=-1, keepdims=True)).astype(np.float32)


def main() -> None:
    """Write the three files next to this script."""
    stack = example_stack()
    np.save(HERE / "attn.npy", stack, allow_pickle=False)
    save_file({"attention": stack}, str(HERE / "attn.safetensors"))
    (HERE / "tokens.json").write_text(json.dumps(TOKENS) + "\n")


if __name__ == "__main__":
    main()
