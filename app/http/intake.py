"""Reading a ``POST /visualize`` request (JSON or multipart) into options and one source.

This is the HTTP edge of decoding: content types, byte limits, form parts and files. The
content of the parts is handed to the pure decoders in :mod:`app.decode`.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from flask import Request

from app.core.errors import InvalidInput, MalformedRequest, UnsupportedFormat
from app.decode.image import check_image_bytes
from app.decode.jsonbody import parse_json_object
from app.decode.multipart import parse_multipart
from app.decode.tensor import weights_from_json, weights_from_upload
from app.service.config import Limits
from app.service.plan import ImageSource, Source, TextSource, WeightsSource
from app.service.schemas import VisualizeOptions, echo, options_from_form, options_from_json

_FILE_PARTS = {"image", "weights"}


def read_visualize_request(request: Request, limits: Limits) -> tuple[VisualizeOptions, Source]:
    """Parse the body by its content type and check that exactly one source was given."""
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise UnsupportedFormat("compressed request bodies are not accepted", code="unsupported_content_encoding")
    mimetype = request.mimetype
    if mimetype == "application/json":
        options, source = _from_json(request, limits)
    elif mimetype == "multipart/form-data":
        options, source = _from_multipart(request, limits)
    else:
        raise UnsupportedFormat("send application/json or multipart/form-data", code="unsupported_media_type")
    return options, source


def _from_json(request: Request, limits: Limits) -> tuple[VisualizeOptions, Source]:
    body = request.get_data(cache=False)
    if request.content_length is None:
        # A chunked body is cut at the byte limit by Werkzeug, which raises 413 only on the next
        # read: make that read, so an oversize body is a 413 and never parsed truncated.
        request.stream.read(1)
    # A comma per element bounds the element count: reject absurd claims before parsing. A body
    # shorter than the bound cannot hold that many commas, and counting costs a pass over it.
    comma_bound = limits.max_tensor_elements + 20_000
    if len(body) > comma_bound and body.count(b",") > comma_bound:
        raise InvalidInput(f"the body holds more than {limits.max_tensor_elements} numbers",
                            code="tensor_too_large", field="weights")
    fields = parse_json_object(body)
    raw_weights = fields.pop("weights", None)
    options = options_from_json(fields)
    given = _given(raw_weights is not None, options.image is not None, options.text is not None)
    if given == "weights":
        # Evaluated only if the weights need the exact check (three passes over the body).
        weights = weights_from_json(
            raw_weights, limits, may_hold_literals=lambda: b"true" in body or b"false" in body or b"null" in body)
        return options, WeightsSource(weights)
    if given == "image":
        assert options.image is not None
        return options, ImageSource(_base64_image(options.image, limits))
    assert options.text is not None
    return options, TextSource(options.text)


def _base64_image(text: str, limits: Limits) -> bytes:
    """Decode a base64 image (optionally a ``data:`` URL), with the byte cap checked first."""
    if text.startswith("data:"):
        _, _, text = text.partition(",")
    check_image_bytes(len(text) * 3 // 4, limits)  # before decoding: the encoded text bounds the bytes
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput("image must be base64-encoded bytes", code="invalid_base64", field="image") from None


def _from_multipart(request: Request, limits: Limits) -> tuple[VisualizeOptions, Source]:
    form = parse_multipart(_multipart_body(request), request.mimetype_params.get("boundary", ""), limits)
    for name, uploads in form.files.items():
        if name not in _FILE_PARTS:
            raise InvalidInput(f"unexpected file part {echo(name)!r}; use 'image' or 'weights'", code="unknown_field", field=echo(name))
        if len(uploads) > 1:
            raise InvalidInput(f"send one {name!r} file", code="expected_one_file", field=name)
    fields: dict[str, Any] = {}
    for name, values in form.fields.items():
        if len(values) > 1:
            raise InvalidInput(f"field {echo(name)!r} was sent more than once", code="duplicate_field", field=echo(name))
        if name in _FILE_PARTS:
            raise InvalidInput(f"{name!r} must be sent as a file part", code="invalid_type", field=name)
        fields[name] = values[0]
    options = options_from_form(fields)
    given = _given("weights" in form.files, "image" in form.files, options.text is not None)
    if given == "weights":
        upload = form.files["weights"][0]
        return options, WeightsSource(weights_from_upload(upload.filename, upload.data, limits))
    if given == "image":
        return options, ImageSource(form.files["image"][0].data)
    assert options.text is not None
    return options, TextSource(options.text)


def _multipart_body(request: Request) -> bytes:
    """The whole multipart body (bounded by the byte limit); 400 without a boundary parameter.

    The body is read whole so that a truncated upload is refused as malformed instead of being
    parsed up to the cut, which would turn a broken upload into a confusing semantic error.
    """
    if not request.mimetype_params.get("boundary", ""):
        raise MalformedRequest("multipart body has no boundary parameter", code="malformed_multipart")
    body = request.get_data(cache=False, parse_form_data=False)
    if request.content_length is None:
        request.stream.read(1)  # raises 413 if a chunked body went past the limit
    return body


def _given(weights: bool, image: bool, text: bool) -> str:
    """The one source a request gave (``weights``, ``image`` or ``text``); none or several is a 422."""
    given = [name for name, present in (("weights", weights), ("image", image), ("text", text)) if present]
    if not given:
        raise InvalidInput("give one source: weights, image (with model) or text (with model)", code="missing_source")
    if len(given) > 1:
        raise InvalidInput(f"give exactly one source; got {', '.join(given)}", code="conflicting_sources", field=given[1])
    return given[0]
