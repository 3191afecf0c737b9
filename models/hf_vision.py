"""Hugging Face vision transformers (ViT, DeiT, DINOv2, DINOv2 with registers) as an adapter.

Loaded offline from a local directory on the fused path (the capture engine's attention,
:data:`models.capture.ATTENTION_NAME`: every layer runs transformers' SDPA), on the worker's device
and dtype, in eval mode with frozen parameters. A self-check forward pass at load proves that
every layer reaches the engine with ``[B, H, T, T]`` weights, ``T = prefix + rows * cols``;
otherwise the model fails to load instead of failing requests.

Capture: :func:`models.capture.recording` of only the requested layers, stopping after the last of
them unless the prediction or gradients need the rest. Gradients record with ``keep_graph`` and
come from ``torch.autograd.grad(score, weights)`` in layer order, never from backward hooks (which
fire last layer first).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from torch import nn

from app.core.attention import AttentionStack
from app.core.errors import AttnmapError, InvalidInput
from models import capture
from models.adapter import Capture, CaptureRequest, ImageInput, ModelAdapter, ModelInfo, Picture, TextInput
from models.capture import ATTENTION_NAME, CaptureSpec, Recorder, recording
from models.errors import ModelLoadError
from models.family import Family, FamilyError, attention_modules
from models.hooks import AttentionNotCaptured
from models.prediction import prediction
from models.vision_preprocess import Plan, Preprocessor


class GridMismatch(AttnmapError):
    """The sequence length does not equal prefix tokens + patch rows x columns (a model/config bug: 500)."""

    default_code = "grid_mismatch"


class HFVisionAdapter(ModelAdapter):
    """One Hugging Face vision transformer served from a local directory."""

    def __init__(self, name: str, path: Path | str, *, family: Family, device: torch.device, dtype: torch.dtype,
                 description: str = "", attn_implementation: str = ATTENTION_NAME) -> None:
        # attn_implementation exists so tests can prove that a model bypassing the engine is refused at load.
        capture.register()
        self.path = Path(path)
        self.device = device
        self.dtype = dtype
        # Recordings are per request (a ContextVar), but two passes at once would only split the same
        # cores: one capture at a time per model, whatever the worker class (sync workers never contend).
        self._lock = threading.Lock()
        # Any: transformers' PreTrainedModel attributes (config, base_model) are untyped for mypy.
        self.model: Any
        self.model = _load_model(self.path, device, dtype, attn_implementation)
        self.family = family
        config: Any = self.model.config
        try:
            self.attention_modules = attention_modules(self.model, int(config.num_hidden_layers))
            capture.check_layers(self.model, self.attention_modules)
        except (FamilyError, AttentionNotCaptured) as exc:
            raise ModelLoadError(name, str(exc)) from None
        self.patch = _pair(config.patch_size)
        self.config_size = _pair(config.image_size)
        self.prefix_tokens, self.prefix_labels = _prefix_tokens(self.model)
        self.has_classifier = _has_classifier(self.model)
        self.labels = tuple(str(config.id2label[i]) for i in range(config.num_labels)) if self.has_classifier else ()
        try:
            self.preprocessor = Preprocessor.from_directory(self.path, self.config_size)
        except ValueError as exc:
            raise ModelLoadError(name, str(exc)) from exc
        input_size = self.preprocessor.fixed_input_size
        self.info = ModelInfo(
            name=name, kind="vision", family=str(config.model_type), layers=int(config.num_hidden_layers),
            heads=int(config.num_attention_heads), device=str(device), dtype=str(dtype).removeprefix("torch."),
            input_size=input_size, patch_size=self.patch[0], prefix_tokens=self.prefix_tokens,
            labels=self.labels, description=description,
        )
        self._self_check()

    # -- the adapter interface -------------------------------------------------------------

    def estimate_tokens(self, inputs: ImageInput | TextInput, request: CaptureRequest) -> int:
        """Prefix tokens plus patches, from the preprocessing geometry alone."""
        image = _image_of(inputs)
        rows, cols = self._grid(self.preprocessor.plan(image.pixels.shape[1], image.pixels.shape[0]))
        return self.prefix_tokens + rows * cols

    def capture(self, inputs: ImageInput | TextInput, request: CaptureRequest) -> Capture:
        """Preprocess, run the hooked forward pass, and package the requested layers."""
        image = _image_of(inputs)
        layers = tuple(sorted(set(request.layers)))  # resolved by the request plan
        if request.gradient:
            self._check_target(request.target)
        values, plan = self.preprocessor(image.pixels)
        grid = self._grid(plan)
        tokens = self.prefix_tokens + grid[0] * grid[1]
        pixel_values = torch.from_numpy(values).unsqueeze(0).to(device=self.device, dtype=self.dtype)
        kwargs = self._forward_kwargs(plan)
        gradients: np.ndarray | None = None
        logits: torch.Tensor | None
        with self._lock:
            if request.gradient:
                weights, gradients, logits = self._run_with_gradients(pixel_values, layers, tokens, request.target, kwargs)
            else:
                weights, logits = self._run(pixel_values, layers, tokens, kwargs)
        stack = AttentionStack(
            weights=weights, layers=layers, num_layers=self.info.layers,
            tokens=[*self.prefix_labels, *(f"p{r},{c}" for r in range(grid[0]) for c in range(grid[1]))],
            prefix_tokens=self.prefix_tokens, grid=grid, gradients=gradients,
            meta={"patch_size": list(self.patch), "input_size": list(plan.input_size)},
        )
        preprocessing = self.preprocessor.describe(plan, self.patch)
        preprocessing["image"] = dict(image.meta)
        return Capture(stack=stack, picture=Picture(image.pixels, plan.placement(self.patch)),
                       prediction=self._prediction(logits), preprocessing=preprocessing)

    def warm_up(self) -> None:
        """One full capture of every layer on a blank image (also re-runs the self-check)."""
        self._self_check()

    # -- forward passes ----------------------------------------------------------------------

    def _run(self, pixel_values: torch.Tensor, layers: tuple[int, ...], tokens: int,
             kwargs: dict[str, Any]) -> tuple[np.ndarray, torch.Tensor | None]:
        # Stopping early only pays when later layers exist; running to the end gives a prediction.
        stop_early = layers[-1] < self.info.layers - 1
        recorder: Recorder | None = None
        try:
            with torch.inference_mode(), recording(CaptureSpec(layers=frozenset(layers), stop_early=stop_early)) as recorder:
                output = recorder.run(lambda: self.model(pixel_values=pixel_values, **kwargs))
                self._check_captured(recorder, tokens)
                weights = np.stack([recorder.weights[i][0].float().cpu().numpy() for i in layers])
                raw = getattr(output, "logits", None) if self.has_classifier else None
                logits = raw[0].float().cpu() if raw is not None else None
            return weights, logits
        finally:
            if recorder is not None:
                recorder.clear()  # drop activations at once, also when the forward pass failed

    def _run_with_gradients(self, pixel_values: torch.Tensor, layers: tuple[int, ...], tokens: int, target: int | None,
                            kwargs: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
        # Parameters are frozen, so the input must require grad for a graph to be recorded.
        pixel_values = pixel_values.clone().requires_grad_(True)
        recorder: Recorder | None = None
        try:
            with torch.enable_grad(), recording(CaptureSpec(layers=frozenset(layers), keep_graph=True)) as recorder:
                output = self.model(pixel_values=pixel_values, **kwargs)
                self._check_captured(recorder, tokens)
                logits = output.logits[0]
                index = int(logits.argmax()) if target is None else target
                attentions = [recorder.weights[i] for i in layers]
                grads = torch.autograd.grad(logits[index], attentions)
                weights = np.stack([a[0].detach().float().cpu().numpy() for a in attentions])
                gradients = np.stack([g[0].float().cpu().numpy() for g in grads])
                return weights, gradients, logits.detach().float().cpu()
        finally:
            if recorder is not None:
                recorder.clear()

    def _check_captured(self, recorder: Recorder, tokens: int) -> None:
        for index, tensor in recorder.weights.items():
            if tensor.dim() == 4 and tensor.shape[-1] != tokens:
                raise GridMismatch(f"layer {index} has {tensor.shape[-1]} tokens; expected {self.prefix_tokens} prefix "
                                   f"+ {tokens - self.prefix_tokens} patches = {tokens}")
        recorder.check()
        for index, tensor in recorder.weights.items():
            if tuple(tensor.shape) != (1, self.info.heads, tokens, tokens):
                raise AttentionNotCaptured(f"layer {index} attention has shape {tuple(tensor.shape)}")

    def _self_check(self) -> None:
        """Capture every layer of a blank image; any failure means the model cannot be served."""
        height, width = self.info.input_size or self.config_size
        blank = ImageInput(pixels=np.full((height, width, 3), 128, dtype=np.uint8))
        try:
            checked = self.capture(blank, CaptureRequest(layers=tuple(range(self.info.layers))))
        except Exception as exc:
            raise ModelLoadError(self.info.name, f"attention self-check failed: {type(exc).__name__}: {str(exc)[:300]}") from exc
        if checked.stack.weights.shape[0] != self.info.layers:
            raise ModelLoadError(self.info.name, "attention self-check captured the wrong number of layers")

    # -- helpers -----------------------------------------------------------------------------

    def _grid(self, plan: Plan) -> tuple[int, int]:
        rows, cols = plan.grid(self.patch)
        if rows < 1 or cols < 1:
            raise InvalidInput(f"the model input {plan.input_size} is smaller than one {self.patch} patch",
                                code="invalid_dimensions", field="image")
        return rows, cols

    def _forward_kwargs(self, plan: Plan) -> dict[str, Any]:
        if self.family.interpolate_flag and plan.input_size != self.config_size:
            return {"interpolate_pos_encoding": True}
        return {}  # DINOv2 interpolates by itself whenever the grid differs


    def _check_target(self, target: int | None) -> None:
        if not self.has_classifier:
            raise InvalidInput(f"method 'gradient' needs a classification head; model {self.info.name!r} has none",
                                code="no_classifier", field="method")
        if target is not None and not 0 <= target < len(self.labels):
            raise InvalidInput(f"target must be in [0, {len(self.labels) - 1}]; got {target}", code="out_of_range", field="target")

    def _prediction(self, logits: torch.Tensor | None) -> dict[str, Any] | None:
        if logits is None:
            return None
        probabilities = torch.softmax(logits, dim=-1)
        index = int(probabilities.argmax())
        probability = float(probabilities[index])
        return prediction(label=self.labels[index], index=index, probability=probability, score_kind="probability",
                          score=probability)


def _image_of(inputs: ImageInput | TextInput) -> ImageInput:
    # The request plan sends only images to vision models; anything else is a programming error.
    if not isinstance(inputs, ImageInput):
        raise TypeError(f"a vision model got {type(inputs).__name__}")
    return inputs


def _pair(value: Any) -> tuple[int, int]:
    if isinstance(value, list | tuple):
        return int(value[0]), int(value[1])
    return int(value), int(value)


def _load_model(path: Path, device: torch.device, dtype: torch.dtype, attn: str) -> Any:
    """Load config and weights offline (safetensors only: no pickle) and pick the model class."""
    import transformers
    from transformers import AutoConfig, AutoModel, AutoModelForImageClassification

    config = AutoConfig.from_pretrained(path, local_files_only=True)
    architecture = (config.architectures or [None])[0]
    if architecture and "ImageClassification" in architecture and hasattr(transformers, architecture):
        model_class: Any = getattr(transformers, architecture)  # e.g. DeiT's ...WithTeacher keeps both heads
    elif architecture is None and _weights_have_classifier(path):
        model_class = AutoModelForImageClassification
    else:
        model_class = AutoModelForImageClassification if architecture and "ImageClassification" in architecture else AutoModel
    model = model_class.from_pretrained(path, local_files_only=True, use_safetensors=True,
                                        attn_implementation=attn, dtype=dtype)
    model.to(device)
    model.eval()
    model.requires_grad_(False)
    return model


def _weights_have_classifier(path: Path) -> bool:
    """Whether the safetensors file holds classifier weights (read from the header only)."""
    weights = path / "model.safetensors"
    if not weights.is_file():
        return False
    with safe_open(str(weights), framework="pt") as handle:
        return any("classifier" in key for key in handle.keys())  # noqa: SIM118 - safe_open has no __iter__


def _has_classifier(model: nn.Module) -> bool:
    return any(isinstance(getattr(model, attr, None), nn.Linear) for attr in ("classifier", "cls_classifier"))



def _prefix_tokens(model: Any) -> tuple[int, list[str]]:
    """Tokens before the patches, read from the embeddings: CLS, DeiT's distillation token, registers."""
    embeddings = model.base_model.embeddings
    labels = ["[CLS]"]
    if getattr(embeddings, "distillation_token", None) is not None:
        labels.append("[DIST]")
    registers = getattr(embeddings, "register_tokens", None)
    if registers is not None:
        labels.extend(f"[REG{i}]" for i in range(registers.shape[1]))
    return len(labels), labels

