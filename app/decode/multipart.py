"""A strict ``multipart/form-data`` parser for a body that is already in memory.

Why not Werkzeug's form parser: it is a streaming parser that searches its buffer with regular
expressions, which costs ~0.25 ms for a two-part upload of a small PNG, a third of the service's
own time per overlay request at the built-in model's size. The body here is already read and
bounded by the byte limit (the framing check needs it whole anyway), so plain ``bytes.find`` on
the delimiter does the same job about ten times faster.

Strict where it matters (RFC 7578 / RFC 2046): every part needs ``Content-Disposition:
form-data`` with a ``name``; the body must reach its closing delimiter; header lines are
``Name: value`` without obsolete folding; field values must be UTF-8. Lenient where clients
differ: a preamble and an epilogue are ignored, header names are case-insensitive, parameter
values may be tokens or quoted strings, and ``filename*`` (RFC 5987) is understood. A part
with a ``filename`` parameter is a file, as browsers, curl and Werkzeug all treat it.
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass, field

from app.core.errors import MalformedRequest, TooLarge
from app.service.config import Limits

# RFC 2046 says 1-70 characters, but real encoders exceed it (Werkzeug's own test client writes
# 69-72); any printable ASCII except quotes, up to 200, covers every client seen in practice.
_BOUNDARY = re.compile(r"^[\x20-\x21\x23-\x7e]{1,200}$")
# One "; key=value" parameter; the value is a quoted string (backslash escapes) or a token.
_PARAM = re.compile(r'\s*;\s*([A-Za-z0-9!#$%&\'*+.^_`|~-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;\s"]*)\s*')
_QUOTED_PAIR = re.compile(r"\\(.)")
_MAX_HEADER_BYTES = 8192  # per part: a part's headers are a few short lines


@dataclass(frozen=True)
class FilePart:
    """One uploaded file: the name the client gave it and its bytes."""

    filename: str
    data: bytes


@dataclass
class MultipartForm:
    """The parts of a form, by field name, in the order they came (repeats kept, for the caller to judge)."""

    fields: dict[str, list[str]] = field(default_factory=dict)
    files: dict[str, list[FilePart]] = field(default_factory=dict)


def _malformed(message: str) -> MalformedRequest:
    return MalformedRequest(message, code="malformed_multipart")


def parse_multipart(body: bytes, boundary: str, limits: Limits) -> MultipartForm:
    """Split ``body`` into form fields and files, enforcing the part count and field size limits.

    Raises 400 ``malformed_multipart`` for a bad boundary, a missing closing delimiter or a
    part without a proper ``Content-Disposition``, and 413 ``payload_too_large`` for more
    parts than ``max_form_parts`` or a text field over ``max_form_field_bytes``.
    """
    if not _BOUNDARY.match(boundary):
        raise _malformed("multipart boundary must be 1-200 printable characters")
    dash = b"--" + boundary.encode("ascii")
    delimiter = b"\r\n" + dash
    if body.startswith(dash):
        position = 0
    else:  # a preamble before the first delimiter is allowed and ignored
        found = body.find(delimiter)
        if found < 0:
            raise _malformed("multipart body has no delimiter line for its boundary")
        position = found + 2
    form = MultipartForm()
    parts = 0
    while True:
        position += len(dash)
        if body.startswith(b"--", position):
            return form  # the closing delimiter; anything after it is an epilogue
        line_end = body.find(b"\r\n", position)
        if line_end < 0 or body[position:line_end].strip(b" \t"):
            raise _malformed("multipart delimiter line is malformed or the body is truncated")
        start = line_end + 2
        end = body.find(delimiter, start)
        if end < 0:
            raise _malformed("multipart body is truncated (no closing boundary)")
        parts += 1
        if parts > limits.max_form_parts:
            raise TooLarge(f"the form has more than {limits.max_form_parts} parts", code="payload_too_large")
        _add_part(form, body, start, end, limits)
        position = end + 2


def _add_part(form: MultipartForm, body: bytes, start: int, end: int, limits: Limits) -> None:
    """Parse the part ``body[start:end]`` (headers, blank line, content) into ``form``."""
    if body.startswith(b"\r\n", start):
        raise _malformed("a multipart part has no Content-Disposition header")
    split = body.find(b"\r\n\r\n", start, end)
    content_start = split + 4
    if split < 0 and body.endswith(b"\r\n", start, end):
        # An empty part whose blank line doubles as the delimiter's line break, as Werkzeug's own
        # test client and some other encoders write an empty file.
        split, content_start = end - 2, end
    if split < 0 or split - start > _MAX_HEADER_BYTES:
        raise _malformed("a multipart part has no end of headers")
    headers = _part_headers(body[start:split])
    disposition = headers.get("content-disposition")
    if disposition is None:
        raise _malformed("a multipart part has no Content-Disposition header")
    kind, params = _disposition(disposition)
    if kind != "form-data" or "name" not in params:
        raise _malformed("each multipart part needs 'Content-Disposition: form-data; name=...'")
    name = params["name"]
    content = body[content_start:end]
    filename = params.get("filename*", params.get("filename"))
    if filename is not None:
        form.files.setdefault(name, []).append(FilePart(filename=filename, data=content))
        return
    if len(content) > limits.max_form_field_bytes:
        raise TooLarge(f"form field {name[:64]!r} is larger than {limits.max_form_field_bytes} bytes",
                              code="payload_too_large")
    try:
        value = content.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedRequest(f"form field {name[:64]!r} is not valid UTF-8", code="malformed_multipart", field=name[:64]) from None
    form.fields.setdefault(name, []).append(value)


def _part_headers(block: bytes) -> dict[str, str]:
    """``Name: value`` lines, names lower-cased; a repeated header or a folded line is malformed."""
    headers: dict[str, str] = {}
    for raw in block.split(b"\r\n"):
        line = raw.decode("utf-8", errors="replace")
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip() or line[:1] in (" ", "\t"):
            raise _malformed("a multipart part has a malformed header line")
        key = name.lower()
        if key in headers:
            raise _malformed(f"a multipart part repeats the {name[:40]} header")
        headers[key] = value.strip()
    return headers


def _disposition(value: str) -> tuple[str, dict[str, str]]:
    """``form-data; name="x"; filename="y"`` -> ("form-data", {"name": "x", "filename": "y"})."""
    kind, _, rest = value.partition(";")
    rest = ";" + rest if rest else ""
    params: dict[str, str] = {}
    position = 0
    while position < len(rest):
        match = _PARAM.match(rest, position)
        if match is None:
            if rest[position:].strip() not in ("", ";"):  # a trailing ';' is common and harmless
                raise _malformed("a multipart Content-Disposition header has malformed parameters")
            break
        key, raw = match.group(1).lower(), match.group(2)
        if key in params:
            raise _malformed(f"a multipart Content-Disposition header repeats {key!r}")
        params[key] = _param_value(key, raw)
        position = match.end()
    return kind.strip().lower(), params


def _param_value(key: str, raw: str) -> str:
    """Unquote a parameter; ``filename*`` is RFC 5987 ``charset'lang'percent-encoded``."""
    if raw.startswith('"'):
        return _QUOTED_PAIR.sub(r"\1", raw[1:-1])
    if key.endswith("*"):
        charset, _, encoded = raw.partition("'")
        _, _, encoded = encoded.partition("'")
        try:
            return urllib.parse.unquote(encoded, encoding=charset or "utf-8", errors="strict")
        except (LookupError, UnicodeDecodeError):
            raise _malformed(f"a multipart {key} parameter is not valid percent-encoded text") from None
    return raw
