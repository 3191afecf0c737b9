"""The fast paths of JSON decoding give exactly what the original, slower checks gave.

``weights_from_json`` now converts first and walks the elements only when numpy's result could
hide a problem, and ``parse_json_object`` skips the exact key count when a colon count already
proves there are no duplicate keys. Both are compared here against the original code (kept
below as the oracle) on generated inputs, including doubly-wrong ones whose error code depends
on the order of the checks.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.core.errors import AttnmapError, InvalidInput
from app.decode.jsonbody import _count_members, _count_nested_members, parse_json_object
from app.decode.tensor import _check_shape, _finite_float32, _has_non_number, _list_shape, weights_from_json
from app.service.config import Limits

LIMITS = Limits()


def reference_weights_from_json(value: Any, limits: Limits, *, may_hold_literals: bool = True) -> np.ndarray:
    """The original implementation: element walk first (when the body had literals), then numpy."""
    if not isinstance(value, list):
        raise InvalidInput("weights must be a nested list of numbers", code="invalid_type", field="weights")
    shape = _list_shape(value, limits)
    if len(shape) < 2 or 0 in shape:
        if 0 in shape:
            raise InvalidInput("weights must not be empty", code="empty_tensor", field="weights")
        raise InvalidInput("rank", code="invalid_rank", field="weights")
    _check_shape(shape, limits)
    if may_hold_literals and _has_non_number(value):
        raise InvalidInput("weights must contain only numbers", code="invalid_element_type", field="weights")
    try:
        array = np.array(value)
    except (ValueError, OverflowError):
        raise InvalidInput("ragged", code="ragged_array", field="weights") from None
    if array.shape != shape:
        raise InvalidInput("ragged", code="ragged_array", field="weights")
    if array.dtype.kind not in "fi":
        if array.dtype.kind == "O" and not _has_non_number(value):
            raise InvalidInput("out of range", code="value_out_of_range", field="weights")
        raise InvalidInput("weights must contain only numbers", code="invalid_element_type", field="weights")
    return _finite_float32(array)


def outcome(function: Any, *args: Any, **kwargs: Any) -> tuple[str, Any]:
    """('ok', array) or ('error', (status, code, field)) for comparing two implementations."""
    try:
        return "ok", function(*args, **kwargs)
    except AttnmapError as exc:
        return "error", (type(exc).__name__, exc.code, exc.field)


def assert_same(value: Any) -> None:
    """New and original decoders agree on ``value`` as a JSON body would carry it."""
    body = json.dumps({"weights": value}).encode()
    literals = b"true" in body or b"false" in body or b"null" in body
    expected = outcome(reference_weights_from_json, value, LIMITS, may_hold_literals=literals)
    calls = []

    def lazy() -> bool:
        calls.append(1)
        return literals

    actual = outcome(weights_from_json, value, LIMITS, may_hold_literals=lazy)
    assert actual[0] == expected[0], (value, actual, expected)
    if expected[0] == "ok":
        assert actual[1].dtype == expected[1].dtype == np.float32
        np.testing.assert_array_equal(actual[1], expected[1])
    else:
        assert actual[1] == expected[1], (value, actual, expected)
    assert len(calls) <= 1


leaves = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False, width=64),
    st.sampled_from([0.0, 1.0, -0.0, 0, 1, True, False, None, 2**70, -(2**70), 3.5e38, 1e300, "0.5", "x", {}, [], {"a": 1}]),
    st.integers(-(2**40), 2**40),
)


@st.composite
def nested(draw: st.DrawFn) -> Any:
    """Rectangular numeric arrays of rank 1-5 with occasional odd leaves, rows and depths."""
    rank = draw(st.integers(1, 5))
    shape = [draw(st.integers(1, 4)) for _ in range(rank)]
    odd_rate = draw(st.sampled_from([0.0, 0.0, 0.05, 0.3]))

    def build(depth: int) -> Any:
        if depth == rank:
            if draw(st.floats(0, 1)) < odd_rate:
                return draw(leaves)
            return draw(st.floats(-5, 5, allow_nan=False))
        length = shape[depth]
        if odd_rate and draw(st.floats(0, 1)) < odd_rate / 2:
            length = draw(st.integers(0, 5))  # ragged row
        return [build(depth + 1) for _ in range(length)]

    return build(0)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(nested())
def test_weights_from_json_matches_the_original(value: Any) -> None:
    assert_same(value)


@pytest.mark.parametrize("value", [
    [[0.5, 0.5], [0.25, 0.75]],
    [[0.0, 1.0], [1.0, 0.0]],                  # causal-mask zeros: exact path, still accepted
    [[0, 1], [1, 0]],                          # ints
    [[1.0, True], [0.0, 1.0]],                 # a boolean among floats (numpy would make it 1.0)
    [[True, False], [False, True]],
    [[1.0, None], [0.0, 1.0]],
    [[1.0, "0.5"], [0.0, 1.0]],
    [[1.0, True], [0.0]],                      # boolean and ragged: the element error wins
    [[1.0, "a"], [0.0]],                       # string and ragged, no literal in the body: ragged wins
    [[1.0, 2**70], [0.0, 1.0]],                # beyond int64
    [[1.0, 1e300], [0.0, 1.0]],                # beyond float32
    [[0.5, [0.5]], [0.5, 0.5]],
    [[0.5, {}], [0.5, 0.5]],
    [[[0.5, 0.5]], [[0.5, 0.5]]],
    [[0.5]],
    [[]],
])
def test_weights_from_json_cases(value: Any) -> None:
    assert_same(value)


def test_weights_fast_path_skips_the_body_scan() -> None:
    """A plain float matrix never asks whether the body holds literals."""
    def fail() -> bool:
        raise AssertionError("the literal scan ran")

    array = weights_from_json(np.random.default_rng(0).random((8, 8)).tolist(), LIMITS, may_hold_literals=fail)
    assert array.shape == (8, 8) and array.dtype == np.float32


def reference_parse(body: bytes) -> tuple[str, Any]:
    """parse_json_object with the original duplicate test (exact key-end count only)."""
    import app.decode.jsonbody as module

    original = module._may_have_duplicate_keys
    module._may_have_duplicate_keys = lambda raw, value: _count_members(raw) != _count_nested_members(value)  # type: ignore[assignment]
    try:
        return outcome(parse_json_object, body)
    finally:
        module._may_have_duplicate_keys = original


keys = st.sampled_from(["weights", "size", "a", "b:c", 'q"uote', "tok\\", "x"])
json_values = st.recursive(
    st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers(-5, 5), st.booleans(), st.none(),
              st.sampled_from(["", "a:b", "t: 1", '"', "\\", "null"])),
    lambda children: st.one_of(st.lists(children, max_size=3), st.dictionaries(keys, children, max_size=3)),
    max_leaves=12,
)


@st.composite
def object_bodies(draw: st.DrawFn) -> bytes:
    """JSON objects, some with a duplicated key spliced in, some pretty-printed."""
    members = draw(st.lists(st.tuples(keys, json_values), min_size=0, max_size=5))
    if members and draw(st.booleans()):
        members.append((members[0][0], draw(json_values)))  # duplicate key
    separator = draw(st.sampled_from([":", " : ", ":\n"]))
    parts = [json.dumps(key) + separator + json.dumps(value) for key, value in members]
    return ("{" + ", ".join(parts) + "}").encode()


@settings(max_examples=400, deadline=None)
@given(object_bodies())
def test_parse_json_object_matches_the_original(body: bytes) -> None:
    expected = reference_parse(body)
    actual = outcome(parse_json_object, body)
    assert actual == expected, body


def reference_finite_float32(array: np.ndarray) -> np.ndarray:
    """The original check: an isfinite pass, then a magnitude pass for non-float32 input."""
    if not np.isfinite(array).all():
        raise InvalidInput("non-finite", code="non_finite_values", field="weights")
    if array.dtype != np.float32:
        limit = float(np.finfo(np.float32).max)
        if array.size and float(np.abs(array).max()) > limit:
            raise InvalidInput("range", code="value_out_of_range", field="weights")
    return np.ascontiguousarray(array, dtype=np.float32)


special = st.sampled_from([0.0, -0.0, 1.0, np.nan, np.inf, -np.inf, 3.5e38, -3.5e38, 3.4e38, 1e-320])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.floats(-10, 10), special), min_size=1, max_size=12),
       st.sampled_from([np.float64, np.float32, np.float16, np.int64]))
def test_finite_float32_matches_the_original(values: list[float], dtype: Any) -> None:
    with np.errstate(all="ignore"):
        array = np.array(values, dtype=np.float64)
        if dtype is np.int64:
            array = np.nan_to_num(array, nan=0.0, posinf=2**62, neginf=-(2**62)).clip(-(2**62), 2**62).astype(np.int64)
        else:
            array = array.astype(dtype)
    expected = outcome(reference_finite_float32, array)
    actual = outcome(_finite_float32, array)
    assert actual[0] == expected[0]
    if expected[0] == "ok":
        np.testing.assert_array_equal(actual[1], expected[1])
    else:
        assert actual[1] == expected[1]
