"""Cost of capturing decoder-LLM attention rows against a plain fused forward pass, smollm2, one run.

    python bench/llm_capture.py [--tokens 512 2048 4096 8192] [--repeats 1] [--threads 2]
                                [--eager-max 2048]

For each prompt length it measures, interleaved length by length (same process, same weights):

* ``sdpa``: the reference. The model loaded with transformers' ``sdpa`` attention, one forward
  pass under ``torch.inference_mode()`` with the logits of the last position only;
* ``capture``: attnmap's adapter capturing the last query row of all 30 layers
  (``CaptureRequest(rows=(-1,))``: tokenise + fused pass + rows + copy to numpy);
* ``request``: the whole ``POST /visualize`` pipeline behind the HTTP layer for
  ``{"view": "layers", "query": "last"}`` (text checks, token estimate and budget, capture, reduce,
  render a 512 px PNG), through Flask's test client (WSGI, no socket);
* ``eager``: ``attn_implementation="eager"`` with ``output_attentions=True``, the way bertviz, inseq
  and LIT read attention. Only up to ``--eager-max`` tokens: at 4,096 tokens its maps alone are
  30 x 9 x 4,096^2 floats = 18 GB, more than this 24 GiB machine shared by other jobs can give.

Each model runs once on a short prompt first (pages in its memory-mapped weights). Time is the
wall time of each call (the minimum over ``--repeats``). Peak memory is the process's
resident set sampled every 10 ms during the call, minus the resident set just before it (so the
resident models are not counted). Ratios are against ``sdpa`` at the same length. Results go to
``bench/results/llm_capture-<timestamp>.json`` (gitignored) and a Markdown table is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.http.factory import create_app  # noqa: E402
from models.adapter import CaptureRequest, TextInput  # noqa: E402
from models.registry import ModelRegistry, open_model  # noqa: E402
from models.smollm2 import convert  # noqa: E402

MiB = 1024 * 1024
SENTENCE = ("Attention maps show which earlier words a language model reads when it writes the next one; "
            "long documents test whether a tool can still draw them. ")


def measure(action: Callable[[], Any]) -> tuple[float, int]:
    """(seconds, peak resident growth in bytes) of one call."""
    process = psutil.Process()
    baseline = process.memory_info().rss
    peak = [baseline]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], process.memory_info().rss)
            time.sleep(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.perf_counter()
    try:
        action()
    finally:
        seconds = time.perf_counter() - started
        done.set()
        sampler.join()
    return seconds, max(0, peak[0] - baseline)


def prompt(tokenizer: Any, tokens: int) -> tuple[str, torch.Tensor]:
    """A text of exactly ``tokens`` tokens and its ids."""
    ids = tokenizer(SENTENCE * (tokens // 20 + 10))["input_ids"][:tokens]
    text = tokenizer.decode(ids)
    encoded = tokenizer(text)["input_ids"]
    assert len(encoded) == tokens, (len(encoded), tokens)
    return text, torch.tensor([encoded])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, nargs="+", default=[512, 2048, 4096, 8192])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--eager-max", type=int, default=2048)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from transformers import AutoModelForCausalLM

    folder = convert()
    adapter = open_model("smollm2", folder, device=torch.device("cpu"), dtype=torch.float32)
    sdpa = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="sdpa", local_files_only=True).eval()
    eager = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager", local_files_only=True).eval()
    client = create_app({"builtin_models": (), "request_deadline_s": 3600.0},
                        registry=ModelRegistry([adapter])).test_client()
    layers = tuple(range(adapter.info.layers))

    def plain(model: Any, ids: torch.Tensor, **kwargs: Any) -> Callable[[], Any]:
        def call() -> Any:
            with torch.inference_mode():
                return model(input_ids=ids, use_cache=False, logits_to_keep=1, **kwargs)
        return call

    def request(text: str) -> Callable[[], Any]:
        def call() -> None:
            response = client.post("/visualize", json={"text": text, "model": "smollm2", "view": "layers", "query": "last"})
            assert response.status_code == 200, response.get_json()
        return call

    # Warm-up: the first pass of each model pages its memory-mapped weights in and initialises
    # kernels; none of that belongs to a measurement.
    warm_text, warm_ids = prompt(adapter.tokenizer, 32)
    for action in (plain(sdpa, warm_ids), plain(eager, warm_ids, output_attentions=True), request(warm_text)):
        action()

    rows: list[dict[str, Any]] = []
    for tokens in args.tokens:
        text, ids = prompt(adapter.tokenizer, tokens)
        cases: dict[str, Callable[[], Any]] = {
            "sdpa": plain(sdpa, ids),
            "capture": lambda text=text: adapter.capture(TextInput(text), CaptureRequest(layers=layers, rows=(-1,),
                                                                                        max_tokens=8192)),
            "request": request(text),
        }
        if tokens <= args.eager_max:
            cases["eager"] = plain(eager, ids, output_attentions=True)
        best: dict[str, tuple[float, int]] = {}
        for _ in range(args.repeats):
            for name, action in cases.items():
                seconds, peak = measure(action)
                old = best.get(name)
                best[name] = (min(seconds, old[0]) if old else seconds, min(peak, old[1]) if old else peak)
        base_s, base_mb = best["sdpa"]
        for name, (seconds, peak) in best.items():
            rows.append({"tokens": tokens, "case": name, "seconds": round(seconds, 3), "peak_mib": round(peak / MiB, 1),
                         "time_ratio": round(seconds / base_s, 3), "memory_ratio": round(peak / max(base_mb, 1), 3)})
        if "eager" not in cases:
            rows.append({"tokens": tokens, "case": "eager", "skipped": f"maps alone {30 * 9 * tokens * tokens * 4 / 2**30:.0f} GiB"})
        print(json.dumps(rows[-len(cases) - (0 if "eager" in cases else 1):]), flush=True)

    results = {"bench": "llm_capture", "threads": args.threads, "repeats": args.repeats, "python": platform.python_version(),
               "torch": torch.__version__, "cpu_count": os.cpu_count(), "load_average": os.getloadavg(), "rows": rows}
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"llm_capture-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(results, indent=2), encoding="utf-8")
    print("\n| tokens | case | time s | x sdpa | peak MiB over resident | x sdpa |\n|---:|---|---:|---:|---:|---:|")
    for row in rows:
        if "skipped" in row:
            print(f"| {row['tokens']} | {row['case']} | skipped: {row['skipped']} | | | |")
        else:
            print(f"| {row['tokens']} | {row['case']} | {row['seconds']} | {row['time_ratio']} | {row['peak_mib']} | "
                  f"{row['memory_ratio']} |")
    print(f"\nwritten to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
