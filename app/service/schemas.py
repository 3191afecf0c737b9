"""The wire contract of ``POST /visualize`` as pydantic models.

JSON bodies are validated strictly (a string is never a number, a boolean never an int);
multipart form fields arrive as text and are validated in lax mode after light pre-parsing.
The ``weights`` tensor is validated by :mod:`app.decode.tensor`, not here, because it needs
its own limits and error codes and must stay fast.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import PydanticCustomError

from app.core.errors import InvalidInput, MalformedRequest

Method = Literal["attention", "rollout", "gradient"]
View = Literal["heatmap", "overlay", "grid", "trace", "text", "layers"]
Fusion = Literal["mean", "max", "min"]

# Region coordinates are image pixels: no accepted image has a side near a million pixels (25 Mpx
# at most, 20:1 at most: about 22,400 px), so anything beyond is a mistake, and the bound keeps
# every coordinate far inside the integer range of the drawing calls.
REGION_LIMIT = 1_000_000.0
# Every float option is finite: 1e400, Infinity and NaN are refused here, once, for JSON and forms.
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
Coordinate = Annotated[float, Field(allow_inf_nan=False, ge=-REGION_LIMIT, le=REGION_LIMIT)]
# How much of a client-chosen name (an unknown key, a form part) an error message repeats.
ECHO_CHARS = 64
_SURROGATE = re.compile("[\ud800-\udfff]")


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
    # An index (negative counts from the end), "cls", "last", "mean", or the exact text of a token
    # (its first occurrence).
    query: int | str | None = Field(default=None)
    key: int | str | None = None
    view: View | None = None
    colormap: str = "viridis"
    alpha: float = Field(default=0.5, ge=0.0, le=1.0, allow_inf_nan=False)
    size: int = Field(default=512, ge=16)
    annotate: bool = False
    format: Literal["png", "json"] = "png"
    normalize: Literal["minmax", "none", "row", "percentile"] = "minmax"
    vmin: FiniteFloat = 0.0
    vmax: FiniteFloat = 1.0
    discard_ratio: float = Field(default=0.0, ge=0.0, lt=1.0, allow_inf_nan=False)
    interpolation: Literal["nearest", "bilinear", "bicubic"] = "bilinear"
    region: list[Coordinate] | None = Field(default=None, min_length=4, max_length=4)
    target: int | None = Field(default=None, ge=0)
    target_text: str | None = None
    mask_special: bool = False
    merge_subwords: bool = False
    truncate: bool = False
    # Leave the model's special tokens (CLS, SEP, BOS...) out of the colour range: they are drawn
    # clipped to it, so a few sink columns no longer flatten everything else to one colour.
    clip_special: bool = False
    # Causal LMs: greedy tokens to generate (capped by limits.max_generate_tokens); the map's rows
    # are then the generated tokens.
    generate: int = Field(default=0, ge=0)
    # Drop the first key (the attention sink, BOS on models that add one) and renormalise rows.
    exclude_sink: bool = False

    @field_validator("model", "image", "text", "text_pair", "tokens", "query", "key", "colormap", "target_text")
    @classmethod
    def _valid_unicode(cls, value: Any) -> Any:
        """No lone surrogates in any text: they cannot be encoded (JSON out, fonts, tokenizers)."""
        for item in value if isinstance(value, list) else (value,):
            if isinstance(item, str) and not item.isascii() and (match := _SURROGATE.search(item)):
                where = f"U+{ord(match.group()):04X}) at position {match.start()}"
                raise PydanticCustomError("invalid_text", f"contains a lone surrogate ({where}; send valid Unicode")
        return value


# pydantic error types grouped into the API's codes.
_TYPE_ERRORS = {"int_type", "float_type", "bool_type", "string_type", "list_type", "int_from_float",
                "int_parsing", "float_parsing", "bool_parsing", "is_instance_of", "model_type", "union_tag_invalid"}
_RANGE_ERRORS = {"greater_than", "greater_than_equal", "less_than", "less_than_equal", "too_short", "too_long",
                 "string_too_short", "string_too_long"}


def echo(name: str) -> str:
    """A client-chosen name as an error repeats it: at most :data:`ECHO_CHARS` characters."""
    short = name if len(name) <= ECHO_CHARS else name[: ECHO_CHARS - 1] + "\u2026"
    return _SURROGATE.sub("\ufffd", short)


def _huge_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and abs(value) >= 2**63


def _describe(error: Any) -> tuple[str, str]:
    kind = error["type"]
    if kind == "invalid_text":
        return "invalid_text", error["msg"]
    if kind == "finite_number":
        return "invalid_value", "must be a finite number"
    if kind in ("int_parsing_size", "int_type", "int_from_float") and _huge_number(error.get("input")):
        # JSON integers past 64 bits arrive as floats (orjson): a size of 2**64 is out of range, not a type error.
        return "out_of_range", "is too large"
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
    errors = exc.errors(include_url=False, include_input=True)
    # For a union (head: int | 'mean'...), pydantic reports one error per member; the first is enough.
    first = errors[0]
    field = echo(str(first["loc"][0])) if first["loc"] else None
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
_BOOL_FIELDS = {"annotate", "mask_special", "merge_subwords", "truncate", "clip_special", "exclude_sink"}
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


# Options that only mean something for one kind of source: sent with another, they would be
# silently ignored, which hides a mistake (a region measured on nothing, a pair never read).
# exclude_sink drops the first key token: an image map shows patches only (its prefix tokens are
# never drawn), so there it would drop a patch and break the grid.
_FIELDS_FOR_SOURCE = {"region": ("image",), "text_pair": ("text",), "target_text": ("text",), "tokens": ("weights",),
                      "exclude_sink": ("text", "weights")}


def check_fields_fit_source(options: VisualizeOptions, source: str) -> None:
    """422 ``not_applicable`` for an option the given source (``weights``, ``image``, ``text``) cannot use."""
    for name, sources in _FIELDS_FOR_SOURCE.items():
        value = getattr(options, name)
        if value is not None and value is not False and source not in sources:
            raise InvalidInput(f"{name} applies to {' or '.join(sources)} input only; this request sends {source}",
                               code="not_applicable", field=name)
