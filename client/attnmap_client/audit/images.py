"""The image audit: the share of each image's attention inside a region, over a whole folder."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from attnmap_client.audit.inputs import Box, box_for, scale_region
from attnmap_client.audit.runner import Record, Task
from attnmap_client.audit.stats import describe, gate
from attnmap_client.client import Client, Method, SelectionOptions
from attnmap_client.imagesize import ImageSizeError, image_size


@dataclass(frozen=True)
class ImagePlan:
    """What the image audit asks of every image."""

    root: Path
    models: tuple[str, ...]
    method: Method | None = None
    region: Box | None = None
    """Fractions of each image (``--region``); or None with ``boxes``."""
    boxes: Mapping[str, Box] | None = None
    """Pixel boxes by relative path or file name (``--boxes``)."""
    options: SelectionOptions = field(default_factory=lambda: SelectionOptions())
    """More visualize options (layer, head, query, discard_ratio)."""


class MeasureError(ValueError):
    """The image could not be measured on the client side (no box, size unreadable)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def group_of(path: str) -> str:
    """The first folder of a relative path (``marked/square/3.png`` -> ``marked``); ``.`` at the top."""
    return path.split("/", 1)[0] if "/" in path else "."


def pixel_region(plan: ImagePlan, relative: str, size: tuple[int, int] | None) -> Box | None:
    """The region of one image in its own pixels, or None when it cannot be known."""
    if plan.boxes is not None:
        return box_for(plan.boxes, relative)
    if plan.region is not None and size is not None:
        return scale_region(plan.region, *size)
    return None


def image_tasks(plan: ImagePlan, paths: Sequence[str]) -> list[Task]:
    """One task per image and model: every model measures the same images."""
    return [Task(key=f"{model}\t{path}", base={"path": path, "group": group_of(path), "model": model},
                 measure=_measurer(plan, path, model))
            for path in paths for model in plan.models]


def _measurer(plan: ImagePlan, relative: str, model: str) -> Any:
    def measure(client: Client) -> Record:
        data = (plan.root / relative).read_bytes()
        try:
            size: tuple[int, int] | None = image_size(data)
        except ImageSizeError:
            size = None  # let the server say what is wrong with it (its error is recorded)
        region = pixel_region(plan, relative, size)
        if region is None and plan.boxes is not None:
            return _failed("no_box", f"--boxes has no box for {relative}")
        result = client.visualize(model=model, image=data, method=plan.method, region=region, format="json",
                                  **plan.options)
        if region is None:
            return _failed("image_size_unknown", "the image's size could not be read from its header")
        prediction = result.prediction or {}
        return {
            "width": size[0] if size else None, "height": size[1] if size else None,
            "region": [round(v, 3) for v in region], "region_mass": result.region_mass, "area_share": result.area_share,
            "prediction": prediction.get("label", prediction.get("predicted_label")),
            "probability": prediction.get("probability"), "score": prediction.get("score"),
            "layers": list(result.meta.get("layers") or []), "method": result.meta.get("method"),
            "request_id": result.request_id,
        }
    return measure


def _failed(code: str, message: str) -> Record:
    return {"error": {"status": None, "code": code, "message": message, "field": None, "request_id": None}}


def aggregate(records: Sequence[Record], models: Sequence[str], threshold: float | None) -> dict[str, Any]:
    """Per model: how many were measured or failed, the region mass distribution, per group as well."""
    result: dict[str, Any] = {}
    for model in models:
        mine = [r for r in records if r.get("model") == model]
        ok = [r for r in mine if not r.get("error") and r.get("region_mass") is not None]
        masses = [float(r["region_mass"]) for r in ok]
        shares = [float(r["area_share"]) for r in ok if r.get("area_share") is not None]
        entry: dict[str, Any] = {"count": len(ok), "errors": len(mine) - len(ok), **describe(masses),
                                 "area_share_mean": sum(shares) / len(shares) if shares else None}
        if threshold is not None:
            above = sum(1 for m in masses if m > threshold)
            entry.update(threshold=threshold, above=above, share_above=above / len(masses) if masses else None)
        groups = sorted({r["group"] for r in ok})
        if len(groups) > 1:
            entry["groups"] = {g: {"count": len(vals), **describe(vals)}
                               for g in groups
                               for vals in [[float(r["region_mass"]) for r in ok if r["group"] == g]]}
        result[model] = entry
    return result


def image_gate(records: Sequence[Record], models: Sequence[str], fail_above: float, max_share: float) -> dict[str, Any]:
    """``--fail-above M --max-share S`` per model; the run fails when any model fails."""
    per_model = {}
    for model in models:
        masses = [float(r["region_mass"]) for r in records
                  if r.get("model") == model and not r.get("error") and r.get("region_mass") is not None]
        per_model[model] = gate(masses, fail_above, max_share)
    return {"fail_above": fail_above, "max_share": max_share, "models": per_model,
            "failed": [m for m, g in per_model.items() if g["failed"]]}


def worst_offenders(records: Sequence[Record], model: str, count: int) -> list[Record]:
    """The ``count`` images with the most mass inside the region for ``model``."""
    ok = [r for r in records if r.get("model") == model and not r.get("error") and r.get("region_mass") is not None]
    return sorted(ok, key=lambda r: (-float(r["region_mass"]), r["path"]))[:count]
