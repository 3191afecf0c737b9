"""The client's pure parts: image sizes from headers, audit inputs, statistics and the report's escaping."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from attnmap_client.audit.inputs import InputError, box_for, load_boxes, load_text_lines, parse_fraction_region, scale_region
from attnmap_client.audit.report import histogram_svg, image_report
from attnmap_client.audit.stats import describe, gate, histogram, quantile
from attnmap_client.errors import (
    ApiError,
    BadRequestError,
    ServerError,
    ServiceUnavailableError,
    UnprocessableError,
    error_from_response,
)
from attnmap_client.imagesize import ImageSizeError, image_size
from PIL import Image


def _encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


@pytest.mark.parametrize(("fmt", "options"), [
    ("PNG", {}), ("JPEG", {}), ("JPEG", {"progressive": True}), ("WEBP", {"lossless": True}), ("WEBP", {"quality": 80}),
])
def test_image_size_matches_pillow(fmt, options):
    image = Image.new("RGB", (123, 45), (200, 10, 10))
    assert image_size(_encode(image, fmt, **options)) == (123, 45)


@pytest.mark.parametrize(("orientation", "expected"), [(1, (80, 30)), (3, (80, 30)), (6, (30, 80)), (8, (30, 80))])
@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_image_size_applies_the_exif_orientation_like_the_server(fmt, orientation, expected):
    image = Image.new("RGB", (80, 30), (0, 90, 200))
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = _encode(image, fmt, exif=exif.tobytes())
    assert image_size(data) == expected
    from PIL import ImageOps
    assert ImageOps.exif_transpose(Image.open(io.BytesIO(data))).size == expected


@pytest.mark.parametrize("data", [b"", b"GIF89a....", b"\x89PNG\r\n\x1a\n" + b"\x00" * 8, b"\xff\xd8\xff\xe0\x00"])
def test_unreadable_headers_raise(data):
    with pytest.raises(ImageSizeError):
        image_size(data)


def test_fraction_region_parsing_and_scaling():
    assert parse_fraction_region("0.875,0,1,0.125") == (0.875, 0.0, 1.0, 0.125)
    assert scale_region((0.875, 0.0, 1.0, 0.125), 64, 32) == (56.0, 0.0, 64.0, 4.0)
    for bad in ("1,2,3", "a,b,c,d", "0,0,1.5,1", "0.5,0,0.5,1"):
        with pytest.raises(InputError):
            parse_fraction_region(bad)


def test_boxes_from_csv_and_both_json_shapes(tmp_path):
    (tmp_path / "b.csv").write_text("path,x0,y0,x1,y1,label\na/1.png,0,0,8,8,x\n2.png,1,2,3,4,y\n")
    boxes = load_boxes(tmp_path / "b.csv")
    assert boxes == {"a/1.png": (0, 0, 8, 8), "2.png": (1, 2, 3, 4)}
    assert box_for(boxes, "deep/dir/2.png") == (1, 2, 3, 4)  # by file name when the path is not listed
    (tmp_path / "m.json").write_text(json.dumps({"a.png": [0, 0, 4, 4], "b.png": {"region": [1, 1, 2, 2]},
                                                 "c.png": {"box": [0, 0, 1, 1], "label": "q"}}))
    assert load_boxes(tmp_path / "m.json")["b.png"] == (1, 1, 2, 2)
    (tmp_path / "l.json").write_text(json.dumps([{"path": "x.png", "box": [0, 0, 2, 2]}]))
    assert load_boxes(tmp_path / "l.json") == {"x.png": (0, 0, 2, 2)}
    for text, suffix in (("path,x0\nq,1\n", "csv"), ('{"a": [1, 2]}', "json"), ('{"a": [3, 0, 1, 1]}', "json"), ("{", "json")):
        (tmp_path / f"bad.{suffix}").write_text(text)
        with pytest.raises(InputError):
            load_boxes(tmp_path / f"bad.{suffix}")


def test_text_lines(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text('{"text": "a b", "query": "a", "key": 1, "id": 7}\n\n{"text": "c", "query": 0, "key": 0}\n')
    lines = load_text_lines(path)
    assert [(line.number, line.query, line.key, line.id) for line in lines] == [(1, "a", 1, "7"), (3, 0, 0, None)]
    path.write_text('{"text": "a", "query": true, "key": 0}\n')
    with pytest.raises(InputError, match="query"):
        load_text_lines(path)


def test_statistics_agree_with_numpy():
    rng = np.random.default_rng(0)
    values = list(rng.random(101))
    for q in (0.0, 0.1, 0.5, 0.9, 1.0):
        assert quantile(values, q) == pytest.approx(float(np.quantile(values, q)))
    stats = describe(values)
    assert stats["mean"] == pytest.approx(np.mean(values)) and stats["std"] == pytest.approx(np.std(values))
    assert describe([])["mean"] is None
    assert histogram([0.0, 0.05, 0.5, 1.0], bins=10) == [2, 0, 0, 0, 0, 1, 0, 0, 0, 1]


def test_gate_counts_strictly_and_never_passes_on_nothing():
    assert gate([0.1, 0.3, 0.5, 0.9], 0.3, 0.25)["failed"] is True     # 2 of 4 above 0.3
    assert gate([0.1, 0.3, 0.5, 0.9], 0.3, 0.5)["failed"] is False     # a share of 0.5 is allowed
    assert gate([0.1, 0.2], 0.15, 0.0, below=True)["count"] == 1
    assert gate([], 0.5, 1.0)["failed"] is True


def test_error_documents_map_to_classes():
    body = json.dumps({"error": {"code": "out_of_range", "message": "m", "field": "layer"}, "request_id": "r1"}).encode()
    error = error_from_response(422, body, {"X-Request-ID": "r1"})
    assert isinstance(error, UnprocessableError) and (error.code, error.field, error.request_id) == ("out_of_range", "layer", "r1")
    proxy = error_from_response(502, b"<html>bad gateway</html>", {})
    assert isinstance(proxy, ServiceUnavailableError) and proxy.code == "http_502" and proxy.retry_after is None
    assert isinstance(error_from_response(400, b"{}", {}), BadRequestError)
    assert type(error_from_response(418, b"", {})) is ApiError
    assert isinstance(error_from_response(507, b"", {}), ServerError)
    assert error_from_response(503, b"", {"Retry-After": "3"}).retry_after == 3.0


def test_the_report_escapes_what_it_shows():
    hostile = '<script>alert(1)</script>"'
    summary = {"kind": "images", "complete": True, "gate": None,
               "run": {"models": [hostile], "servers": ["http://x"], "method": None, "region": [0, 0, 1, 1],
                       "started": "t", "duration_s": 1.0},
               "images": [{"path": hostile + ".png", "group": hostile, "model": hostile, "region_mass": 0.5,
                           "area_share": 0.1, "prediction": hostile, "error": None}],
               "aggregate": {hostile: {"count": 1, "errors": 0, "mean": 0.5}}}
    page = image_report(summary, {}, {hostile: summary["images"]})
    assert "<script>alert" not in page and "&lt;script&gt;" in page
    assert page.count("<script>") == 1  # the sorting script only
    assert "<title>" in histogram_svg([0.2], hostile, "#000") and "<script>" not in histogram_svg([0.2], hostile, "#000")
