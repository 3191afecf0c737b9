"""Decoder-only LLMs (Llama, Mistral, Qwen2/3, Gemma 2/3, Phi-3, GPT-2; the built-in smollm2).

The forward pass always runs on the fused kernel, through the capture function of
:mod:`models.capture`: only the layers a request names, and only the query rows it needs (the
last token, one index, the row that produced each generated token), are recomputed as
``softmax(Q K^T * scaling + mask)``. So a row request costs one fused forward pass plus
O(rows x T) per captured layer, and the attention kept is ``[L, H, R, T]``, never ``T x T``
unless a view needs full matrices (a whole heatmap, rollout, gradients).

A model comes from a local Hugging Face directory or a single ``.gguf`` file (dequantised to
float32). Loading ends with a self-check forward pass that must reach every layer: a family
whose attention bypasses transformers' attention interface is a :class:`ModelLoadError`.
"""

from __future__ import annotations

import inspect
import threading
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
from transformers.utils import logging as hf_logging

from app.core.attention import AttentionStack
from app.core.errors import InvalidInput
from models import capture
from models.adapter import Capture, CaptureRequest, ImageInput, ModelAdapter, ModelInfo, TextInput
from models.causal_family import CausalFamilyError, CausalShape, activation_bytes, causal_shape
from models.errors import ModelLoadError
from models.family import Family
from models.hooks import AttentionNotCaptured
from models.prediction import prediction
from models.text_encode import too_many_tokens

_CHECK_TEXT = "Attention check: the quick brown fox jumps over the lazy dog."


class _Prompt(NamedTuple):
    """A tokenised prompt: ids ``[1, T]``, positions of special tokens, and whether it was cut."""

    ids: torch.Tensor
    special: tuple[int, ...]
    truncated: bool


def _numpy(weights: list[torch.Tensor]) -> np.ndarray:
    """Batch item 0 of each layer's ``[B, H, R, T]`` tensor, stacked as float32 ``[L, H, R, T]``."""
    return torch.stack([w[0] for w in weights]).detach().float().cpu().numpy()


class CausalLMAdapter(ModelAdapter):
    """One causal LM from a local directory or ``.gguf`` file, owned by one worker."""

    def __init__(self, name: str, path: str | Path, *, family: Family, device: torch.device, dtype: torch.dtype,
                 description: str = "") -> None:
        """Load config, tokenizer and weights offline on the capture engine's attention, then self-check."""
        path = Path(path)
        hf_logging.disable_progress_bar()
        capture.register()
        folder, gguf = (path.parent, path.name) if path.is_file() else (path, None)
        source: dict[str, Any] = {"gguf_file": gguf} if gguf else {}
        config = AutoConfig.from_pretrained(folder, local_files_only=True, **source)
        try:
            self.shape: CausalShape = causal_shape(config)
        except CausalFamilyError as exc:
            raise ModelLoadError(name, str(exc)) from None
        # GGUF weights are quantised: dequantise to float32 (half precision applies to directories).
        load_dtype = torch.float32 if gguf else dtype
        weights_source: dict[str, Any] = source if gguf else {"use_safetensors": True}
        model: Any = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True, dtype=load_dtype,
                                                          attn_implementation=capture.ATTENTION_NAME, **weights_source)
        try:
            capture.use_capture(model)
        except AttentionNotCaptured as exc:
            raise ModelLoadError(name, str(exc)) from None
        self.model = model.to(device).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True, **source)
        if not getattr(self.tokenizer, "is_fast", False):
            raise ModelLoadError(name, "a fast tokenizer (tokenizer.json) is required")
        self.device = device
        self._lock = threading.RLock()
        self._limit = self.shape.max_positions
        self._eos = self._eos_ids(config)
        self._keeps_logits = "logits_to_keep" in inspect.signature(self.model.forward).parameters
        self.info = ModelInfo(
            name=name, kind="text", family=family.name, layers=self.shape.layers,
            heads=self.shape.heads, device=str(device), dtype=str(load_dtype).removeprefix("torch."),
            max_tokens=self._limit, description=description or f"{family.name} causal LM",
            causal=True, kv_heads=self.shape.kv_heads,
        )
        self._self_check()

    # -- checks -------------------------------------------------------------------------------

    def _eos_ids(self, config: Any) -> set[int]:
        value = getattr(config, "eos_token_id", None)
        ids = value if isinstance(value, list) else [value]
        return {int(i) for i in ids if i is not None}

    def _self_check(self) -> None:
        """Every layer must reach the capture function (families outside the interface never do)."""
        ids = self._ids(_CHECK_TEXT, CaptureRequest(layers=(), truncate=True))
        every = tuple(range(self.info.layers))
        try:
            with self._lock, torch.inference_mode(), capture.recording(capture.CaptureSpec(layers=frozenset(every), rows=(-1,))) as rec:
                self._forward(ids)
            rec.check(every)
        except AttentionNotCaptured as exc:
            raise ModelLoadError(self.info.name, f"attention did not pass through transformers' attention interface "
                                                 f"({exc}); this family cannot be captured on the fused path") from None

    def _cap(self, request: CaptureRequest) -> int:
        return self._limit if request.max_tokens is None else min(self._limit, request.max_tokens)

    def _text(self, inputs: ImageInput | TextInput) -> TextInput:
        if not isinstance(inputs, TextInput):
            raise InvalidInput(f"model {self.info.name!r} is a text model; send text", code="wrong_input_kind", field="model")
        if inputs.text_pair is not None:
            raise InvalidInput("text_pair is for encoders; a causal model reads one text", code="invalid_value",
                                field="text_pair")
        return inputs

    def _check_layers(self, layers: tuple[int, ...]) -> tuple[int, ...]:
        wanted = tuple(sorted(set(layers)))
        if not wanted or wanted[0] < 0 or wanted[-1] >= self.info.layers:
            raise InvalidInput(f"layers must be in [0, {self.info.layers - 1}]; got {list(layers)}",
                                code="out_of_range", field="layer")
        return wanted

    def _rows(self, rows: tuple[int, ...], length: int) -> tuple[int, ...]:
        """Absolute, ascending query positions (negative counts from the end); out of range is a 422."""
        for row in rows:
            if not -length <= row < length:
                raise InvalidInput(f"query must be in [{-length}, {length - 1}]; got {row}", code="out_of_range", field="query")
        return tuple(sorted({row % length for row in rows}))

    def _check_target(self, target: int | None) -> None:
        if target is not None and not 0 <= target < self.shape.vocab:
            raise InvalidInput(f"target must be a token id in [0, {self.shape.vocab - 1}]; got {target}",
                                code="out_of_range", field="target")

    # -- interface ----------------------------------------------------------------------------

    def estimate_tokens(self, inputs: ImageInput | TextInput, request: CaptureRequest) -> int:
        """Prompt length after the token cap (room is kept for ``generate`` tokens), from the tokenizer alone."""
        text = self._text(inputs)
        self._check_target(request.target)
        if request.target_text is not None:
            raise InvalidInput("target_text is for sentence encoders; give target (a token id) for a causal model",
                                code="invalid_value", field="target_text")
        cap = self._cap(request) - request.generate
        with self._lock:
            count = len(self.tokenizer(text.text, split_special_tokens=True, verbose=False)["input_ids"])
        if count > cap and not request.truncate:
            raise too_many_tokens("text", count, cap)
        return min(count, cap)

    def working_bytes(self, tokens: int, request: CaptureRequest) -> int:
        """What the request materialises: captured rows (or full matrices) plus the pass's activations."""
        shape = self.shape
        total = tokens + request.generate
        layers = len(request.layers)
        if request.gradient:
            # Full matrices of the captured layers, their gradients, and the backward pass's activations.
            kept = capture.attention_bytes(None, total, layers, shape.heads)
            return 2 * kept + activation_bytes(shape, total, backward=True)
        rows = request.generate if request.generate else (len(request.rows) if request.rows is not None else None)
        return capture.attention_bytes(rows, total, layers, shape.heads) + activation_bytes(shape, total, backward=False)

    def capture(self, inputs: ImageInput | TextInput, request: CaptureRequest) -> Capture:
        """Fused forward pass capturing the requested rows (or full matrices) of the requested layers."""
        text = self._text(inputs)
        self._check_target(request.target)
        wanted = self._check_layers(request.layers)
        with self._lock:
            prompt = self._prompt(text.text, request)
            ids = prompt.ids
            labels = self._labels(ids[0].tolist())
            meta: dict[str, Any] = {"causal": True, "truncated": prompt.truncated}
            if request.generate:
                return self._generate(prompt, labels, wanted, request, meta)
            length = int(ids.shape[1])
            rows = None if request.rows is None else self._rows(request.rows, length)
            gradients = None
            if request.gradient:
                weights, gradients, prediction = self._backward(ids, wanted, request)
            else:
                spec = capture.CaptureSpec(layers=frozenset(wanted), rows=rows,
                                           full_layers=frozenset() if rows is not None else frozenset(wanted))
                with torch.inference_mode(), capture.recording(spec) as rec:
                    logits = self._forward(ids)
                rec.check(wanted)
                weights = _numpy([rec.weights[layer] for layer in wanted])
                prediction = self._prediction(logits)
        stack = AttentionStack(weights=weights, layers=wanted, num_layers=self.info.layers, tokens=labels,
                               gradients=gradients, special_tokens=prompt.special, meta=meta,
                               query_rows=rows if not request.gradient else None, causal=True)
        return Capture(stack=stack, prediction=prediction)

    def warm_up(self) -> None:
        """One small row capture so the first request does not pay for lazy initialisation."""
        self.capture(TextInput(_CHECK_TEXT), CaptureRequest(layers=(self.info.layers - 1,), rows=(-1,)))

    # -- passes -------------------------------------------------------------------------------

    def _ids(self, text: str, request: CaptureRequest) -> torch.Tensor:
        """Token ids ``[1, T]`` under the cap (see :meth:`_prompt`)."""
        return self._prompt(text, request).ids

    def _prompt(self, text: str, request: CaptureRequest) -> _Prompt:
        """Token ids under the cap; ``truncate`` keeps the end (the tokens a next-token view reads)."""
        encoding = self.tokenizer(text, split_special_tokens=True, return_special_tokens_mask=True, verbose=False)
        ids: list[int] = list(encoding["input_ids"])
        special = list(encoding["special_tokens_mask"])
        cap = self._cap(request) - request.generate
        truncated = len(ids) > cap
        if truncated:
            if not request.truncate:
                raise too_many_tokens("text", len(ids), cap)
            ids, special = ids[-cap:], special[-cap:]
        if not ids:
            raise InvalidInput("text has no tokens", code="empty_text", field="text")
        return _Prompt(torch.tensor([ids], device=self.device), tuple(i for i, flag in enumerate(special) if flag),
                       truncated)

    def _labels(self, ids: list[int]) -> list[str]:
        """One readable label per token (decoded text, so byte-level BPE shows ' Paris', not 'ĠParis')."""
        return [str(self.tokenizer.decode([i])) for i in ids]

    def _forward(self, ids: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        """Logits of the last position only (full logits would be T x vocab floats: 1.6 GB at 8,192 tokens)."""
        if self._keeps_logits:
            kwargs["logits_to_keep"] = 1
        output = self.model(input_ids=ids, use_cache=False, **kwargs)
        return output.logits[:, -1, :]

    def _prediction(self, logits: torch.Tensor) -> dict[str, Any]:
        row = logits[0].detach().float()
        probabilities = torch.softmax(row, dim=-1)
        predicted = int(row.argmax())
        probability = float(probabilities[predicted])
        # The next token: its id is the class index, its text the label.
        return prediction(label=str(self.tokenizer.decode([predicted])), index=predicted, probability=probability,
                          score_kind="probability", score=probability)

    def _backward(self, ids: torch.Tensor, wanted: tuple[int, ...],
                  request: CaptureRequest) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        """Full matrices of the captured layers and d(next-token logit)/d(attention), in layer order."""
        spec = capture.CaptureSpec(layers=frozenset(wanted), rows=None, full_layers=frozenset(wanted), keep_graph=True)
        with torch.inference_mode(False), torch.enable_grad(), capture.recording(spec) as rec:
            logits = self._forward(ids.clone())
            rec.check(wanted)
            predicted = self._prediction(logits)
            target = predicted["index"] if request.target is None else request.target
            score = logits[0, target]
            attentions = [rec.weights[layer] for layer in wanted]
            gradients = torch.autograd.grad(score, attentions)
        described = {**predicted, "score_kind": "logit", "score": float(score.detach()), "target": target,
                     "target_label": str(self.tokenizer.decode([target]))}
        return _numpy(attentions), _numpy(list(gradients)), described

    def _generate(self, prompt_ids: _Prompt, labels: list[str], wanted: tuple[int, ...], request: CaptureRequest,
                  meta: dict[str, Any]) -> Capture:
        """Greedy decoding with a KV cache; each step captures the last row, the one that produces the next token.

        Step 0 is the prompt pass; step i reads prompt + the i tokens generated before. The rows end
        as ``[L, H, N, P + N - 1]`` with zeros right of each row's own position (the causal mask).
        """
        from transformers import DynamicCache

        ids = prompt_ids.ids
        prompt = int(ids.shape[1])
        cache = DynamicCache(config=self.model.config)
        generated: list[int] = []
        first: dict[str, Any] | None = None
        current = ids
        stopped = False
        kwargs: dict[str, Any] = {"logits_to_keep": 1} if self._keeps_logits else {}
        # One recording over every step: the engine keeps each call's last row on one absolute key
        # axis (a sliding-window cache that drops keys leaves zeros before the window).
        spec = capture.CaptureSpec(layers=frozenset(wanted), rows=(-1,), per_step=True)
        with torch.inference_mode(), capture.recording(spec) as rec:
            for _ in range(request.generate):
                output = self.model(input_ids=current, past_key_values=cache, use_cache=True, **kwargs)
                logits = output.logits[:, -1, :]
                if first is None:
                    first = self._prediction(logits)
                token = int(logits[0].argmax())
                generated.append(token)
                cache = output.past_key_values
                current = torch.tensor([[token]], device=self.device)
                if token in self._eos:
                    stopped = True
                    break
        rec.check(wanted)
        count = len(generated)
        weights = _numpy([rec.stacked_steps(layer) for layer in wanted])
        assert weights.shape[2:] == (count, prompt + count - 1), weights.shape
        generated_labels = self._labels(generated)
        meta.update(prompt_tokens=prompt, generated_tokens=generated_labels, generated_ids=generated,
                    generated_text=self.tokenizer.decode(generated), stopped_at_eos=stopped)
        all_labels = labels + generated_labels[:-1]
        stack = AttentionStack(weights=weights, layers=wanted, num_layers=self.info.layers, tokens=all_labels,
                               special_tokens=prompt_ids.special, meta=meta,
                               query_rows=tuple(range(prompt - 1, prompt - 1 + count)), row_tokens=generated_labels,
                               causal=True)
        return Capture(stack=stack, prediction=first)
