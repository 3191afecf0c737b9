"""Raw attention weights from JSON lists, ``.npy`` or ``.safetensors`` into a float32 array.

Shapes and element counts are checked from the list structure or the file header before any
array is built, so a small body cannot claim a huge tensor. Pickle is never involved: ``.npy``
goes through numpy's header reader with ``allow_pickle=False`` and safetensors through its own
validated header.
"""

from __future__ import annotations

import io
import json
import math
import struct
from collections.abc import Callable
from typing import Any

import numpy as np

from app.core.errors import InvalidInput, UnsupportedFormat
from app.service.config import Limits

FIELD = "weights"
_NPY_MAGIC = b"\x93NUMPY"
_FLOAT_KINDS = {"f"}
_SAFETENSORS_DTYPES = {"F16", "BF16", "F32", "F64"}
_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _check_shape(shape: tuple[int, ...], limits: Limits) -> None:
    """Rank 2-4, no empty axis, each axis and the element count within their caps."""
    if not 2 <= len(shape) <= 4:
        raise InvalidInput(
            f"weights must have rank 2 [Q,K], 3 [H,Q,K] or 4 [L,H,Q,K]; got rank {len(shape)}",
            code="invalid_rank", field=FIELD,
        )
    if any(dim == 0 for dim in shape):
        raise InvalidInput("weights must not be empty", code="empty_tensor", field=FIELD)
    if max(shape) > limits.max_tensor_dim:
        raise InvalidInput(
            f"each weights axis must be at most {limits.max_tensor_dim}; got shape {list(shape)}",
            code="tensor_too_large", field=FIELD,
        )
    elements = math.prod(shape)  # Python int: no overflow for absurd claims
    if elements > limits.max_tensor_elements:
        raise InvalidInput(
            f"weights hold {elements} elements; the limit is {limits.max_tensor_elements}",
            code="tensor_too_large", field=FIELD,
        )


def _finite_float32(array: np.ndarray) -> np.ndarray:
    """Reject NaN/Inf and values float32 cannot hold, then return a C-contiguous float32 copy."""
    # One reduction answers both questions: the largest magnitude is NaN or Inf exactly when some
    # element is (np.max propagates NaN), and it is what float32 must be able to hold.
    peak = float(np.abs(array).max()) if array.size else 0.0
    if not math.isfinite(peak):
        raise InvalidInput("weights contain NaN or Infinity", code="non_finite_values", field=FIELD)
    if array.dtype != np.float32 and peak > _FLOAT32_MAX:
        raise InvalidInput(
            "weights contain values beyond the float32 range", code="value_out_of_range", field=FIELD
        )
    return np.ascontiguousarray(array, dtype=np.float32)


def _list_shape(value: Any, limits: Limits) -> tuple[int, ...]:
    """Shape implied by the first element at each depth (raggedness is caught by numpy later)."""
    shape: list[int] = []
    probe = value
    while isinstance(probe, list):
        shape.append(len(probe))
        if len(shape) > 4:
            raise InvalidInput(
                "weights must have rank 2 [Q,K], 3 [H,Q,K] or 4 [L,H,Q,K]; got rank 5 or more",
                code="invalid_rank", field=FIELD,
            )
        if not probe:
            break
        probe = probe[0]
    return tuple(shape)


def _has_non_number(value: Any) -> bool:
    """Exact walk for booleans and other non-numbers (numpy would coerce True to 1.0)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, bool) or not isinstance(item, int | float):
            return True
    return False


def _may_hold_booleans(array: np.ndarray) -> bool:
    """Whether numpy may have coerced JSON booleans: only exact 0s and 1s can come from them."""
    return bool(np.logical_or(array == 0, array == 1).any())


def weights_from_json(value: Any, limits: Limits, *, may_hold_literals: bool | Callable[[], bool] = True) -> np.ndarray:
    """Validate nested JSON lists and build the weights array.

    ``may_hold_literals`` says whether the raw body may contain ``true``/``false``/``null`` (False
    lets an input that numpy cannot convert skip a per-element Python walk). It may be a callable,
    evaluated only when needed: scanning a large body for the three words costs more than the
    conversion itself.

    The common case (a rectangular list of numbers) costs one ``np.array`` call: booleans are
    the only non-numbers numpy converts silently, and they can only hide among exact 0s and 1s,
    so anything else unusual takes the exact path below, with the same checks in the same order
    (and so the same error codes) as a walk done up front.
    """
    if not isinstance(value, list):
        raise InvalidInput("weights must be a nested list of numbers", code="invalid_type", field=FIELD)
    shape = _list_shape(value, limits)
    if len(shape) < 2 or 0 in shape:
        if 0 in shape:
            raise InvalidInput("weights must not be empty", code="empty_tensor", field=FIELD)
        raise InvalidInput(
            f"weights must have rank 2 [Q,K], 3 [H,Q,K] or 4 [L,H,Q,K]; got rank {len(shape)}",
            code="invalid_rank", field=FIELD,
        )
    _check_shape(shape, limits)
    array: np.ndarray | None
    try:
        array = np.array(value)
    except (ValueError, OverflowError):
        array = None
    if array is not None and array.shape == shape and array.dtype.kind in "fi" and not _may_hold_booleans(array):
        return _finite_float32(array)
    # Exact path: the order of these checks decides which error a doubly-wrong input gets.
    literals = may_hold_literals() if callable(may_hold_literals) else may_hold_literals
    if literals and _has_non_number(value):
        raise InvalidInput("weights must contain only numbers", code="invalid_element_type", field=FIELD)
    if array is None or array.shape != shape:
        raise InvalidInput("weights rows have different lengths (ragged)", code="ragged_array", field=FIELD)
    if array.dtype.kind not in "fi":
        if array.dtype.kind == "O" and not _has_non_number(value):
            # Only Python ints beyond int64 make numpy fall back to objects here.
            raise InvalidInput("weights hold a number out of range", code="value_out_of_range", field=FIELD)
        raise InvalidInput("weights must contain only numbers", code="invalid_element_type", field=FIELD)
    return _finite_float32(array)


def weights_from_npy(data: bytes, limits: Limits) -> np.ndarray:
    """Read a ``.npy`` upload: header first (shape, dtype), data only if both are acceptable."""
    stream = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(stream, max_header_size=10_000)
        elif version in {(2, 0), (3, 0)}:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(stream, max_header_size=10_000)
        else:
            raise ValueError("unknown npy version")
    except (ValueError, OSError, SyntaxError, struct.error):
        raise InvalidInput("the .npy header is malformed", code="malformed_file", field=FIELD) from None
    if dtype.hasobject or dtype.kind not in _FLOAT_KINDS or dtype.itemsize not in (2, 4, 8):
        raise InvalidInput(
            f"weights dtype {dtype.str!r} is not accepted; use float16, float32 or float64",
            code="unsupported_dtype", field=FIELD,
        )
    _check_shape(tuple(shape), limits)
    expected = math.prod(shape) * dtype.itemsize
    payload = data[stream.tell():]
    if len(payload) != expected:
        raise InvalidInput(
            f"the .npy data holds {len(payload)} bytes but its header implies {expected}",
            code="shape_mismatch", field=FIELD,
        )
    array = np.frombuffer(payload, dtype=dtype).reshape(shape, order="F" if fortran else "C")
    # Big-endian input is converted to native order with its values intact.
    return _finite_float32(array.astype(dtype.newbyteorder("="), copy=False))


def weights_from_safetensors(data: bytes, limits: Limits) -> np.ndarray:
    """Read a one-tensor ``.safetensors`` upload after checking its header ourselves."""
    if len(data) < 8:
        raise InvalidInput("the .safetensors file is truncated", code="malformed_file", field=FIELD)
    (header_len,) = struct.unpack("<Q", data[:8])
    if header_len > min(len(data) - 8, 1_000_000):
        raise InvalidInput("the .safetensors header is malformed", code="malformed_file", field=FIELD)
    try:
        header = json.loads(data[8:8 + header_len])
    except (ValueError, UnicodeDecodeError):
        raise InvalidInput("the .safetensors header is malformed", code="malformed_file", field=FIELD) from None
    if not isinstance(header, dict):
        raise InvalidInput("the .safetensors header is malformed", code="malformed_file", field=FIELD)
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    if len(tensors) != 1:
        raise InvalidInput(
            f"the .safetensors file must hold exactly one tensor; it holds {len(tensors)}",
            code="invalid_tensor_count", field=FIELD,
        )
    (name, info), = tensors.items()
    if not isinstance(info, dict) or info.get("dtype") not in _SAFETENSORS_DTYPES:
        dtype = info.get("dtype") if isinstance(info, dict) else None
        raise InvalidInput(
            f"weights dtype {dtype!r} is not accepted; use F16, BF16, F32 or F64",
            code="unsupported_dtype", field=FIELD,
        )
    shape = info.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise InvalidInput("the .safetensors header is malformed", code="malformed_file", field=FIELD)
    _check_shape(tuple(shape), limits)
    # The safetensors library validates offsets against the buffer; torch handles bf16.
    from safetensors import SafetensorError
    from safetensors.torch import load as load_safetensors

    try:
        tensor = load_safetensors(data)[name]
    except (SafetensorError, ValueError, RuntimeError):
        raise InvalidInput("the .safetensors data is malformed", code="malformed_file", field=FIELD) from None
    return _finite_float32(tensor.float().numpy())


def weights_from_upload(filename: str, data: bytes, limits: Limits) -> np.ndarray:
    """Dispatch an uploaded weights file on its content (magic bytes), never on a path."""
    if data.startswith(_NPY_MAGIC):
        return weights_from_npy(data, limits)
    if data[:2] == b"PK" or data[:2] == b"\x80\x02" or data[:1] == b"\x80":
        raise UnsupportedFormat(
            "zip, .npz, .pt/.pth and pickle files are not accepted; upload .npy or .safetensors",
            code="unsupported_file_type", field=FIELD,
        )
    if len(data) >= 9 and data[8:9] == b"{":
        return weights_from_safetensors(data, limits)
    raise UnsupportedFormat(
        "weights file must be .npy or .safetensors", code="unsupported_file_type", field=FIELD
    )
