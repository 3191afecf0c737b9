"""The wire contract of ``POST /visualize`` as pydantic models.

JSON bodies are validated strictly (a string is never a number, a boolean never an int);
multipart form fields arrive as text and are validated in lax mode after light pre-parsing.
The ``weights`` tensor is validated by :mod:`app.decode.tensor`, not here, because it needs
its own limits and error codes and must stay fast.
"""

from __future__ import annotations

import re
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from app.core.errors import InvalidInput, MalformedRequest

Method = Literal["attention", "rollout", "gradient"]
View = Literal["heatmap", "overlay", "grid", "trace", "text"]
Fusion = Literal["mean", "max", "min"]


class VisualizeOptions(BaseModel):
    """Everything in a visualize request except the weights tensor and uploaded files."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    model: str | None = Field(default=None, min_length=1, max_length=128)
    image: str | None = None
    text: str | None = None
    text_pair: str | None = None
    tokens: list[str] | None = Field(default=None, max_length=8192)
    layer: int | None = None
    head: int | Fusion = "mean"
    method: Method = "attention"
    # An index, "cls", "mean", or the exact text of a token (its first occurrence).
    query: int | str | None = Field(default=None)
    key: int | str | None = None
    view: View | None = None
    colormap: str = "viridis"
    alpha: float = Field(default=0.5, ge=0.0, le=1.0)
    size: int = Field(default=512, ge=16)
    annotate: bool = False
    format: Literal["png", "json"] = "png"
    normalize: Literal["minmax", "none", "row", "percentile"] = "minmax"
    vmin: float = 0.0
    vmax: float = 1.0
    discard_ratio: float = Field(default=0.0, ge=0.0, lt=1.0)
    interpolation: Literal["nearest", "bilinear", "bicubic"] = "bilinear"
    region: list[float] | None = Field(default=None, min_length=4, max_length=4)
    target: int | None = Field(default=None, ge=0)
    target_text: str | None = None
    mask_special: bool = False
    merge_subwords: bool = False
    truncate: bool = False
    # Leave the model's special tokens (CLS, SEP, BOS...) out of the colour range: they are drawn
    # clipped to it, so a few sink columns no longer flatten everything else to one colour.
    clip_special: bool = False


# pydantic error types grouped into the API's codes.
_TYPE_ERRORS = {"int_type", "float_type", "bool_type", "string_type", "list_type", "int_from_float",
                "int_parsing", "float_parsing", "bool_parsing", "is_instance_of", "model_type", "union_tag_invalid"}
_RANGE_ERRORS = {"greater_than", "greater_than_equal", "less_than", "less_than_equal", "too_short", "too_long",
                 "string_too_short", "string_too_long"}


def _describe(error: Any) -> tuple[str, str]:
    kind = error["type"]
    if kind == "extra_forbidden":
        return "unknown_field", "is not a known field"
    if kind in _RANGE_ERRORS:
        return "out_of_range", error["msg"].lower()
    if kind == "literal_error":
        return "invalid_value", error["msg"].lower()
    if kind in _TYPE_ERRORS:
        return "invalid_type", error["msg"].lower()
    return "invalid_value", error["msg"].lower()


def validation_error(exc: ValidationError) -> InvalidInput:
    """Translate the first pydantic error into a 422 naming the field."""
    errors = exc.errors(include_url=False, include_input=False)
    # For a union (head: int | 'mean'...), pydantic reports one error per member; the first is enough.
    first = errors[0]
    field = str(first["loc"][0]) if first["loc"] else None
    code, message = _describe(first)
    if first["type"] == "literal_error" or (len({str(e["loc"][0]) for e in errors if e["loc"]}) == 1 and len(errors) > 1):
        code = "invalid_value" if any(e["type"] == "literal_error" for e in errors) else code
        message = "; ".join(sorted({e["msg"].lower() for e in errors}))
    return InvalidInput(f"{field}: {message}", code=code, field=field)


def options_from_json(fields: dict[str, Any]) -> VisualizeOptions:
    """Strict validation of a JSON body (without ``weights``)."""
    try:
        return VisualizeOptions.model_validate(fields, strict=True)
    except ValidationError as exc:
        raise validation_error(exc) from None


_LIST_FIELDS = {"tokens", "region"}
_FORM_BOOLEANS = {"true": True, "false": False, "1": True, "0": False}
_BOOL_FIELDS = {"annotate", "mask_special", "merge_subwords", "truncate", "clip_special"}
# A token position in a form is written as a (possibly negative) integer, as in JSON; any other
# text is a token's text. (In JSON, "3" is the text "3" and 3 the position.)
_POSITION_FIELDS = {"query", "key"}
_INTEGER = re.compile(r"[+-]?[0-9]{1,9}")


def options_from_form(form: dict[str, str]) -> VisualizeOptions:
    """Lax validation of multipart text fields: numbers and booleans parsed from their text."""
    fields: dict[str, Any] = {}
    for name, raw in form.items():
        if name in _LIST_FIELDS:
            fields[name] = _form_list(name, raw)
        elif name in _BOOL_FIELDS:
            value = _FORM_BOOLEANS.get(raw.strip().lower())
            if value is None:
                raise InvalidInput(f"{name}: expected true or false", code="invalid_type", field=name)
            fields[name] = value
        elif name in _POSITION_FIELDS and _INTEGER.fullmatch(raw.strip()):
            fields[name] = int(raw.strip())
        else:
            fields[name] = raw
    try:
        return VisualizeOptions.model_validate(fields, strict=False)
    except ValidationError as exc:
        raise validation_error(exc) from None


def _form_list(name: str, raw: str) -> Any:
    """A list field in a form: JSON (``["a","b"]``) or, for ``region``, ``x0,y0,x1,y1``."""
    text = raw.strip()
    if text.startswith("["):
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            raise MalformedRequest(f"{name}: malformed JSON list", code="malformed_field", field=name) from None
    if name == "region":
        return [part.strip() for part in text.split(",")]
    raise InvalidInput(f"{name}: expected a JSON list", code="invalid_type", field=name)
