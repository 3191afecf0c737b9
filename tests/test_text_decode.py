"""check_text: the text hygiene rules on their own (no model, no app)."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.core.errors import InvalidInput
from app.decode.text import MAX_COMBINING_RUN, check_text
from app.service.config import Limits

LIMITS = Limits()


def rejected(value: str, field: str = "text") -> InvalidInput:
    with pytest.raises(InvalidInput) as info:
        check_text(value, LIMITS, field)
    assert info.value.field == field
    assert field in info.value.message
    return info.value


@pytest.mark.parametrize("value", ["He never smoked.", "tab\tand\nnewline", "windows\r\nline", "naïve café", "עברית\u200f",
                                   "e\u0301" * 50, "a" + "\u0301" * MAX_COMBINING_RUN, "👩‍👩‍👧‍👦 family", "$x^$",
                                   "x" * LIMITS.max_text_chars])
def test_accepted_unchanged(value):
    assert check_text(value, LIMITS, "text") is value


def test_character_cap_comes_first():
    error = rejected("\ud800" * (LIMITS.max_text_chars + 1))
    assert error.code == "text_too_long"
    assert str(LIMITS.max_text_chars) in error.message


@pytest.mark.parametrize("value", ["", " ", "\n\t \r\n", "\u3000\u00a0", "\u200b\u200d\ufeff "])
def test_empty_or_invisible(value):
    assert rejected(value).code == "empty_text"


def test_lone_surrogate_is_named_not_echoed():
    error = rejected("ok \ud800 then", field="text_pair")
    assert error.code == "invalid_text"
    assert "U+D800" in error.message and "surrogate" in error.message
    assert "\ud800" not in error.message


@pytest.mark.parametrize("char", ["\x00", "\x07", "\x1b", "\x7f", "\x85", "\x9f"])
def test_control_characters(char):
    error = rejected(f"red {char}[31m text")
    assert error.code == "invalid_text"
    assert "control character" in error.message and f"U+{ord(char):04X}" in error.message


@pytest.mark.parametrize("char", ["\u202a", "\u202b", "\u202c", "\u202d", "\u202e", "\u2066", "\u2067", "\u2068", "\u2069"])
def test_bidi_override_and_isolate(char):
    error = rejected(f"invoice {char}gpj.exe")
    assert error.code == "invalid_text"
    assert "bidi" in error.message and char not in error.message


def test_combining_flood():
    error = rejected("Z" + "\u0335\u0336\u0337" * 20 + "algo", field="target_text")
    assert error.code == "invalid_text"
    assert "60 combining marks" in error.message


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_accepted_text_is_safe(value):
    """Whatever passes is encodable, visible, and free of the rejected character classes."""
    try:
        result = check_text(value, LIMITS, "text")
    except InvalidInput as exc:
        assert exc.code in {"empty_text", "invalid_text"}
        return
    result.encode("utf-8")
    assert result.strip()
    assert not any(0xD800 <= ord(c) <= 0xDFFF or c in "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069" for c in result)
    assert not any((ord(c) < 0x20 and c not in "\t\n\r") or 0x7F <= ord(c) <= 0x9F for c in result)
