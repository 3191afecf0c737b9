"""Validation of user text before it reaches a tokenizer.

Checks run cheapest first and all before tokenising, so a hostile string costs at most one
linear scan: the character cap, lone surrogates (they make ``str.encode`` raise, which would
otherwise surface as a 500 from deep inside the tokenizer), control and bidi-override
characters (they corrupt axis labels and logs), empty or invisible-only text, and floods of
combining marks ("Zalgo" text: one base letter carrying thousands of marks, which tokenizers
split into thousands of tokens and renderers stack into one unreadable glyph).

The text is returned unchanged: the tokenizer applies the model's own normalisation, and the
token cap that follows catches anything that normalisation expands.
"""

from __future__ import annotations

import re
import unicodedata

from app.core.errors import InvalidInput
from app.service.config import Limits

# More combining marks in a row than any real orthography stacks on one base letter (Vietnamese
# uses 2, Hebrew with cantillation and Tibetan stacks stay well under 10); Unicode's stream-safe
# format allows 30 non-starters, Zalgo generators emit dozens to thousands.
MAX_COMBINING_RUN = 16

_SURROGATE = re.compile("[\ud800-\udfff]")
# C0 and C1 controls and DEL, except tab, line feed and carriage return: browsers submit a
# textarea's line breaks as CRLF, so rejecting CR would turn every multi-line form post into a 422.
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
# Embeddings and overrides (LRE RLE PDF LRO RLO) and isolates (LRI RLI FSI PDI): they reorder
# how labels and logs display ("Trojan Source"). The plain marks LRM/RLM/ALM stay allowed: RTL
# text legitimately uses them and they cannot reorder anything on their own.
_BIDI = re.compile("[\u202a-\u202e\u2066-\u2069]")


def _codepoint(ch: str) -> str:
    """``U+202E``: a character named without echoing it (it may be invisible or reorder text)."""
    return f"U+{ord(ch):04X}"


def _longest_combining_run(value: str) -> tuple[int, int]:
    """Length and start of the longest run of combining marks (Unicode categories Mn, Mc, Me)."""
    best, best_start, run, start = 0, 0, 0, 0
    for position, ch in enumerate(value):
        if unicodedata.category(ch)[0] == "M":
            if run == 0:
                start = position
            run += 1
            if run > best:
                best, best_start = run, start
        else:
            run = 0
    return best, best_start


def _is_invisible(value: str) -> bool:
    """True when no character would show: whitespace and format characters (ZWSP, ZWJ, BOM) only."""
    return all(ch.isspace() or unicodedata.category(ch) == "Cf" for ch in value)


def check_text(value: str, limits: Limits, field: str, max_chars: int | None = None) -> str:
    """Validate one text field and return it unchanged; every failure is a 422 naming ``field``.

    Codes: ``text_too_long`` (over ``limits.max_text_chars``), ``invalid_text`` (lone surrogate,
    control or bidi override/isolate character, combining-mark flood), ``empty_text`` (empty,
    whitespace-only or invisible-only). ``max_chars`` replaces the character cap (causal LMs take
    longer inputs than encoders).
    """
    cap = limits.max_text_chars if max_chars is None else max_chars
    if len(value) > cap:
        raise InvalidInput(f"{field} has {len(value)} characters; the limit is {cap}",
                            code="text_too_long", field=field)
    if not value.strip():
        raise InvalidInput(f"{field} is empty or whitespace only", code="empty_text", field=field)
    ascii_only = value.isascii()
    if not ascii_only and (match := _SURROGATE.search(value)):
        raise InvalidInput(f"{field} contains a lone surrogate ({_codepoint(match.group())}) at position {match.start()}; "
                            "send valid Unicode", code="invalid_text", field=field)
    if match := _CONTROL.search(value):
        raise InvalidInput(f"{field} contains a control character ({_codepoint(match.group())}) at position "
                            f"{match.start()}; only tab and line breaks are allowed", code="invalid_text", field=field)
    if ascii_only:
        return value  # nothing below can occur in ASCII; skip the per-character scans
    if match := _BIDI.search(value):
        raise InvalidInput(f"{field} contains a bidi override or isolate character ({_codepoint(match.group())}) at "
                            f"position {match.start()}", code="invalid_text", field=field)
    if _is_invisible(value):
        raise InvalidInput(f"{field} has no visible characters", code="empty_text", field=field)
    run, start = _longest_combining_run(value)
    if run > MAX_COMBINING_RUN:
        raise InvalidInput(f"{field} has {run} combining marks in a row at position {start}; at most "
                            f"{MAX_COMBINING_RUN} are allowed", code="invalid_text", field=field)
    return value
