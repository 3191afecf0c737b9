"""The strict multipart parser: what real clients send parses as Werkzeug parses it; bad framing is a 400."""

from __future__ import annotations

import io

import pytest
import requests
from werkzeug.formparser import parse_form_data
from werkzeug.test import EnvironBuilder

from app.core.errors import MalformedRequest, TooLarge
from app.decode.multipart import parse_multipart
from app.service.config import Limits

LIMITS = Limits()
B = "b0undary"


def body_of(*parts: bytes, boundary: str = B, preamble: bytes = b"", epilogue: bytes = b"") -> bytes:
    dash = b"--" + boundary.encode()
    return preamble + b"".join(dash + b"\r\n" + part + b"\r\n" for part in parts) + dash + b"--\r\n" + epilogue


def field(name: str, value: bytes) -> bytes:
    return f'Content-Disposition: form-data; name="{name}"\r\n\r\n'.encode() + value


def werkzeug_view(body: bytes, content_type: str) -> tuple[dict, dict]:
    environ = {"REQUEST_METHOD": "POST", "CONTENT_TYPE": content_type, "CONTENT_LENGTH": str(len(body)),
               "wsgi.input": io.BytesIO(body)}
    _, form, files = parse_form_data(environ)
    return ({k: form.getlist(k) for k in form}, {k: [(f.filename, f.read()) for f in files.getlist(k)] for k in files})


def ours(body: bytes, boundary: str) -> tuple[dict, dict]:
    form = parse_multipart(body, boundary, LIMITS)
    return form.fields, {k: [(f.filename, f.data) for f in v] for k, v in form.files.items()}


CLIENT_FORMS = {
    "fields and a file": ({"model": "shapes-vit", "layer": "-1"}, {"image": ("x.png", b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8)}),
    "an empty file": ({"model": "m"}, {"image": ("empty.png", b"")}),
    "file bytes that look like a delimiter": ({}, {"weights": ("w.npy", b"\r\n--not-the-boundary\r\n\r\n--")}),
    "non-ASCII values and file name": ({"text": "naïve café ✓"}, {"weights": ("wéights.npy", b"\x00\x01")}),
    "an empty field": ({"text": ""}, {}),
}


@pytest.mark.parametrize("case", CLIENT_FORMS, ids=list(CLIENT_FORMS))
def test_requests_and_werkzeug_encodings_parse_as_werkzeug_parses_them(case):
    fields, files = CLIENT_FORMS[case]
    prepared = requests.Request("POST", "http://x/", data=fields, files=files or None).prepare()
    if not files:  # requests url-encodes a form without files: send the fields as file-less parts instead
        prepared = requests.Request("POST", "http://x/", files={k: (None, v) for k, v in fields.items()}).prepare()
    encoded = [(prepared.body, prepared.headers["Content-Type"])]
    if files:  # Werkzeug's test client (what the API tests use) encodes a form with files as multipart
        data = {k: v for k, v in fields.items()} | {k: (io.BytesIO(v[1]), v[0]) for k, v in files.items()}
        environ = EnvironBuilder(method="POST", data=data).get_environ()
        encoded.append((environ["wsgi.input"].read(), environ["CONTENT_TYPE"]))
    for body, content_type in encoded:
        boundary = content_type.split("boundary=", 1)[1].strip('"')
        assert ours(body, boundary) == werkzeug_view(body, content_type)


def test_preamble_epilogue_header_case_and_token_parameters():
    part = b"content-disposition: FORM-DATA; name=layer\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n3"
    form = parse_multipart(body_of(part, preamble=b"ignored preamble\r\n", epilogue=b"ignored epilogue"), B, LIMITS)
    assert form.fields == {"layer": ["3"]}


def test_quoted_names_with_escapes_and_rfc5987_file_names():
    part = (b'Content-Disposition: form-data; name="we\\"ird"; filename="a.npy"; filename*=UTF-8\'\'%E2%9C%93.npy\r\n\r\nxyz')
    form = parse_multipart(body_of(part), B, LIMITS)
    assert form.files['we"ird'][0].filename == "✓.npy" and form.files['we"ird'][0].data == b"xyz"


def test_repeated_fields_are_kept_for_the_caller_to_refuse():
    form = parse_multipart(body_of(field("layer", b"1"), field("layer", b"2")), B, LIMITS)
    assert form.fields == {"layer": ["1", "2"]}


MALFORMED = {
    "no closing delimiter": (field("layer", b"1"), lambda b: b[: b.rindex(b"--" + B.encode())]),
    "cut inside a part": (field("layer", b"1"), lambda b: b[:20]),
    "no delimiter at all": (field("layer", b"1"), lambda b: b"just some bytes"),
    "no Content-Disposition": (b"Content-Type: text/plain\r\n\r\n1", None),
    "no headers": (b"\r\n1", None),
    "not form-data": (b'Content-Disposition: attachment; name="layer"\r\n\r\n1', None),
    "no name": (b"Content-Disposition: form-data\r\n\r\n1", None),
    "folded header": (b'Content-Disposition: form-data;\r\n name="layer"\r\n\r\n1', None),
    "header without colon": (b'Content-Disposition: form-data; name="layer"\r\nbogus\r\n\r\n1', None),
    "repeated header": (b'Content-Disposition: form-data; name="a"\r\nContent-Disposition: form-data; name="b"\r\n\r\n1', None),
    "garbage parameters": (b'Content-Disposition: form-data; name="a" junk junk\r\n\r\n1', None),
    "no blank line after headers": (b'Content-Disposition: form-data; name="a"', None),
    "field not UTF-8": (field("text", b"\xff\xfe"), None),
    "delimiter line with junk": (field("a", b"1"), lambda b: b.replace(B.encode() + b"\r\n", B.encode() + b"junk\r\n", 1)),
}


@pytest.mark.parametrize("case", MALFORMED, ids=list(MALFORMED))
def test_malformed_bodies_are_400(case):
    part, mangle = MALFORMED[case]
    body = body_of(part)
    if mangle is not None:
        body = mangle(body)
    with pytest.raises(MalformedRequest) as raised:
        parse_multipart(body, B, LIMITS)
    assert raised.value.code == "malformed_multipart"


@pytest.mark.parametrize("boundary", ["", "x" * 201, 'has"quote', "new\nline"])
def test_bad_boundaries_are_400(boundary):
    with pytest.raises(MalformedRequest):
        parse_multipart(b"--x\r\n", boundary, LIMITS)


def test_part_count_and_field_size_limits_are_413():
    limits = Limits(max_form_parts=3, max_form_field_bytes=10)
    parse_multipart(body_of(*(field(f"f{i}", b"1") for i in range(3))), B, limits)
    with pytest.raises(TooLarge):
        parse_multipart(body_of(*(field(f"f{i}", b"1") for i in range(4))), B, limits)
    with pytest.raises(TooLarge):
        parse_multipart(body_of(field("text", b"x" * 11)), B, limits)
    # File parts are bounded by the body limit, not the field limit.
    files = parse_multipart(body_of(b'Content-Disposition: form-data; name="weights"; filename="w"\r\n\r\n' + b"x" * 100), B, limits)
    assert len(files.files["weights"][0].data) == 100
