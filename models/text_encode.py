"""Tokenising a validated text (and optional second segment) for one forward pass.

The token cap is applied here, before any tensor reaches the model: over the cap is a 422
``too_many_tokens`` naming the count, unless the request asked to truncate, in which case the
input is cut to the cap and the stack's metadata says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from app.core.errors import InvalidInput


@dataclass(frozen=True)
class Encoded:
    """One tokenised input: model tensors plus what the attention stack needs to read it."""

    inputs: dict[str, torch.Tensor]
    tokens: list[str]
    special: tuple[int, ...]
    words: tuple[int | None, ...]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def length(self) -> int:
        """Sequence length including special tokens."""
        return len(self.tokens)


def _tokenize(tokenizer: Any, text: str, pair: str | None, max_length: int | None) -> Any:
    # Fast tokenizers only: word_ids() and sequence_ids() need the Rust backend's alignment data.
    # split_special_tokens: a user who types "[SEP]" or "</s>" gets those characters as text, not a
    # real separator that would silently change the input's structure and escape special-token masking.
    return tokenizer(text, pair, truncation="longest_first" if max_length else False, max_length=max_length,
                     return_special_tokens_mask=True, return_tensors="pt", verbose=False, split_special_tokens=True)


def _words(encoding: Any) -> tuple[int | None, ...]:
    """Word id per token, unique across both segments (the tokenizer restarts at 0 for the second)."""
    words = encoding.word_ids(0)
    sequences = encoding.sequence_ids(0)
    first_segment = [w for w, s in zip(words, sequences, strict=True) if s == 0 and w is not None]
    shift = (max(first_segment) + 1) if first_segment else 0
    return tuple(None if w is None else (w + shift if s == 1 else w) for w, s in zip(words, sequences, strict=True))


def _model_inputs(encoding: Any, names: list[str], type_vocab_size: int, device: torch.device) -> dict[str, torch.Tensor]:
    inputs = {name: encoding[name].to(device) for name in names if name in encoding}
    # A tokenizer that emits segment ids the checkpoint has no embedding for (RoBERTa-likes have
    # type_vocab_size 1) would index out of range: those models read segments from </s></s> anyway.
    types = inputs.get("token_type_ids")
    if types is not None and int(types.max()) >= type_vocab_size:
        inputs["token_type_ids"] = torch.zeros_like(types)
    return inputs


def count_tokens(tokenizer: Any, text: str, pair: str | None) -> int:
    """Sequence length of ``text`` (+ ``pair``) with special tokens, without building tensors."""
    return len(tokenizer(text, pair, truncation=False, verbose=False, split_special_tokens=True)["input_ids"])


def too_many_tokens(field_name: str, count: int, cap: int, subject: str | None = None) -> InvalidInput:
    """The 422 for an input over the token cap, naming both numbers (``subject``: what was counted)."""
    verb = "have" if subject else "has"
    return InvalidInput(f"{subject or field_name} {verb} {count} tokens; this model takes at most {cap} "
                         "(send truncate=true to cut the input instead)", code="too_many_tokens", field=field_name)


def encode(tokenizer: Any, text: str, pair: str | None, *, cap: int, truncate: bool, field_name: str,
           type_vocab_size: int, device: torch.device) -> Encoded:
    """Tokenise under the token cap (422 ``too_many_tokens`` unless ``truncate``)."""
    encoding = _tokenize(tokenizer, text, pair, None)
    full = int(encoding["input_ids"].shape[1])
    meta: dict[str, Any] = {"truncated": False}
    if full > cap:
        if not truncate:
            raise too_many_tokens(field_name, full, cap)
        reserved = tokenizer.num_special_tokens_to_add(pair=pair is not None)
        if cap < reserved + (1 if pair is None else 2):
            raise InvalidInput(f"a token cap of {cap} leaves no room for text", code="too_many_tokens", field=field_name)
        meta.update(truncated=True, tokens_before_truncation=full)
        encoding = _tokenize(tokenizer, text, pair, cap)
    ids = encoding["input_ids"]
    special_mask = encoding["special_tokens_mask"][0].tolist()
    special = tuple(i for i, flag in enumerate(special_mask) if flag)
    if len(special) == len(special_mask):
        # e.g. a lone combining accent that an uncased normaliser strips: a map of [CLS] and
        # [SEP] alone says nothing, and masking the specials would leave an empty matrix.
        raise InvalidInput(f"{field_name} has no tokens left after the model's normalisation", code="empty_text",
                            field=field_name)
    if pair is not None:
        sequences = encoding.sequence_ids(0)
        meta["segment_boundary"] = sequences.index(1) if 1 in sequences else len(sequences)
    meta["special_positions"] = list(special)
    names = [n for n in tokenizer.model_input_names if n != "special_tokens_mask"]
    return Encoded(inputs=_model_inputs(encoding, names, type_vocab_size, device),
                   tokens=tokenizer.convert_ids_to_tokens(ids[0].tolist()),
                   special=special, words=_words(encoding), meta=meta)
