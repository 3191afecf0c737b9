"""Reductions against hand-computed values and their known pitfalls."""

import numpy as np
import pytest

from app.core.errors import InvalidInput
from app.core.reduce import (
    fuse_heads,
    gradient_relevance,
    normalize_rows,
    rollout,
    rollout_row,
)
from app.service.plan import resolve_head, resolve_layer, resolve_token
from app.service.reduction import query_row, select_row


def test_rollout_matches_hand_computed_three_tokens_two_layers():
    layer1 = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.2, 0.3, 0.5]])
    layer2 = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    stack = np.stack([layer1, layer2])[:, np.newaxis]  # [L=2, H=1, 3, 3]
    # By hand: A' = 0.5 A + 0.5 I per layer, R = A2' @ A1' (later layer on the left).
    expected = np.array([[0.625, 0.375, 0.0], [0.175, 0.45, 0.375], [0.55, 0.075, 0.375]])
    np.testing.assert_allclose(rollout(stack), expected, atol=1e-12)


def test_rollout_order_is_later_layers_on_the_left():
    a = np.array([[0.0, 1.0], [1.0, 0.0]])
    b = np.array([[1.0, 0.0], [1.0, 0.0]])
    forward = rollout(np.stack([a, b])[:, np.newaxis])
    swapped = rollout(np.stack([b, a])[:, np.newaxis])
    assert not np.allclose(forward, swapped)
    a2, b2 = 0.5 * a + 0.5 * np.eye(2), 0.5 * b + 0.5 * np.eye(2)
    np.testing.assert_allclose(forward, normalize_rows(b2) @ normalize_rows(a2))


def test_rollout_rows_stay_stochastic_with_discard_and_max_fusion():
    rng = np.random.default_rng(0)
    layers = rng.random((4, 3, 6, 6))
    layers /= layers.sum(-1, keepdims=True)
    for fusion in ("mean", "max", "min"):
        result = rollout(layers, fusion, discard_ratio=0.9)
        np.testing.assert_allclose(result.sum(-1), 1.0, atol=1e-12)


def test_discard_keeps_cls_self_edge():
    layer = np.full((1, 1, 3, 3), 1 / 3)
    layer[0, 0, 0] = [0.01, 0.5, 0.49]  # CLS self-edge is the smallest weight
    from app.core.reduce import _discard_smallest

    kept = _discard_smallest(layer[0, 0], 0.2)
    assert kept[0, 0] == pytest.approx(0.01)


def test_max_fusion_rows_are_renormalised():
    heads = np.array([[[0.6, 0.4], [0.1, 0.9]], [[0.2, 0.8], [0.5, 0.5]]])
    fused = fuse_heads(heads, "max")
    np.testing.assert_allclose(fused, [[0.6 / 1.4, 0.8 / 1.4], [0.5 / 1.4, 0.9 / 1.4]])
    np.testing.assert_allclose(fuse_heads(heads, "min").sum(-1), 1.0)
    np.testing.assert_allclose(fuse_heads(heads, "mean"), heads.mean(0))
    np.testing.assert_allclose(fuse_heads(heads, 1), heads[1])


def test_layer_indexing_with_negative_layers():
    assert resolve_layer(-1, 6) == 5
    assert resolve_layer(-6, 6) == 0
    assert resolve_layer(None, 6) == 5
    assert resolve_layer(2, 6) == 2
    for bad in (6, -7, 10**30):
        with pytest.raises(InvalidInput) as info:
            resolve_layer(bad, 6)
        assert info.value.code == "out_of_range" and "[-6, 5]" in info.value.message


def test_head_must_be_in_range_and_never_negative():
    assert resolve_head(0, 4) == 0 and resolve_head("max", 4) == "max"
    for bad in (-1, 4):
        with pytest.raises(InvalidInput) as info:
            resolve_head(bad, 4)
        assert info.value.field == "head" and "[0, 3]" in info.value.message


def test_gradient_relevance_is_chefer_rule_in_layer_order():
    rng = np.random.default_rng(1)
    attention = rng.random((3, 2, 4, 4))
    gradients = rng.normal(size=(3, 2, 4, 4))
    expected = np.eye(4)
    for a, g in zip(attention, gradients, strict=True):
        expected = expected + np.clip(a * g, 0, None).mean(0) @ expected
    np.testing.assert_allclose(gradient_relevance(attention, gradients), expected)
    # Pairing layers with the wrong gradients (the reversed-hook bug) gives a different map.
    assert not np.allclose(gradient_relevance(attention, gradients[::-1]), expected)


def test_query_selection():
    matrix = np.arange(9.0).reshape(3, 3)
    np.testing.assert_array_equal(select_row(matrix, query_row("cls", None, 3)), [0, 1, 2])
    np.testing.assert_array_equal(select_row(matrix, query_row(-1, None, 3)), [6, 7, 8])
    np.testing.assert_array_equal(select_row(matrix, query_row("mean", None, 3)), [3, 4, 5])
    np.testing.assert_array_equal(select_row(matrix, query_row("b", ["a", "b", "c"], 3)), [3, 4, 5])
    assert select_row(matrix, query_row(None, None, 3)) is matrix
    with pytest.raises(InvalidInput):
        query_row(3, None, 3)


@pytest.mark.parametrize("head", ["mean", "max", "min", 1])
@pytest.mark.parametrize("discard_ratio", [0.0, 0.5])
def test_rollout_row_equals_the_row_of_the_full_rollout(head, discard_ratio):
    rng = np.random.default_rng(3)
    layers = normalize_rows(rng.random((5, 3, 17, 17)) ** 4)
    full = rollout(layers, head, discard_ratio)
    for row in (0, 7, 16):
        np.testing.assert_allclose(rollout_row(layers, row, head, discard_ratio), full[row], rtol=1e-12, atol=1e-15)


def test_query_index_counts_negatives_from_the_end_and_names_the_range():
    assert (resolve_token("cls", None, 5, "query"), resolve_token(3, None, 5, "query"), resolve_token(-1, None, 5, "query")) == (0, 3, 4)
    with pytest.raises(InvalidInput, match=r"\[-5, 4\]"):
        resolve_token(5, None, 5, "query")
