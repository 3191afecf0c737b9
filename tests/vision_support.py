"""Helpers for the vision tests: tiny random Hugging Face models on disk, apps serving them,
images, and reference reductions computed straight from ``output_attentions``.

The reference side deliberately uses none of attnmap's code: the model is loaded again with
transformers, pixel values come from transformers' own PIL image processors (or a few lines of
PIL for cases they do not cover), and rollout/gradient are written out here from the papers.
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from app.http.factory import create_app
from models.hf_vision import HFVisionAdapter
from models.registry import ModelRegistry, open_model

CPU = torch.device("cpu")
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


def build_tiny(root: Path, kind: str) -> Path:
    """Save a tiny randomly initialised model of ``kind`` (with a preprocessor config) under ``root``."""
    from transformers import (
        DeiTConfig,
        DeiTForImageClassificationWithTeacher,
        Dinov2Config,
        Dinov2Model,
        Dinov2WithRegistersConfig,
        Dinov2WithRegistersForImageClassification,
        ViTConfig,
        ViTForImageClassification,
        ViTModel,
    )

    torch.manual_seed(1234)
    small = {"hidden_size": 32, "num_attention_heads": 4, "patch_size": 8}
    preprocessor: dict[str, Any] = {"size": {"height": 32, "width": 32}, "resample": 2,
                                    "image_mean": [0.5] * 3, "image_std": [0.5] * 3}
    if kind == "vit":
        model: Any = ViTForImageClassification(ViTConfig(image_size=32, num_hidden_layers=3, intermediate_size=64,
                                                         num_labels=3, **small))
    elif kind == "vit-wide":  # non-square model input: 32 high, 48 wide -> a 4 x 6 grid
        model = ViTForImageClassification(ViTConfig(image_size=[32, 48], num_hidden_layers=2, intermediate_size=64,
                                                    num_labels=3, **small))
        preprocessor["size"] = {"height": 32, "width": 48}
    elif kind == "vit-shortest":  # keeps the aspect ratio: interpolated position embeddings
        model = ViTForImageClassification(ViTConfig(image_size=32, num_hidden_layers=2, intermediate_size=64,
                                                    num_labels=3, **small))
        preprocessor["size"] = {"shortest_edge": 32}
    elif kind == "vit-headless":
        model = ViTModel(ViTConfig(image_size=32, num_hidden_layers=2, intermediate_size=64, **small), add_pooling_layer=False)
    elif kind == "deit":
        model = DeiTForImageClassificationWithTeacher(DeiTConfig(image_size=32, num_hidden_layers=3, intermediate_size=64,
                                                                 num_labels=5, **small))
        preprocessor.update(resample=3, image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD)
    elif kind == "dinov2reg":
        model = Dinov2WithRegistersForImageClassification(Dinov2WithRegistersConfig(
            image_size=32, num_hidden_layers=3, mlp_ratio=2, num_register_tokens=4, num_labels=4, **small))
        preprocessor = {"size": {"shortest_edge": 40}, "do_center_crop": True, "crop_size": {"height": 32, "width": 32},
                        "resample": 3, "image_mean": IMAGENET_MEAN, "image_std": IMAGENET_STD}
    elif kind == "dinov2":  # position grid for 64 px, input cropped to 32 px: DINOv2 interpolates by itself
        model = Dinov2Model(Dinov2Config(image_size=64, num_hidden_layers=2, mlp_ratio=2, **small))
        preprocessor = {"size": {"shortest_edge": 36}, "do_center_crop": True, "crop_size": {"height": 32, "width": 32},
                        "resample": 3, "image_mean": IMAGENET_MEAN, "image_std": IMAGENET_STD}
    else:
        raise ValueError(kind)
    _randomise_prefix_tokens(model)
    path = root / kind
    model.save_pretrained(path)
    (path / "preprocessor_config.json").write_text(json.dumps(preprocessor))
    return path


def _randomise_prefix_tokens(model: Any) -> None:
    """Several families initialise CLS/distillation/register tokens to zero; random ones make tests sharper."""
    embeddings = model.base_model.embeddings
    with torch.no_grad():
        for name in ("cls_token", "distillation_token", "register_tokens", "position_embeddings"):
            parameter = getattr(embeddings, name, None)
            if parameter is not None:
                parameter.normal_(0.0, 1.0)


def load_adapter(path: Path, name: str | None = None) -> HFVisionAdapter:
    """The adapter under test, on CPU in float32."""
    return open_model(name or path.name, path, device=CPU, dtype=torch.float32)


def app_for(*adapters: HFVisionAdapter, **config: Any) -> Any:
    """A Flask app serving exactly these adapters (no built-ins)."""
    return create_app({"builtin_models": (), **config}, registry=ModelRegistry(list(adapters)))


def random_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Smooth random RGB (not pure noise, so resizing keeps structure)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(max(2, height // 8), max(2, width // 8), 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((width, height), Image.Resampling.BILINEAR))


def png_bytes(pixels: np.ndarray | Image.Image, **save: Any) -> bytes:
    """Encode as PNG (extra Pillow save options allowed, e.g. exif=)."""
    image = pixels if isinstance(pixels, Image.Image) else Image.fromarray(pixels)
    buffer = io.BytesIO()
    image.save(buffer, "PNG", **save)
    return buffer.getvalue()


def post_image(client: Any, data: bytes, transport: str = "json", **fields: Any) -> Any:
    """POST an image as JSON base64 or as a multipart file part, with other fields."""
    if transport == "json":
        body = {"image": base64.b64encode(data).decode("ascii"), **fields}
        return client.post("/visualize", json=body)
    form = {name: (json.dumps(value) if isinstance(value, list) else str(value).lower() if isinstance(value, bool) else str(value))
            for name, value in fields.items()}
    form["image"] = (io.BytesIO(data), "upload.png")
    return client.post("/visualize", data=form, content_type="multipart/form-data")


# -- references from output_attentions -------------------------------------------------------------


def reference_model(path: Path) -> Any:
    """The same weights loaded independently, eager attention, eval mode."""
    import transformers
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(path)
    model_class = getattr(transformers, config.architectures[0])
    return model_class.from_pretrained(path, attn_implementation="eager").eval()


def reference_pixels(path: Path, image: np.ndarray) -> torch.Tensor:
    """Pixel values from transformers' own PIL processors (ViT-style and Bit/DINOv2-style configs)."""
    from transformers.models.bit.image_processing_pil_bit import BitImageProcessorPil
    from transformers.models.vit.image_processing_pil_vit import ViTImageProcessorPil

    config = json.loads((path / "preprocessor_config.json").read_text())
    if "shortest_edge" in config["size"] and not config.get("do_center_crop"):
        return _shortest_edge_pixels(config, image)
    processor_class = BitImageProcessorPil if "shortest_edge" in config["size"] else ViTImageProcessorPil
    processor = processor_class(**config)
    values = processor(images=Image.fromarray(image), return_tensors="np")["pixel_values"]
    return torch.from_numpy(np.asarray(values, dtype=np.float32))


def _shortest_edge_pixels(config: dict[str, Any], image: np.ndarray) -> torch.Tensor:
    """Resize the short side to ``shortest_edge`` (long side truncated), rescale, normalise."""
    height, width = image.shape[:2]
    edge = config["size"]["shortest_edge"]
    size = (edge, int(edge * height / width)) if width <= height else (int(edge * width / height), edge)
    resized = np.asarray(Image.fromarray(image).resize(size, resample=config.get("resample", 2)), dtype=np.float32)
    values = (resized / 255.0 - np.asarray(config["image_mean"], dtype=np.float32)) / np.asarray(config["image_std"], dtype=np.float32)
    return torch.from_numpy(values.transpose(2, 0, 1)[np.newaxis].astype(np.float32))


def reference_attentions(model: Any, pixels: torch.Tensor, **kwargs: Any) -> tuple[np.ndarray, Any]:
    """``[L, H, T, T]`` float64 from ``output_attentions=True``, and the output."""
    with torch.no_grad():
        output = model(pixel_values=pixels, output_attentions=True, **kwargs)
    return np.stack([a[0].double().numpy() for a in output.attentions]), output


def reference_gradients(model: Any, pixels: torch.Tensor, target: int | None = None, **kwargs: Any) -> tuple[np.ndarray, np.ndarray]:
    """Attentions and d logit[target] / d attention for every layer, via autograd.grad."""
    output = model(pixel_values=pixels, output_attentions=True, **kwargs)
    logits = output.logits[0]
    index = int(logits.argmax()) if target is None else target
    grads = torch.autograd.grad(logits[index], list(output.attentions))
    attentions = np.stack([a[0].detach().double().numpy() for a in output.attentions])
    return attentions, np.stack([g[0].double().numpy() for g in grads])


def rows_stochastic(matrix: np.ndarray) -> np.ndarray:
    return matrix / matrix.sum(axis=-1, keepdims=True)


def reference_rollout(attentions: np.ndarray, upto: int) -> np.ndarray:
    """Abnar & Zuidema: mean heads, 0.5 A + 0.5 I, rows renormalised, R = A'_l ... A'_0."""
    tokens = attentions.shape[-1]
    result = np.eye(tokens)
    for layer in attentions[: upto + 1]:
        result = rows_stochastic(0.5 * layer.mean(axis=0) + 0.5 * np.eye(tokens)) @ result
    return result


def reference_relevance(attentions: np.ndarray, gradients: np.ndarray, upto: int) -> np.ndarray:
    """Chefer et al. 2021: R = I; R += mean_h(relu(grad * A)) @ R per layer in order."""
    tokens = attentions.shape[-1]
    result = np.eye(tokens)
    for layer, grad in zip(attentions[: upto + 1], gradients[: upto + 1], strict=True):
        result = result + np.clip(layer * grad, 0.0, None).mean(axis=0) @ result
    return result
