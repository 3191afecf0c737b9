"""The scalar a gradient-weighted map explains, for each kind of text model.

Chefer et al. weight each layer's attention by d(score)/d(attention); the score must be one
number that depends on the whole forward pass:

- a classification head: the logit of the target class (default: the predicted class);
- a sentence encoder (e.g. all-MiniLM-L6-v2): the norm of the mean-pooled embedding, or its
  cosine similarity to a second text's embedding when ``target_text`` is given. The norm is
  taken before the sentence-transformers ``Normalize`` step, which would make it constant.
"""

from __future__ import annotations

from typing import Any

import torch

from app.core.errors import InvalidInput
from models.prediction import prediction


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over real (unmasked) tokens: ``[B, T, D]`` -> ``[B, D]``, as sentence-transformers pools."""
    if mask is None:
        return hidden.mean(dim=1)
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)


def check_target(target: int | None, target_text: str | None, labels: tuple[str, ...]) -> None:
    """422 for a target the model cannot explain (before any forward pass)."""
    if labels:
        if target_text is not None:
            raise InvalidInput("target_text applies to sentence-embedding models; this model has a classification "
                                "head, so choose a class with target", code="invalid_value", field="target_text")
        if target is not None and target >= len(labels):
            raise InvalidInput(f"target must be a class index in [0, {len(labels) - 1}]; got {target}",
                                code="out_of_range", field="target")
    elif target is not None:
        raise InvalidInput("target needs a model with a classification head; for this sentence encoder leave it out "
                            "(embedding norm) or give target_text (similarity)", code="invalid_value", field="target")


def classification_score(logits: torch.Tensor, target: int | None, labels: tuple[str, ...]) -> tuple[torch.Tensor, dict[str, Any]]:
    """Logit of ``target`` (default: the argmax) and a description of the prediction."""
    row = logits[0]
    predicted = int(row.argmax())
    chosen = predicted if target is None else target
    probabilities = torch.softmax(row.detach().float(), dim=-1)
    described = prediction(label=labels[predicted], index=predicted, probability=float(probabilities[predicted]),
                           score_kind="logit", score=float(row[chosen].detach()), target=chosen,
                           target_label=labels[chosen])
    return row[chosen], described


def embedding_score(hidden: torch.Tensor, mask: torch.Tensor | None,
                    reference: torch.Tensor | None) -> tuple[torch.Tensor, dict[str, Any]]:
    """Norm of the pooled embedding, or cosine similarity to ``reference`` (a ``[D]`` embedding)."""
    pooled = mean_pool(hidden, mask)[0]
    if reference is None:
        score = pooled.norm()
        return score, prediction(score_kind="embedding_norm", score=float(score.detach()))
    score = torch.nn.functional.cosine_similarity(pooled, reference.to(pooled.dtype), dim=0)
    return score, prediction(score_kind="cosine_similarity", score=float(score.detach()))


def classification_prediction(logits: torch.Tensor, labels: tuple[str, ...]) -> dict[str, Any]:
    """The predicted class of a finished forward pass (attention and rollout requests report it too)."""
    row = logits[0].detach().float()
    predicted = int(row.argmax())
    probability = float(torch.softmax(row, dim=-1)[predicted])
    return prediction(label=labels[predicted], index=predicted, probability=probability, score_kind="probability",
                      score=probability)
