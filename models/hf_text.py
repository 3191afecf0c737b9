"""Hugging Face text encoders (BERT, RoBERTa, DistilBERT, ELECTRA; the built-in MiniLM is a BERT).

A model is read from a local directory, offline, on the fused path: it loads with the capture
engine's attention (:data:`models.capture.ATTENTION_NAME`), so every layer runs transformers' SDPA
and only the layers a request asks for also materialise their ``[B, H, T, T]`` weights
(:mod:`models.capture`). Loading ends with a self-check that every layer really reaches the
engine and hands back weights of the right shape; a model that does not (loaded with another
implementation, or a family outside transformers' attention interface) is a
:class:`~models.errors.ModelLoadError`, not a wrong map later.

Per request the adapter tokenises under the token cap, records only the requested layers, and
stops the forward pass after the last of them unless a later part of the model is needed
(gradients, or a prediction that only the full pass yields). Gradient methods record with
``keep_graph`` so ``torch.autograd.grad(score, weights)`` reaches the recorded weights.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification, AutoTokenizer
from transformers.utils import logging as hf_logging

from app.core.attention import AttentionStack
from models import capture
from models.adapter import Capture, CaptureRequest, ImageInput, ModelAdapter, ModelInfo, TextInput
from models.capture import ATTENTION_NAME, CaptureSpec, Recorder, recording
from models.errors import ModelLoadError
from models.family import Family, FamilyError, attention_modules
from models.hooks import AttentionNotCaptured
from models.text_encode import Encoded, count_tokens, encode, too_many_tokens
from models.text_score import check_target, classification_prediction, classification_score, embedding_score, mean_pool

_CHECK_TEXT = "Attention check: the quick brown fox."


def _stack_numpy(tensors: Sequence[torch.Tensor]) -> np.ndarray:
    """Batch item 0 of each layer's tensor as one float32 ``[L, H, T, T]`` array on the CPU."""
    return torch.stack([t[0] for t in tensors]).detach().float().cpu().numpy()


class HFTextAdapter(ModelAdapter):
    """One text encoder from a local Hugging Face directory, owned by one worker."""

    def __init__(self, name: str, path: str | Path, *, family: Family, device: torch.device, dtype: torch.dtype,
                 description: str = "", attn_implementation: str = ATTENTION_NAME) -> None:
        """Load config, tokenizer and weights offline; raise ModelLoadError when unusable.

        ``attn_implementation`` exists so tests can force another one and watch the self-check fail.
        """
        capture.register()
        path = Path(path)
        hf_logging.disable_progress_bar()  # a per-load tqdm bar would interleave with the JSON logs
        config = AutoConfig.from_pretrained(path, local_files_only=True)
        self._classifier = has_classification_head(config)
        self.family = family
        loader = AutoModelForSequenceClassification if self._classifier else AutoModel
        # use_safetensors: a directory with only pytorch_model.bin (a pickle) is refused, not unpickled.
        model = loader.from_pretrained(path, local_files_only=True, use_safetensors=True,
                                       attn_implementation=attn_implementation, dtype=dtype)
        self.model = model.to(device).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        if not getattr(self.tokenizer, "is_fast", False):
            raise ModelLoadError(name, "a fast tokenizer (tokenizer.json) is required for word alignment")
        if len(self.tokenizer) > config.vocab_size:
            raise ModelLoadError(name, f"the tokenizer has {len(self.tokenizer)} tokens but the model only "
                                       f"{config.vocab_size} embeddings")
        try:
            self._attention = attention_modules(self.model, int(config.num_hidden_layers))
        except FamilyError as exc:
            raise ModelLoadError(name, str(exc)) from None
        try:
            capture.check_layers(self.model, self._attention)
        except AttentionNotCaptured as exc:
            raise ModelLoadError(name, str(exc)) from None
        self.device = device
        # Recordings are per request (a ContextVar), but a fast tokenizer's truncation setting is
        # mutable state ("Already borrowed" under threads): one request at a time per model,
        # whatever the worker class.
        self._lock = threading.RLock()
        self._type_vocab_size = int(getattr(config, "type_vocab_size", 1) or 1)
        self._limit = position_limit(config, family)
        model_max = getattr(self.tokenizer, "model_max_length", None)
        if isinstance(model_max, int) and 0 < model_max < self._limit:
            self._limit = model_max  # some tokenizers know of a tighter limit than the position table
        labels: tuple[str, ...] = ()
        if self._classifier:
            labels = tuple(str(config.id2label.get(i, f"LABEL_{i}")) for i in range(config.num_labels))
        self.info = ModelInfo(
            name=name, kind="text", family=str(config.model_type), layers=len(self._attention),
            heads=int(config.num_attention_heads), device=str(device), dtype=str(dtype).removeprefix("torch."),
            max_tokens=self._limit, labels=labels, description=description,
        )
        self._self_check()

    # -- checks -------------------------------------------------------------------------------

    def _self_check(self) -> None:
        """Every layer must reach the capture engine with weights of the right shape (fails for SDPA/eager loads)."""
        encoded = self._encode(_CHECK_TEXT, None, CaptureRequest(layers=(), truncate=True), "text")
        wanted = tuple(range(self.info.layers))
        try:
            with self._lock, torch.inference_mode(), recording(CaptureSpec(layers=frozenset(wanted))) as recorder:
                self.model(**encoded.inputs)
            self._check(recorder, encoded.length)
        except AttentionNotCaptured as exc:
            implementation = getattr(self.model.config, "_attn_implementation", "unknown")
            raise ModelLoadError(self.info.name, f"attention weights are not captured ({exc}; attn_implementation="
                                                 f"{implementation!r}); the model must load with "
                                                 f"attn_implementation={ATTENTION_NAME!r}") from None

    def _check(self, recorder: Recorder, tokens: int) -> None:
        """Fail loudly unless every recorded layer came back as ``[1, heads, tokens, tokens]``."""
        recorder.check()
        for index, tensor in recorder.weights.items():
            if tuple(tensor.shape) != (1, self.info.heads, tokens, tokens):
                raise AttentionNotCaptured(f"layer {index} attention has shape {tuple(tensor.shape)}")

    def _cap(self, request: CaptureRequest) -> int:
        """Token cap: the model's position limit, lowered by the service's cap when set."""
        return self._limit if request.max_tokens is None else min(self._limit, request.max_tokens)

    def _text_input(self, inputs: ImageInput | TextInput) -> TextInput:
        # The request plan sends only texts to text models; anything else is a programming error.
        if not isinstance(inputs, TextInput):
            raise TypeError(f"text model {self.info.name!r} got {type(inputs).__name__}")
        return inputs


    # -- interface ----------------------------------------------------------------------------

    def estimate_tokens(self, inputs: ImageInput | TextInput, request: CaptureRequest) -> int:
        """Sequence length after the token cap, from the tokenizer alone (422 when over it without truncate)."""
        text = self._text_input(inputs)
        check_target(request.target, request.target_text, self.info.labels)
        cap = self._cap(request)
        with self._lock:
            count = count_tokens(self.tokenizer, text.text, text.text_pair)
            other = count_tokens(self.tokenizer, request.target_text, None) if request.target_text is not None else 0
        if count > cap and not request.truncate:
            if text.text_pair is None:
                raise too_many_tokens("text", count, cap)
            # Name the field that pushed the pair over the cap (the error path only pays for this).
            with self._lock:
                alone = count_tokens(self.tokenizer, text.text, None)
            raise too_many_tokens("text" if alone > cap else "text_pair", count, cap, subject="text and text_pair")
        if other > cap and not request.truncate:
            raise too_many_tokens("target_text", other, cap)
        return min(count, cap)

    def capture(self, inputs: ImageInput | TextInput, request: CaptureRequest) -> Capture:
        """Hooked forward pass over the requested layers; gradients too when ``request.gradient``."""
        text = self._text_input(inputs)
        check_target(request.target, request.target_text, self.info.labels)
        wanted = tuple(sorted(set(request.layers)))  # resolved by the request plan
        gradients = None
        prediction: dict[str, Any] | None
        with self._lock:
            encoded = self._encode(text.text, text.text_pair, request, "text")
            if request.gradient:
                weights, gradients, prediction = self._capture_with_gradients(encoded, wanted, request)
            else:
                weights, prediction = self._capture_attention(encoded, wanted)
        stack = AttentionStack(weights=weights, layers=wanted, num_layers=self.info.layers, tokens=encoded.tokens,
                               gradients=gradients, special_tokens=encoded.special, words=encoded.words,
                               meta=dict(encoded.meta))
        return Capture(stack=stack, prediction=prediction)

    def warm_up(self) -> None:
        """One full forward pass so the first request does not pay for lazy initialisation."""
        self.capture(TextInput(_CHECK_TEXT), CaptureRequest(layers=(self.info.layers - 1,)))

    # -- forward passes -----------------------------------------------------------------------

    def _encode(self, text: str, pair: str | None, request: CaptureRequest, field_name: str) -> Encoded:
        return encode(self.tokenizer, text, pair, cap=self._cap(request), truncate=request.truncate,
                      field_name=field_name, type_vocab_size=self._type_vocab_size, device=self.device)

    def _capture_attention(self, encoded: Encoded, wanted: tuple[int, ...]) -> tuple[np.ndarray, dict[str, Any] | None]:
        # Stopping after the last wanted layer skips the rest of the encoder; when that is the last
        # layer anyway, finishing the pass costs one FFN and yields the prediction for free.
        stop_early = wanted[-1] < self.info.layers - 1
        with torch.inference_mode(), recording(CaptureSpec(layers=frozenset(wanted), stop_early=stop_early)) as recorder:
            output = recorder.run(lambda: self.model(**encoded.inputs))
        self._check(recorder, encoded.length)
        prediction = None
        if output is not None and self._classifier:
            prediction = classification_prediction(output.logits, self.info.labels)
        return _stack_numpy([recorder.weights[i] for i in wanted]), prediction

    def _capture_with_gradients(self, encoded: Encoded, wanted: tuple[int, ...],
                                request: CaptureRequest) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        # A caller inside inference mode (a benchmark, a warm-up) would make every tensor here an
        # inference tensor, which autograd refuses to save: leave that mode and clone the inputs,
        # which may have been tokenised inside it.
        with torch.inference_mode(False):
            inputs = {name: tensor.clone() for name, tensor in encoded.inputs.items()}
            reference = None
            if request.target_text is not None:
                reference = self._sentence_embedding(request.target_text, request)
            return self._backward(inputs, encoded.length, wanted, request, reference)

    def _backward(self, inputs: dict[str, torch.Tensor], length: int, wanted: tuple[int, ...], request: CaptureRequest,
                  reference: torch.Tensor | None) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        with torch.enable_grad(), recording(CaptureSpec(layers=frozenset(wanted), keep_graph=True)) as recorder:
            output = self.model(**inputs)
            self._check(recorder, length)
            if self._classifier:
                score, prediction = classification_score(output.logits, request.target, self.info.labels)
            else:
                score, prediction = embedding_score(output.last_hidden_state, inputs.get("attention_mask"), reference)
            attentions = [recorder.weights[i] for i in wanted]
            # autograd.grad returns gradients in the order of ``attentions`` (layer order); module
            # backward hooks would fire last layer first and invite mis-pairing.
            gradients = torch.autograd.grad(score, attentions)
        return _stack_numpy(attentions), _stack_numpy(gradients), prediction

    def _sentence_embedding(self, text: str, request: CaptureRequest) -> torch.Tensor:
        """Mean-pooled embedding ``[D]`` of a second text (a constant for the gradient)."""
        encoded = self._encode(text, None, request, "target_text")
        # no_grad rather than inference_mode: this tensor meets the graph in the cosine similarity.
        with torch.no_grad():
            output = self.model(**encoded.inputs)
        return mean_pool(output.last_hidden_state, encoded.inputs.get("attention_mask"))[0]


def position_limit(config: Any, family: Family) -> int:
    """Longest input (special tokens included) whose position ids stay inside the embedding table.

    Going past it is an index error on CPU and a device-side assert that poisons the whole CUDA
    context on a GPU, so the token cap is never allowed above this number.
    """
    return int(config.max_position_embeddings) - family.position_offset(config)


def has_classification_head(config: Any) -> bool:
    """True when the checkpoint was saved from a ``*ForSequenceClassification`` model."""
    return any(name.endswith("ForSequenceClassification") for name in (config.architectures or ()))
