"""The text audit: how strongly a query token attends to a key token, layer by layer, over many sentences."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from attnmap_client.audit.inputs import TextLine
from attnmap_client.audit.runner import Record, Task
from attnmap_client.audit.stats import describe, gate
from attnmap_client.client import Client, Method, SelectionOptions

_TEXT_KEPT = 300  # characters of each sentence kept in the summary


@dataclass(frozen=True)
class TextPlan:
    """What the text audit asks of every line."""

    models: tuple[str, ...]
    method: Method | None = None
    options: SelectionOptions = field(default_factory=lambda: SelectionOptions())


def text_tasks(plan: TextPlan, lines: Sequence[TextLine]) -> list[Task]:
    """One task per line and model."""
    return [Task(key=f"{model}\t{line.number}",
                 base={"line": line.number, "id": line.id, "text": line.text[:_TEXT_KEPT], "query": line.query,
                       "key": line.key, "model": model},
                 measure=_measurer(plan, line, model))
            for line in lines for model in plan.models]


def _measurer(plan: TextPlan, line: TextLine, model: str) -> Any:
    def measure(client: Client) -> Record:
        result = client.visualize(model=model, text=line.text, view="trace", query=line.query, key=line.key,
                                  method=plan.method, format="json", **plan.options)
        rows = [[float(v) for v in row] for row in result.values]
        per_layer = [sum(row) / len(row) for row in rows]
        return {
            "layers": list(result.meta.get("layers") or range(len(rows))),
            "per_layer": per_layer,
            "per_layer_max": [max(row) for row in rows],
            "link": sum(per_layer) / len(per_layer) if per_layer else None,
            "query_token": result.meta.get("query_token"), "key_token": result.meta.get("key_token"),
            "request_id": result.request_id,
        }
    return measure


def aggregate(records: Sequence[Record], models: Sequence[str], threshold: float | None) -> dict[str, Any]:
    """Per model: the link distribution and, per layer, the mean, spread and percentiles over lines."""
    result: dict[str, Any] = {}
    for model in models:
        mine = [r for r in records if r.get("model") == model]
        ok = [r for r in mine if not r.get("error") and r.get("link") is not None]
        links = [float(r["link"]) for r in ok]
        entry: dict[str, Any] = {"count": len(ok), "errors": len(mine) - len(ok), **describe(links)}
        depth = min((len(r["per_layer"]) for r in ok), default=0)
        layers = []
        for index in range(depth):
            column = [float(r["per_layer"][index]) for r in ok]
            stats = describe(column)
            layers.append({"layer": ok[0]["layers"][index] if ok[0]["layers"] else index, **stats})
        entry["per_layer"] = layers
        if threshold is not None:
            below = sum(1 for v in links if v < threshold)
            entry.update(threshold=threshold, below=below, share_below=below / len(links) if links else None)
        result[model] = entry
    return result


def text_gate(records: Sequence[Record], models: Sequence[str], fail_below: float, max_share: float) -> dict[str, Any]:
    """``--fail-below T --max-share S`` per model: fails when more than S of the lines link below T."""
    per_model = {}
    for model in models:
        links = [float(r["link"]) for r in records
                 if r.get("model") == model and not r.get("error") and r.get("link") is not None]
        per_model[model] = gate(links, fail_below, max_share, below=True)
    return {"fail_below": fail_below, "max_share": max_share, "models": per_model,
            "failed": [m for m, g in per_model.items() if g["failed"]]}


def weakest(records: Sequence[Record], model: str, count: int) -> list[Record]:
    """The ``count`` lines whose query-to-key link is weakest for ``model``."""
    ok = [r for r in records if r.get("model") == model and not r.get("error") and r.get("link") is not None]
    return sorted(ok, key=lambda r: (float(r["link"]), r["line"]))[:count]
