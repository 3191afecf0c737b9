"""The table of views: for each ``view`` value, how its map is reduced and how it is drawn.

Adding a view is one reducer in :mod:`app.service.reduction`, one renderer in
:mod:`app.service.rendering` (or a pure module under :mod:`app.render`), and one entry here,
plus its name in the schema's ``View`` and in ``openapi.yaml``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from app.service import reduction, rendering, text_view
from app.service.config import Limits, Settings
from app.service.plan import Plan
from app.service.reduction import ReducedMap
from app.service.timing import StageTimer
from models.adapter import Capture

Reducer = Callable[[Capture, Plan, Limits], ReducedMap]
Renderer = Callable[[ReducedMap, Capture, Plan, Settings, StageTimer], bytes]


@dataclass(frozen=True)
class ViewEntry:
    """One view: its reducer and its renderer."""

    reduce: Reducer
    render: Renderer


VIEWS: dict[str, ViewEntry] = {
    "heatmap": ViewEntry(reduction.reduce_matrix_view, rendering.render_matrix),
    "overlay": ViewEntry(reduction.reduce_matrix_view, rendering.render_overlay),
    "grid": ViewEntry(reduction.reduce_grid, rendering.render_grid),
    "trace": ViewEntry(reduction.reduce_trace, rendering.render_matrix),
    "text": ViewEntry(text_view.reduce_text, text_view.render_text),
    "layers": ViewEntry(reduction.reduce_layers, rendering.render_matrix),
}


def view_entry(view: str) -> ViewEntry:
    """The entry of a view the schema accepted (every ``View`` value has one; a test checks it)."""
    return VIEWS[view]
