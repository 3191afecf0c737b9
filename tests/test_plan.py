"""The request plan: every selection resolved once, against the source's facts, with one check each."""

from __future__ import annotations

import typing

import pytest

from app.core.errors import InvalidInput
from app.service.config import Limits
from app.service.plan import Facts, check_model_kind, check_source, resolve
from app.service.schemas import View, VisualizeOptions
from app.service.views import VIEWS

LIMITS = Limits()
TEXT = Facts(kind="text", num_layers=6, num_heads=12, model="minilm")
VISION = Facts(kind="vision", num_layers=4, num_heads=4, model="shapes-vit")
WEIGHTS = Facts(kind="weights", num_layers=3, num_heads=2, square=False)


def plan_of(facts: Facts, **fields: typing.Any):
    return resolve(VisualizeOptions(**fields), facts, LIMITS)


def test_every_view_of_the_schema_has_an_entry_in_the_view_table() -> None:
    assert set(typing.get_args(View)) == set(VIEWS)


def test_layers_are_resolved_to_indices_and_the_layers_a_method_reads() -> None:
    assert (plan_of(TEXT).layer, plan_of(TEXT).layers) == (5, (5,))
    assert plan_of(TEXT, layer=-2, method="rollout").layers == (0, 1, 2, 3, 4)
    assert plan_of(TEXT, view="trace", query=0, key=1).layers == tuple(range(6))
    with pytest.raises(InvalidInput, match=r"\[-6, 5\]") as info:
        plan_of(TEXT, layer=6)
    assert info.value.field == "layer"


def test_defaults_depend_on_the_source() -> None:
    assert (plan_of(VISION).view, plan_of(VISION).query) == ("overlay", "cls")
    assert (plan_of(TEXT).view, plan_of(TEXT).query) == ("heatmap", None)


@pytest.mark.parametrize(("facts", "fields", "code", "field"), [
    (TEXT, {"head": 12}, "out_of_range", "head"),
    (TEXT, {"view": "overlay"}, "invalid_value", "view"),
    (WEIGHTS, {"method": "rollout"}, "not_square", "weights"),
    (WEIGHTS, {"mask_special": True}, "invalid_value", "mask_special"),
    (VISION, {"merge_subwords": True}, "invalid_value", "merge_subwords"),
    (TEXT, {"view": "trace", "key": 1}, "missing_field", "query"),
    (TEXT, {"size": 5000}, "output_too_large", "size"),
    (TEXT, {"colormap": "nope"}, "invalid_colormap", "colormap"),
    (TEXT, {"normalize": "none", "vmin": 1.0, "vmax": 1.0}, "invalid_value", "vmax"),
    (VISION, {"region": [10.0, 10.0, 5.0, 20.0]}, "invalid_value", "region"),
    (Facts(kind="text", num_layers=2, num_heads=100), {"view": "grid"}, "too_many_panels", "view"),
])
def test_each_problem_is_found_while_planning(facts: Facts, fields: dict, code: str, field: str) -> None:
    with pytest.raises(InvalidInput) as info:
        plan_of(facts, **fields)
    assert (info.value.code, info.value.field) == (code, field)


def test_source_and_model_kind_checks() -> None:
    with pytest.raises(InvalidInput, match="gradient"):
        check_source(VisualizeOptions(method="gradient"), "weights")
    with pytest.raises(InvalidInput) as info:
        check_source(VisualizeOptions(), "text")
    assert info.value.code == "missing_field"
    with pytest.raises(InvalidInput) as info:
        check_model_kind(TEXT, "image")
    assert info.value.code == "wrong_input_kind"
    check_model_kind(VISION, "image")


def test_a_gradient_plan_over_a_capture_without_gradients_fails_loudly() -> None:
    """Never a silent all-zero relevance map: a missing gradient is the model side's bug, named as such."""
    import numpy as np

    from app.core.attention import stack_from_array
    from app.core.errors import AttnmapError
    from app.service.reduction import reduce_matrix_view
    from models.adapter import Capture

    plan = plan_of(TEXT, method="gradient")
    weights = np.full((6, 12, 3, 3), 1 / 3, dtype=np.float32)
    with pytest.raises(AttnmapError) as info:
        reduce_matrix_view(Capture(stack=stack_from_array(weights)), plan, LIMITS)
    assert info.value.code == "gradients_not_captured"
