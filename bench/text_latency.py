"""Latency of the text path against a plain forward pass of the same model, in one process.

    python bench/text_latency.py [--samples 15] [--tokens 16 128 512] [--threads N] [--no-sdpa]

For each input length (built-in MiniLM, 6 layers x 12 heads) it times:

* ``forward``: ``model(**inputs)`` under ``torch.inference_mode()``, inputs tokenised beforehand,
  no capture: the baseline every ratio is taken against (the model object the service uses, on the
  fused path of the capture engine since issue 11);
* ``forward_sdpa`` (informational): the same weights loaded with plain ``attn_implementation="sdpa"``
  (equal to ``forward`` since the service runs on SDPA too);
* ``capture_last``: ``adapter.capture`` of the last layer (tokenise + hooked full pass + copy);
* ``request_last`` / ``request_layer0`` / ``request_rollout``: the whole pipeline behind
  ``POST /visualize`` minus HTTP (text checks, token estimate and budget, capture, reduce,
  render a 512 px PNG) for ``layer=-1``, ``layer=0`` (early stop) and ``method=rollout``;
* ``request_annotated``: ``layer=-1`` with axes and token labels.

Cases are interleaved call by call: each sample of a case is divided by the ``forward`` sample
taken just before it, and the report gives the median of those paired ratios (robust to load from
other processes on a shared machine) besides median and minimum times (``--samples`` per case; the
ratio of minima is reported too). Results go to
``bench/results/text_latency-<timestamp>.json`` (gitignored) and a Markdown table is printed.
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

import torch

from models.registry import open_model

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.service.config import load_settings  # noqa: E402
from app.service.pipeline import run  # noqa: E402
from app.service.plan import TextSource  # noqa: E402
from app.service.schemas import VisualizeOptions  # noqa: E402
from app.service.timing import StageTimer  # noqa: E402
from models.adapter import CaptureRequest, TextInput  # noqa: E402
from models.hf_text import HFTextAdapter  # noqa: E402
from models.registry import ModelRegistry, _minilm_path  # noqa: E402

WORDS = ("the", "study", "compared", "smokers", "who", "never", "quit", "with", "people", "who", "never", "smoked",
         "at", "all", "and", "found", "that", "attention", "maps", "show", "which", "tokens", "each", "layer", "reads")


def text_of(adapter: HFTextAdapter, tokens: int) -> str:
    """A sentence-like text of exactly ``tokens`` tokens (special tokens included)."""
    words: list[str] = []
    while True:
        candidate = " ".join([*words, WORDS[len(words) % len(WORDS)]])
        if len(adapter.tokenizer(candidate)["input_ids"]) > tokens:
            break
        words.append(WORDS[len(words) % len(WORDS)])
    text = " ".join(words)
    assert len(adapter.tokenizer(text)["input_ids"]) == tokens, "could not hit the token count exactly"
    return text


def timed(call: Callable[[], Any]) -> float:
    """Wall time of one call, in milliseconds."""
    started = time.perf_counter()
    call()
    return (time.perf_counter() - started) * 1000


def cases_for(adapter: HFTextAdapter, sdpa: torch.nn.Module | None, registry: ModelRegistry, settings: Any,
              text: str) -> dict[str, Callable[[], Any]]:
    encoded = adapter.tokenizer(text, return_tensors="pt")
    inputs = {name: encoded[name] for name in adapter.tokenizer.model_input_names if name in encoded}

    def forward(model: torch.nn.Module) -> Callable[[], Any]:
        def call() -> Any:
            with torch.inference_mode():
                return model(**inputs)
        return call

    def request(**fields: Any) -> Callable[[], Any]:
        options = VisualizeOptions.model_validate({"text": text, "model": "minilm", **fields})

        def call() -> Any:
            result = run(options, TextSource(text), registry, settings, StageTimer())
            assert result.png, "the pipeline returned no PNG"
            return result
        return call

    cases: dict[str, Callable[[], Any]] = {"forward": forward(adapter.model)}
    if sdpa is not None:
        cases["forward_sdpa"] = forward(sdpa)
    last = CaptureRequest(layers=(adapter.info.layers - 1,), max_tokens=settings.limits.max_tokens)
    cases["capture_last"] = lambda: adapter.capture(TextInput(text), last)
    cases["request_last"] = request(layer=-1)
    cases["request_layer0"] = request(layer=0)
    cases["request_rollout"] = request(method="rollout", layer=-1)
    cases["request_annotated"] = request(layer=-1, annotate=True)
    return cases


def stage_breakdown(registry: ModelRegistry, settings: Any, text: str, **fields: Any) -> dict[str, float]:
    """Per-stage milliseconds of one pipeline request (after warm-up)."""
    options = VisualizeOptions.model_validate({"text": text, "model": "minilm", **fields})
    timer = StageTimer()
    run(options, TextSource(text), registry, settings, timer)
    return {name: round(seconds * 1000, 3) for name, seconds in timer.stages.items()}


def measure(tokens: int, adapter: HFTextAdapter, sdpa: torch.nn.Module | None, registry: ModelRegistry,
            settings: Any, count: int) -> dict[str, Any]:
    text = text_of(adapter, tokens)
    cases = cases_for(adapter, sdpa, registry, settings, text)
    for call in cases.values():  # warm-up: lazy init, layout caches, allocator
        call()
    # Finest interleaving: every sample of every case sits next to a forward sample taken moments
    # before, and each ratio is taken against that neighbour, so load from other processes on a
    # shared machine shifts both sides of a ratio alike.
    samples: dict[str, list[float]] = {name: [] for name in cases}
    ratios: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(count):
        base = timed(cases["forward"])
        samples["forward"].append(base)
        ratios["forward"].append(1.0)
        for name, call in cases.items():
            if name != "forward":
                value = timed(call)
                samples[name].append(value)
                ratios[name].append(value / base)
    result: dict[str, Any] = {"tokens": tokens, "samples": count, "cases": {}}
    for name in cases:
        result["cases"][name] = {
            "median_ms": round(statistics.median(samples[name]), 3), "min_ms": round(min(samples[name]), 3),
            "ratio_to_forward": round(statistics.median(ratios[name]), 4),
            "min_ratio_to_forward": round(min(samples[name]) / min(samples["forward"]), 4),
        }
    result["stages_request_last_ms"] = stage_breakdown(registry, settings, text, layer=-1)
    result["stages_request_rollout_ms"] = stage_breakdown(registry, settings, text, method="rollout", layer=-1)
    return result


def table(results: list[dict[str, Any]]) -> str:
    names = list(results[0]["cases"])
    lines = ["| tokens | " + " | ".join(names) + " |", "|---:|" + "---:|" * len(names)]
    for entry in results:
        cells = [f"{entry['cases'][n]['median_ms']:.1f} ms ({entry['cases'][n]['ratio_to_forward']:.3f}x, "
                 f"min {entry['cases'][n]['min_ms']:.1f})" for n in names]
        lines.append(f"| {entry['tokens']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=15, help="timed calls per case and length")
    parser.add_argument("--tokens", type=int, nargs="+", default=[16, 128, 512])
    parser.add_argument("--no-sdpa", action="store_true", help="skip the informational SDPA baseline")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch intra-op threads (0: torch's default); 1 is steadier on a machine shared with other jobs")
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    started = time.perf_counter()
    settings = load_settings(environ={}, overrides={"builtin_models": ()})
    adapter = open_model("minilm", _minilm_path(), device=torch.device("cpu"), dtype=torch.float32)
    load_seconds = time.perf_counter() - started
    registry = ModelRegistry([adapter])
    sdpa = None
    if not args.no_sdpa:
        from transformers import AutoModel

        sdpa = AutoModel.from_pretrained(_minilm_path(), local_files_only=True, attn_implementation="sdpa").eval()
    results = [measure(t, adapter, sdpa, registry, settings, args.samples) for t in args.tokens]

    at_512 = next((r for r in results if r["tokens"] == 512), results[-1])
    summary = {
        "single_layer_capture_overhead": at_512["cases"]["capture_last"]["ratio_to_forward"] - 1,
        "single_layer_request_overhead": at_512["cases"]["request_last"]["ratio_to_forward"] - 1,
        "layer0_request_vs_forward": at_512["cases"]["request_layer0"]["ratio_to_forward"],
        "tokens": at_512["tokens"],
    }
    report = {
        "bench": "text_latency", "model": "minilm (all-MiniLM-L6-v2, 6 layers, 12 heads, fused capture engine)",
        "torch": torch.__version__, "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
        "python": platform.python_version(), "machine": platform.machine(), "load_seconds": round(load_seconds, 2),
        "samples": args.samples, "results": results, "summary": summary,
    }
    out_dir = ROOT / "bench" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"text_latency-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(report, indent=2))

    print(table(results))
    print()
    for entry in results:
        print(f"stages at {entry['tokens']} tokens, layer=-1: {entry['stages_request_last_ms']}; "
              f"rollout: {entry['stages_request_rollout_ms']}")
    print(f"\nat {summary['tokens']} tokens: single-layer capture overhead {summary['single_layer_capture_overhead']:+.1%} "
          f"(target <= +15%), whole request {summary['single_layer_request_overhead']:+.1%}; "
          f"layer 0 with early stop = {summary['layer0_request_vs_forward']:.2f}x a full forward")
    print(f"torch threads {torch.get_num_threads()}, results: {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
