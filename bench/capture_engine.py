"""The capture engine (fused path) against the old eager-attention + forward-hook path, in one process.

    python bench/capture_engine.py [--samples 9] [--tokens 512] [--threads N]

Two models, each loaded twice from the same folder: on the new path (the service's adapter,
``attn_implementation="attnmap_rows"``) and on the old one (``"eager"``, weights taken by a
forward hook on the layers' self-attention modules, as ``models/hooks.py`` did before the engine):

* MiniLM (built-in, 6 layers x 12 heads) at ``--tokens`` tokens, pre-tokenised;
* ``shapes-vit`` (built-in, the overlay's case: last layer), on a preprocessed 64x64 image.

Cases per model (each copies the weights to NumPy, as the adapters do): ``forward`` (no capture),
``last`` (full matrix of the last layer: heatmap/overlay), ``layer0`` (first layer, the pass
stops after it), ``all`` (every layer: rollout/grid), ``gradient`` (every layer with autograd,
score = sum of the last hidden state), and for the new path only ``cls_row`` (row 0 of the last
layer, what an overlay needs at most). Cases are interleaved call by call; each new-path sample is
divided by the old-path sample of the same case taken in the same round, and the report gives the
median of those paired ratios (robust to load from other processes) besides the median times.
Results go to ``bench/results/capture_engine-<timestamp>.json`` (gitignored) and a Markdown table
is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from models import capture  # noqa: E402
from models.capture import CaptureSpec, recording  # noqa: E402
from models.registry import BUILTIN_DIR, _minilm_path  # noqa: E402

WORDS = ("the", "study", "compared", "smokers", "who", "never", "quit", "with", "people", "who", "never", "smoked",
         "at", "all", "and", "found", "that", "attention", "maps", "show", "which", "tokens", "each", "layer", "reads")


class _Stop(Exception):
    """Ends the old path's forward pass after its last hooked layer."""


def old_capture(modules: list[nn.Module], wanted: list[int], forward: Callable[[], Any], *, stop: bool,
                keep_graph: bool = False) -> dict[int, torch.Tensor]:
    """The pre-engine path: eager attention returns ``(context, weights)``; a forward hook keeps the weights."""
    weights: dict[int, torch.Tensor] = {}
    handles = []
    for index in wanted:
        def hook(module: nn.Module, args: Any, output: Any, index: int = index) -> None:
            weights[index] = output[1] if keep_graph else output[1].detach()
            if stop and index == wanted[-1]:
                raise _Stop
        handles.append(modules[index].register_forward_hook(hook))
    try:
        forward()
    except _Stop:
        pass
    finally:
        for handle in handles:
            handle.remove()
    return weights


def new_capture(spec: CaptureSpec, forward: Callable[[], Any]) -> dict[int, torch.Tensor]:
    """The engine: SDPA for every layer, weights of the recorded layers only."""
    with recording(spec) as recorder:
        recorder.run(forward)
    recorder.check()
    return recorder.weights


def to_numpy(weights: dict[int, torch.Tensor]) -> np.ndarray:
    return np.stack([w[0].detach().float().cpu().numpy() for _, w in sorted(weights.items())])


def self_attention(model: nn.Module) -> list[nn.Module]:
    """Each layer's module that returns the attention weights in eager mode (BERT: ``attention.self``)."""
    return list(capture.index_layers(model).values())


Cases = dict[str, tuple[Callable[[], Any], Callable[[], Any] | None]]


def cases_for(old: nn.Module, new: nn.Module, inputs: dict[str, torch.Tensor]) -> Cases:
    """name -> (new-path call, old-path call or None)."""
    layers = len(capture.index_layers(new))
    modules = self_attention(old)
    last, everything = [layers - 1], list(range(layers))

    def infer(model: nn.Module) -> Callable[[], Any]:
        def call() -> Any:
            with torch.inference_mode():
                return model(**inputs)
        return call

    def grad_inputs() -> dict[str, torch.Tensor]:
        # A float input that requires grad (pixels), or plain ids: parameters are trainable here.
        return {k: (v.clone().requires_grad_(True) if v.is_floating_point() else v) for k, v in inputs.items()}

    def new_gradient() -> Any:
        with recording(CaptureSpec(layers=frozenset(everything), keep_graph=True)) as recorder:
            score = new(**grad_inputs())[0].sum()
            attentions = [recorder.weights[i] for i in everything]
            grads = torch.autograd.grad(score, attentions)
        return to_numpy(dict(enumerate(attentions))), [g.numpy() for g in grads]

    def old_gradient() -> Any:
        holder: dict[str, Any] = {}

        def forward() -> None:
            holder["out"] = old(**grad_inputs())[0]
        weights = old_capture(modules, everything, forward, stop=False, keep_graph=True)
        attentions = [weights[i] for i in everything]
        grads = torch.autograd.grad(holder["out"].sum(), attentions)
        return to_numpy(weights), [g.numpy() for g in grads]

    def new_case(spec: CaptureSpec) -> Callable[[], Any]:
        def call() -> Any:
            with torch.inference_mode():
                return to_numpy(new_capture(spec, lambda: new(**inputs)))
        return call

    def old_case(wanted: list[int], stop: bool) -> Callable[[], Any]:
        def call() -> Any:
            with torch.inference_mode():
                return to_numpy(old_capture(modules, wanted, lambda: old(**inputs), stop=stop))
        return call

    return {
        "forward": (infer(new), infer(old)),
        "last": (new_case(CaptureSpec(layers=frozenset(last))), old_case(last, stop=False)),
        "layer0": (new_case(CaptureSpec(layers=frozenset({0}), stop_early=True)), old_case([0], stop=True)),
        "all": (new_case(CaptureSpec(layers=frozenset(everything))), old_case(everything, stop=False)),
        "gradient": (new_gradient, old_gradient),
        "cls_row": (new_case(CaptureSpec(layers=frozenset(last), rows=(0,))), None),
    }


def check_equal(cases: Cases) -> float:
    """Largest difference between the two paths' weights over the cases both have (must be <= 1e-5)."""
    worst = 0.0
    for name, (new_call, old_call) in cases.items():
        if old_call is None or name == "forward":
            continue
        ours, theirs = new_call(), old_call()
        if name == "gradient":
            ours, theirs = ours[0], theirs[0]
        worst = max(worst, float(np.abs(ours - theirs).max()))
    return worst


def measure(label: str, old: nn.Module, new: nn.Module, inputs: dict[str, torch.Tensor], samples: int) -> dict[str, Any]:
    cases = cases_for(old, new, inputs)
    error = check_equal(cases)
    times: dict[str, dict[str, list[float]]] = {name: {"new": [], "old": []} for name in cases}
    for call_new, call_old in cases.values():  # warm-up
        call_new()
        if call_old is not None:
            call_old()
    for _ in range(samples):
        for name, (call_new, call_old) in cases.items():
            for path, call in (("old", call_old), ("new", call_new)):
                if call is None:
                    continue
                started = time.perf_counter()
                call()
                times[name][path].append((time.perf_counter() - started) * 1000)
    rows = {}
    forward_old = times["forward"]["old"]
    for name, paths in times.items():
        new_ms = statistics.median(paths["new"])
        entry: dict[str, Any] = {"new_ms": round(new_ms, 2)}
        if paths["old"]:
            entry["old_ms"] = round(statistics.median(paths["old"]), 2)
            entry["new_over_old"] = round(statistics.median(n / o for n, o in zip(paths["new"], paths["old"], strict=True)), 3)
        entry["new_over_old_forward"] = round(statistics.median(
            n / o for n, o in zip(paths["new"], forward_old, strict=True)), 3)
        rows[name] = entry
    return {"model": label, "max_abs_difference": error, "cases": rows}


def load_pair(path: Path, kind: str) -> tuple[nn.Module, nn.Module]:
    from transformers import AutoModel, AutoModelForImageClassification

    capture.register()
    loader = AutoModelForImageClassification if kind == "vision" else AutoModel
    old = loader.from_pretrained(path, local_files_only=True, attn_implementation="eager").eval()
    new = loader.from_pretrained(path, local_files_only=True, attn_implementation=capture.ATTENTION_NAME).eval()
    capture.use_capture(new)
    capture.index_layers(old)
    return old, new


def text_inputs(path: Path, tokens: int) -> dict[str, torch.Tensor]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    words: list[str] = []
    while len(tokenizer(" ".join(words))["input_ids"]) < tokens:
        words.append(WORDS[len(words) % len(WORDS)])
    encoded = tokenizer(" ".join(words), return_tensors="pt", truncation=True, max_length=tokens)
    assert encoded["input_ids"].shape[1] == tokens
    return {name: encoded[name] for name in tokenizer.model_input_names if name in encoded}


def vision_inputs(path: Path) -> dict[str, torch.Tensor]:
    from models.vision_preprocess import Preprocessor

    config = json.loads((path / "config.json").read_text())
    size = (int(config["image_size"]), int(config["image_size"]))
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, (*size, 3), dtype=np.uint8)
    values, _ = Preprocessor.from_directory(path, size)(pixels)
    return {"pixel_values": torch.from_numpy(values).unsqueeze(0)}


def table(results: list[dict[str, Any]]) -> str:
    lines = ["| model | case | old (eager + hooks) ms | new (fused engine) ms | new / old (paired median) | new / old forward |",
             "|---|---|---:|---:|---:|---:|"]
    for result in results:
        for name, row in result["cases"].items():
            lines.append(f"| {result['model']} | {name} | {row.get('old_ms', '-')} | {row['new_ms']} | "
                         f"{row.get('new_over_old', '-')} | {row['new_over_old_forward']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=9)
    parser.add_argument("--tokens", type=int, default=512)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from transformers.utils import logging as hf_logging
    hf_logging.disable_progress_bar()
    results = []
    minilm = _minilm_path()
    old, new = load_pair(minilm, "text")
    results.append(measure(f"minilm, {args.tokens} tokens", old, new, text_inputs(minilm, args.tokens), args.samples))
    vit = BUILTIN_DIR / "shapes-vit"
    old, new = load_pair(vit, "vision")
    results.append(measure("shapes-vit (overlay input)", old, new, vision_inputs(vit), args.samples))
    report = {"bench": "capture_engine", "samples": args.samples, "threads": torch.get_num_threads(),
              "cpu_count": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__,
              "results": results}
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    path = out / f"capture_engine-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(report, indent=2))
    print(table(results))
    for result in results:
        print(f"{result['model']}: max |new - old| over the weights = {result['max_abs_difference']:.2e}")
    print(f"\nthreads {torch.get_num_threads()}, {args.samples} samples per case; results: {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
