"""Strict, fast JSON parsing of request bodies.

orjson parses the common case about ten times faster than the standard library, which matters
when the body is a 64x64 float matrix. It cannot report duplicate keys, NaN literals or lone
surrogates the way the contract wants, so those rarer cases are classified by a second,
exact pass with the standard library.
"""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np
import orjson

from app.core.errors import InvalidInput, MalformedRequest

# A quote that ends a string, followed by a colon, can only be an object key in valid JSON.
_KEY_END = re.compile(rb'"\s*:')
# A \uD800-\uDFFF escape: the only way a lone surrogate gets into a body that is valid UTF-8.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKey(key)
        result[key] = value
    return result


def _reject_constant(name: str) -> float:
    # NaN / Infinity literals parse, and the tensor decoder reports them as non-finite (422).
    return float(name)


def _count_members(body: bytes) -> int:
    """Count object members in valid JSON: closing quotes (not escaped) followed by a colon."""
    count = 0
    for match in _KEY_END.finditer(body):
        start = match.start()
        backslashes = 0
        while start - backslashes - 1 >= 0 and body[start - backslashes - 1] == 0x5C:
            backslashes += 1
        if backslashes % 2 == 0:
            count += 1
    return count


def _strict_stdlib(body: bytes) -> Any:
    """Exact slow path: duplicate keys, NaN literals and lone surrogates are told apart."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedRequest("request body is not valid UTF-8", code="malformed_json") from None
    try:
        value = json.loads(text, object_pairs_hook=_reject_duplicates, parse_constant=_reject_constant)
    except _DuplicateKey as exc:
        raise MalformedRequest(f"duplicate key {exc.key!r} in JSON object", code="duplicate_key", field=exc.key) from None
    except RecursionError:
        raise MalformedRequest("JSON nesting is too deep", code="nesting_too_deep") from None
    except ValueError as exc:  # JSONDecodeError and int_max_str_digits
        raise MalformedRequest(f"malformed JSON: {str(exc)[:120]}", code="malformed_json") from None
    if _SURROGATE_ESCAPE.search(body):
        _reject_surrogates(value)
    return value


def _reject_surrogates(value: Any) -> None:
    """422 ``invalid_text`` for a lone surrogate anywhere (a key or a string), naming the top-level key.

    ``\ud800`` is legal JSON syntax but not Unicode: nothing can encode it again (the JSON
    answer, a log line, a font), so it is refused here, the one place it can enter. orjson
    already refuses it; only this slow path could let it through.
    """
    for key, item in value.items() if isinstance(value, dict) else [(None, value)]:
        if _has_surrogate(key) or _has_surrogate(item):
            field = None if key is None else _SURROGATE.sub("\ufffd", key[:64])
            raise InvalidInput(f"{field or 'the body'} contains a lone surrogate; send valid Unicode",
                               code="invalid_text", field=field)


def _has_surrogate(value: Any) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if not item.isascii() and _SURROGATE.search(item):
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def parse_json_object(body: bytes) -> dict[str, Any]:
    """Parse a request body that must be one JSON object with unique keys."""
    if not body.strip():
        raise MalformedRequest("request body is empty", code="malformed_json")
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        value = _strict_stdlib(body)
    else:
        if isinstance(value, dict) and _may_have_duplicate_keys(body, value):
            value = _strict_stdlib(body)
    if not isinstance(value, dict):
        raise InvalidInput("request body must be a JSON object", code="invalid_body")
    return value


def _may_have_duplicate_keys(body: bytes, value: dict[str, Any]) -> bool:
    """Whether the text has more object members than the parsed objects (orjson keeps the last duplicate).

    Every member has a colon, so ``members <= key ends <= colons``: when the colon count (one fast
    pass) already equals the parsed members, the exact key-end count would too and is skipped.
    """
    members = _count_nested_members(value)
    return _count_byte(body, b":") != members and _count_members(body) != members


def _count_byte(body: bytes, byte: bytes) -> int:
    """Occurrences of one byte; a vectorised compare is ~4x faster than ``bytes.count`` on large bodies."""
    return int(np.count_nonzero(np.frombuffer(body, dtype=np.uint8) == ord(byte)))


def _count_nested_members(value: Any) -> int:
    """Members of the parsed objects; nested objects are rare here, so only lists of dicts are walked."""
    total = 0
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            total += len(item)
            stack.extend(v for v in item.values() if isinstance(v, dict | list) and _may_hold_objects(v))
        elif isinstance(item, list):
            stack.extend(v for v in item if isinstance(v, dict | list) and _may_hold_objects(v))
    return total


def _may_hold_objects(value: Any) -> bool:
    """Numeric arrays (the big part of a body) never hold objects; look only at the first leaf."""
    if isinstance(value, dict):
        return True
    probe = value
    while isinstance(probe, list) and probe:
        probe = probe[0]
    return isinstance(probe, dict) or not isinstance(probe, int | float)
