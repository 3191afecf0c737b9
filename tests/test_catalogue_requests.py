"""Catalogue, part 1: transport, raw tensors, binary uploads, selection and output cases.

Every case goes to a real Gunicorn worker; after each, a valid request must still succeed and
the worker must be the same process (nothing killed it).
"""

from __future__ import annotations

import io
import json
import struct

import numpy as np
import pytest
import requests
import torch
from safetensors.numpy import save as save_numpy

from tests.catalogue import Case, check, dumps
from tests.live import gunicorn_server

pytestmark = pytest.mark.live

BODY_LIMIT = 2 * 1024 * 1024
SERVER_ENV = {
    "ATTNMAP_BUILTIN_MODELS": "none",
    "ATTNMAP_LIMIT_MAX_BODY_BYTES": str(BODY_LIMIT),
    "ATTNMAP_LIMIT_MAX_TENSOR_ELEMENTS": "262144",
}
M = [[0.7, 0.3], [0.4, 0.6]]
STACK = np.full((2, 2, 3, 3), 1 / 3).tolist()


def npy(array: np.ndarray, allow_pickle: bool = False) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=allow_pickle)
    return buffer.getvalue()


def npy_header(header: bytes, data: bytes = b"") -> bytes:
    padded = header + b" " * ((64 - (10 + len(header) + 1) % 64) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(padded)) + padded + data


def safetensors_raw(header: dict, data: bytes) -> bytes:
    encoded = json.dumps(header).encode()
    return struct.pack("<Q", len(encoded)) + encoded + data


def upload(data: bytes, name: str = "weights.bin", **form: str) -> dict:
    return {"files": {"weights": (name, data)}, "form": form or None}


def multipart(boundary: str, parts: list[bytes], closing: bool = True) -> bytes:
    body = b"".join(b"--" + boundary.encode() + b"\r\n" + part + b"\r\n" for part in parts)
    return body + (b"--" + boundary.encode() + b"--\r\n" if closing else b"")


def raw_post(body: bytes, headers: str) -> bytes:
    return f"POST /visualize HTTP/1.1\r\nHost: x\r\n{headers}\r\n".encode() + body


def torch_file() -> bytes:
    buffer = io.BytesIO()
    torch.save({"w": torch.ones(2, 2)}, buffer)
    return buffer.getvalue()


def chunked(total: int) -> bytes:
    chunk = b"[" + b"0," * 32767 + b"0]"
    out = b""
    sent = 0
    while sent < total:
        out += f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
        sent += len(chunk)
    return out + b"0\r\n\r\n"


def exact_body(size: int) -> bytes:
    start = b'{"weights": [[0.5, 0.5], [0.5, 0.5]]'
    return start + b" " * (size - len(start) - 1) + b"}"


J = {"Content-Type": "application/json"}

TRANSPORT = [
    Case("json-as-text-plain", "transport", 415, "unsupported_media_type", data=dumps({"weights": M}),
         headers={"Content-Type": "text/plain"}),
    Case("no-content-type", "transport", 415, "unsupported_media_type", data=dumps({"weights": M})),
    Case("xml", "transport", 415, "unsupported_media_type", data=b"<w/>", headers={"Content-Type": "application/xml"}),
    Case("gzip-encoding", "transport", 415, "unsupported_content_encoding", data=b"\x1f\x8b\x08\x00",
         headers={**J, "Content-Encoding": "gzip"}),
    Case("body-one-byte-over", "transport", 413, "payload_too_large", data=exact_body(BODY_LIMIT + 1), headers=J),
    Case("body-exactly-at-limit", "transport", 200, None, data=exact_body(BODY_LIMIT), headers=J, png=True),
    Case("chunked-over-limit", "transport", 413, None,
         raw=raw_post(chunked(BODY_LIMIT + 70000), "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n")),
    Case("te-and-content-length", "transport", 400, None,
         raw=raw_post(b"5\r\n{}   \r\n0\r\n\r\n", "Content-Type: application/json\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n")),
    Case("request-line-too-long", "transport", 414, None, raw=b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"),
    Case("too-many-headers", "transport", 431, None,
         raw=b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-H%d: 1\r\n" % i for i in range(60)) + b"\r\n"),
    Case("header-too-large", "transport", 431, None, raw=b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n"),
    Case("multipart-too-many-parts", "transport", 413, "payload_too_large", form={f"f{i}": "1" for i in range(100)}),
    Case("multipart-field-too-large", "transport", 413, "payload_too_large", form={"text": "a" * 300_000}),
    Case("multipart-missing-closing-boundary", "transport", 400, "malformed_multipart",
         data=multipart("b0undary", [b'Content-Disposition: form-data; name="layer"\r\n\r\n1'], closing=False),
         headers={"Content-Type": "multipart/form-data; boundary=b0undary"}),
    Case("multipart-without-boundary", "transport", 400, "malformed_multipart", data=b"--x\r\n\r\n",
         headers={"Content-Type": "multipart/form-data"}),
    Case("multipart-part-without-disposition", "transport", 400, "malformed_multipart",
         data=multipart("b0undary", [b"Content-Type: text/plain\r\n\r\n1"]),
         headers={"Content-Type": "multipart/form-data; boundary=b0undary"}),
    Case("multipart-field-not-utf8", "transport", 400, "malformed_multipart",
         data=multipart("b0undary", [b'Content-Disposition: form-data; name="text"\r\n\r\n\xff\xfe']),
         headers={"Content-Type": "multipart/form-data; boundary=b0undary"}),
    Case("multipart-folded-header", "transport", 400, "malformed_multipart",
         data=multipart("b0undary", [b'Content-Disposition: form-data;\r\n name="layer"\r\n\r\n1']),
         headers={"Content-Type": "multipart/form-data; boundary=b0undary"}),
    Case("multipart-no-source", "transport", 422, "missing_source", form={"layer": "0"}),
    Case("multipart-two-images", "transport", 422, "expected_one_file",
         files=[("image", ("a.png", b"x")), ("image", ("b.png", b"y"))]),  # type: ignore[arg-type]
    Case("multipart-unknown-file-part", "transport", 422, "unknown_field", files={"file": ("a.npy", b"x")}),
    Case("multipart-weights-as-text", "transport", 422, "invalid_type", form={"weights": "[[1]]"}),
    Case("multipart-duplicate-field", "transport", 422, "duplicate_field",
         data=multipart("b0undary", [b'Content-Disposition: form-data; name="layer"\r\n\r\n1',
                                     b'Content-Disposition: form-data; name="layer"\r\n\r\n2']),
         headers={"Content-Type": "multipart/form-data; boundary=b0undary"}),
    Case("get-visualize", "transport", 405, "method_not_allowed", method="GET"),
    Case("put-visualize", "transport", 405, "method_not_allowed", method="PUT", json={"weights": M}),
    Case("misspelled-route", "transport", 404, "not_found", path="/visualise", json={"weights": M}),
    Case("invalid-utf8", "transport", 400, "malformed_json", data=b'{"weights": [[1]], "text": "\xff\xfe"}', headers=J),
    Case("duplicate-key", "transport", 400, "duplicate_key", data=b'{"weights": [[1]], "layer": 0, "layer": 0}', headers=J),
    Case("duplicate-key-escaped", "transport", 400, "duplicate_key", data=b'{"weights": [[1]], "layer": 0, "l\\u0061yer": 0}', headers=J),
    Case("deep-nesting", "transport", 400, "nesting_too_deep", data=b"[" * 50000 + b"]" * 50000, headers=J),
    Case("5000-digit-integer", "transport", 400, "malformed_json", data=b'{"weights": [[' + b"7" * 5000 + b"]]}", headers=J),
    Case("empty-body", "transport", 400, "malformed_json", data=b"", headers=J),
    Case("truncated-json", "transport", 400, "malformed_json", data=b'{"weights": [[0.1, 0.2]', headers=J),
    Case("top-level-array", "transport", 422, "invalid_body", data=b"[[0.5]]", headers=J),
    Case("top-level-string", "transport", 422, "invalid_body", data=b'"weights"', headers=J),
]

TENSORS = [
    Case("nan", "tensor", 422, "non_finite_values", data=b'{"weights": [[NaN, 1], [1, 1]]}', headers=J),
    Case("infinity", "tensor", 422, "non_finite_values", data=b'{"weights": [[Infinity, 1], [1, 1]]}', headers=J),
    Case("minus-infinity", "tensor", 422, "non_finite_values", data=b'{"weights": [[-Infinity, 1], [1, 1]]}', headers=J),
    Case("overflow-to-inf", "tensor", 422, "non_finite_values", data=b'{"weights": [[1e400, 1], [1, 1]]}', headers=J),
    Case("400-digit-integer", "tensor", 422, "value_out_of_range", data=b'{"weights": [[1, ' + b"9" * 400 + b"], [1, 1]]}", headers=J),
    Case("beyond-float32", "tensor", 422, "value_out_of_range", json={"weights": [[1e300, 1.0], [1.0, 1.0]]}),
    Case("ragged", "tensor", 422, "ragged_array", json={"weights": [[1, 2], [3]]}),
    Case("ragged-deep", "tensor", 422, "ragged_array", json={"weights": [[[1, 2], [3, 4]], [[1, 2]]]}),
    Case("string-element", "tensor", 422, "invalid_element_type", json={"weights": [[0.1, "a"], [1, 1]]}),
    Case("null-element", "tensor", 422, "invalid_element_type", json={"weights": [[None, 1], [1, 1]]}),
    Case("boolean-element", "tensor", 422, "invalid_element_type", json={"weights": [[True, 1.0], [1.0, 1.0]]}),
    Case("numbers-as-strings", "tensor", 422, "invalid_element_type", json={"weights": [["0.5", "0.5"], ["0.5", "0.5"]]}),
    Case("object-element", "tensor", 422, "invalid_element_type", json={"weights": [[{"a": 1}, 1], [1, 1]]}),
    Case("empty", "tensor", 422, "empty_tensor", json={"weights": []}),
    Case("empty-rows", "tensor", 422, "empty_tensor", json={"weights": [[]]}),
    Case("empty-deep", "tensor", 422, "empty_tensor", json={"weights": [[[]]]}),
    Case("scalar", "tensor", 422, "invalid_type", json={"weights": 0.5}),
    Case("rank-1", "tensor", 422, "invalid_rank", json={"weights": [0.1, 0.2]}),
    Case("rank-5", "tensor", 422, "invalid_rank", json={"weights": [[[[[0.1]]]]]}),
    Case("shape-object", "tensor", 422, "invalid_type", json={"weights": {"shape": [1000000000], "data": [1]}}),
    Case("element-count-over-cap", "tensor", 422, "tensor_too_large", data=b'{"weights": [[' + b"0," * 300000 + b"0]]}", headers=J),
    Case("axis-over-cap", "tensor", 422, "tensor_too_large", json={"weights": [[0.0] * 9000, [0.0] * 9000]}),
    Case("tokens-mismatch", "tensor", 422, "tokens_mismatch", json={"weights": M, "tokens": ["a"]}),
    Case("tokens-not-strings", "tensor", 422, "invalid_type", json={"weights": M, "tokens": [1, 2]}),
    Case("non-square", "tensor", 200, None, json={"weights": [[0.2, 0.3, 0.5]] * 2}, png=True),
    Case("constant", "tensor", 200, None, json={"weights": [[0.25] * 4] * 4}, png=True),
    Case("finite-extremes", "tensor", 200, None, json={"weights": [[-3e38, 3e38], [0.0, 1.0]]}, png=True),
    Case("negative-values", "tensor", 200, None, json={"weights": [[-1.0, 2.0], [0.5, -0.5]]}, png=True),
    Case("subnormals-and-minus-zero", "tensor", 200, None, json={"weights": [[-0.0, 1e-310], [5e-324, 65504.5]]}, png=True),
]

UPLOADS = [
    Case("npy-pickled-objects", "upload", 422, "unsupported_dtype", **upload(npy(np.array([{"a": 1}], dtype=object), True))),
    Case("npy-header-over-10k", "upload", 422, "malformed_file",
         **upload(npy_header(b"{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), 'x': '" + b"a" * 12000 + b"'}"))),
    Case("npy-shape-claim", "upload", 422, "tensor_too_large",
         **upload(npy_header(b"{'descr': '<f4', 'fortran_order': False, 'shape': (100000, 100000), }", b"\0" * 1024))),
    Case("npy-data-short", "upload", 422, "shape_mismatch", **upload(npy(np.ones((4, 4), np.float32))[:-8])),
    Case("npy-data-long", "upload", 422, "shape_mismatch", **upload(npy(np.ones((4, 4), np.float32)) + b"\0" * 16)),
    Case("npy-big-endian", "upload", 200, None, **upload(npy(np.eye(3, dtype=">f4"))), png=True),
    Case("npy-fortran-order", "upload", 200, None, **upload(npy(np.asfortranarray(np.random.default_rng(0).random((3, 4))))), png=True),
    Case("npy-int32", "upload", 422, "unsupported_dtype", **upload(npy(np.ones((3, 3), np.int32)))),
    Case("npy-complex", "upload", 422, "unsupported_dtype", **upload(npy(np.ones((3, 3), np.complex64)))),
    Case("npy-bool", "upload", 422, "unsupported_dtype", **upload(npy(np.ones((3, 3), bool)))),
    Case("npy-rank-1", "upload", 422, "invalid_rank", **upload(npy(np.ones(3, np.float32)))),
    Case("npy-nan", "upload", 422, "non_finite_values", **upload(npy(np.array([[np.nan, 1.0], [1.0, 1.0]])))),
    Case("npy-garbage-header", "upload", 422, "malformed_file", **upload(b"\x93NUMPY\x01\x00\x10\x00{not a dict}    \n")),
    Case("npz-zip", "upload", 415, "unsupported_file_type", **upload(b"PK\x03\x04" + b"\0" * 64, "w.npz")),
    Case("torch-pt", "upload", 415, "unsupported_file_type", **upload(torch_file(), "w.pt")),
    Case("raw-pickle", "upload", 415, "unsupported_file_type", **upload(b"\x80\x04\x95\x05\x00\x00\x00\x00\x00\x00\x00K\x01.", "w.pkl")),
    Case("raw-float32-bytes", "upload", 415, "unsupported_file_type", **upload(np.ones(16, np.float32).tobytes()[1:], "w.bin")),
    Case("empty-file", "upload", 415, "unsupported_file_type", **upload(b"", "w.npy")),
    Case("safetensors-bad-json", "upload", 422, "malformed_file", **upload(struct.pack("<Q", 8) + b"{notjson")),
    Case("safetensors-header-too-long", "upload", 422, "malformed_file", **upload(struct.pack("<Q", 10**9) + b"{}")),
    Case("safetensors-offsets-out-of-range", "upload", 422, "malformed_file",
         **upload(safetensors_raw({"a": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 400]}}, b"\0" * 16))),
    Case("safetensors-offsets-overlap-shape", "upload", 422, "malformed_file",
         **upload(safetensors_raw({"a": {"dtype": "F32", "shape": [4, 4], "data_offsets": [0, 16]}}, b"\0" * 16))),
    Case("safetensors-two-tensors", "upload", 422, "invalid_tensor_count",
         **upload(save_numpy({"a": np.eye(2, dtype=np.float32), "b": np.eye(2, dtype=np.float32)}))),
    Case("safetensors-int-dtype", "upload", 422, "unsupported_dtype", **upload(save_numpy({"a": np.ones((2, 2), np.int64)}))),
    Case("safetensors-shape-claim", "upload", 422, "tensor_too_large",
         **upload(safetensors_raw({"a": {"dtype": "F32", "shape": [100000, 100000], "data_offsets": [0, 16]}}, b"\0" * 16))),
    Case("safetensors-negative-dim", "upload", 422, "malformed_file",
         **upload(safetensors_raw({"a": {"dtype": "F32", "shape": [-2, 2], "data_offsets": [0, 16]}}, b"\0" * 16))),
    Case("safetensors-f16", "upload", 200, None, **upload(save_numpy({"a": np.eye(3, dtype=np.float16)})), png=True),
]

SELECTION = [
    Case("head-minus-one", "selection", 422, "out_of_range", json={"weights": STACK, "head": -1}),
    Case("head-too-large", "selection", 422, "out_of_range", json={"weights": STACK, "head": 2}),
    Case("layer-equals-count", "selection", 422, "out_of_range", json={"weights": STACK, "layer": 2}),
    Case("layer-too-negative", "selection", 422, "out_of_range", json={"weights": STACK, "layer": -3}),
    Case("layer-string", "selection", 422, "invalid_type", json={"weights": STACK, "layer": "1"}),
    Case("layer-float", "selection", 422, "invalid_type", json={"weights": STACK, "layer": 1.7}),
    Case("layer-bool", "selection", 422, "invalid_type", json={"weights": STACK, "layer": True}),
    Case("layer-huge", "selection", 422, None, data=b'{"weights": [[1]], "layer": 1' + b"0" * 30 + b"}", headers=J),
    Case("layer-null-is-default", "selection", 200, None, json={"weights": STACK, "layer": None}, png=True),
    Case("head-unknown-fusion", "selection", 422, "invalid_value", json={"weights": STACK, "head": "avg"}),
    Case("model-path-traversal", "selection", 404, "unknown_model", json={"text": "hi", "model": "../../etc/passwd"}),
    Case("model-absolute-path", "selection", 404, "unknown_model", json={"text": "hi", "model": "/models/x.pt"}),
    Case("model-metadata-url", "selection", 404, "unknown_model", json={"text": "hi", "model": "http://169.254.169.254/latest/meta-data"}),
    Case("model-file-url", "selection", 404, "unknown_model", json={"text": "hi", "model": "file:///etc/passwd"}),
    Case("model-control-characters", "selection", 404, "unknown_model", json={"text": "hi", "model": "a\x00b\r\nX-Injected: 1"}),
    Case("model-10kb-name", "selection", 422, "out_of_range", json={"text": "hi", "model": "m" * 10000}),
    Case("method-unknown", "selection", 422, "invalid_value", json={"weights": STACK, "method": "flow"}),
    Case("gradient-on-raw-weights", "selection", 422, "invalid_value", json={"weights": STACK, "method": "gradient"}),
    Case("rollout-non-square", "selection", 422, "not_square", json={"weights": [[0.2, 0.3, 0.5]] * 2, "method": "rollout"}),
    Case("discard-ratio-one", "selection", 422, "out_of_range", json={"weights": STACK, "method": "rollout", "discard_ratio": 1.0}),
    Case("query-out-of-range", "selection", 422, "out_of_range", json={"weights": STACK, "query": 7}),
    Case("query-unknown-token", "selection", 422, "unknown_token", json={"weights": STACK, "query": "first", "tokens": ["a", "b", "c"]}),
    Case("query-without-labels", "selection", 422, "unknown_token", json={"weights": STACK, "query": "first"}),
    Case("trace-without-key", "selection", 422, "missing_field", json={"weights": STACK, "view": "trace", "query": 0}),
    Case("trace-unknown-token", "selection", 422, "unknown_token",
         json={"weights": STACK, "view": "trace", "query": 0, "key": "zz", "tokens": ["a", "b", "c"]}),
    Case("two-sources", "selection", 422, "conflicting_sources", json={"weights": STACK, "text": "hi"}),
    Case("weights-and-model", "selection", 422, "conflicting_sources", json={"weights": STACK, "model": "minilm"}),
    Case("text-without-model", "selection", 422, "missing_field", json={"text": "hi"}),
    Case("image-not-base64", "selection", 422, "invalid_base64", json={"image": "%%%not base64%%%", "model": "x"}),
    Case("unknown-field", "selection", 422, "unknown_field", json={"weights": STACK, "layers": [0, 1]}),
]

OUTPUT = [
    Case("size-70000", "output", 422, "output_too_large", json={"weights": M, "size": 70000}),
    Case("size-zero", "output", 422, "out_of_range", json={"weights": M, "size": 0}),
    Case("size-string", "output", 422, "invalid_type", json={"weights": M, "size": "512"}),
    Case("colormap-injection", "output", 422, "invalid_colormap", json={"weights": M, "colormap": "viridis; rm -rf"}),
    Case("colormap-wrong-case", "output", 422, "invalid_colormap", json={"weights": M, "colormap": "Viridis"}),
    Case("alpha-two", "output", 422, "out_of_range", json={"weights": M, "alpha": 2}),
    Case("alpha-negative", "output", 422, "out_of_range", json={"weights": M, "alpha": -1}),
    Case("too-many-panels", "output", 422, "too_many_panels", json={"weights": np.full((1, 80, 3, 3), 1 / 3).tolist(), "view": "grid"}),
    Case("vmin-above-vmax", "output", 422, "invalid_value", json={"weights": M, "normalize": "none", "vmin": 1, "vmax": 0}),
    Case("format-svg", "output", 422, "invalid_value", json={"weights": M, "format": "svg"}),
    Case("interpolation-lanczos", "output", 422, "invalid_value", json={"weights": M, "interpolation": "lanczos"}),
    Case("overlay-without-image", "output", 422, "invalid_value", json={"weights": M, "view": "overlay"}),
    Case("annotate-300-labels", "output", 200, None,
         json={"weights": np.full((300, 300), 0.5).tolist(), "annotate": True, "tokens": [f"t{i}" for i in range(300)]}, png=True),
    Case("mathtext-labels", "output", 200, None, json={"weights": M, "annotate": True, "tokens": ["$x^$", "$\\frac{1}$"]}, png=True),
]

CASES = TRANSPORT + TENSORS + UPLOADS + SELECTION + OUTPUT


@pytest.fixture(scope="module")
def server():
    with gunicorn_server(SERVER_ENV, workers=1) as (base, process):
        yield base, process


def worker_pids(process) -> set[int]:
    import psutil

    return {child.pid for child in psutil.Process(process.pid).children()}


def test_catalogue_is_large_and_distinct():
    ids = [case.id for case in CASES]
    assert len(ids) == len(set(ids))
    assert len(ids) >= 100


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_case(server, case):
    base, process = server
    before = worker_pids(process)
    check(base, case)
    assert worker_pids(process) == before, "a worker died or was replaced"


def test_worker_survived_the_whole_catalogue(server):
    base, _ = server
    assert requests.get(base + "/readyz", timeout=5).status_code == 200
