"""The one shape of ``meta.prediction`` for every kind of model.

``label``/``index``/``probability`` are what the model predicts (a class, or for a causal
language model the next token; None for a sentence encoder, which predicts nothing).
``score_kind``/``score`` say which scalar the map explains or reports: the predicted class's
``probability``, a target class's ``logit`` (gradient methods), an ``embedding_norm`` or a
``cosine_similarity`` (sentence encoders). ``target``/``target_label`` name the class a
gradient explains (None otherwise).
"""

from __future__ import annotations

from typing import Any, Literal

ScoreKind = Literal["probability", "logit", "embedding_norm", "cosine_similarity"]


def prediction(*, score_kind: ScoreKind, score: float, label: str | None = None, index: int | None = None,
               probability: float | None = None, target: int | None = None, target_label: str | None = None) -> dict[str, Any]:
    """A prediction in the shape the API documents (every key always present)."""
    return {"label": label, "index": index, "probability": probability, "score_kind": score_kind, "score": score,
            "target": target, "target_label": target_label}
