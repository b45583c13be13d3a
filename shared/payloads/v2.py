"""Open Inference Protocol (KServe V2) requests and responses.

Two request shapes are accepted:

- one tensor holding the whole matrix, ``shape [n, num_features]``, any name;
- one tensor per feature, named after the features, ``shape [n]`` or ``[n, 1]``
  (a feature with no tensor is missing, NaN).

``data`` may be flat (row-major) or nested. Unknown ``parameters`` are ignored, as the
protocol lets clients send their own; ``raw_score`` and ``pred_contrib`` are honoured.
"""

from __future__ import annotations

import math
from itertools import chain
from typing import Any, Sequence

import numpy as np
import simdjson

from ..errors import InvalidPayload
from . import simd
from .common import DEFAULT_OPTIONS, ScoringInput, check_count, dumps, parse_options

_NUMERIC = {"FP16": np.float16, "FP32": np.float32, "FP64": np.float64,
            "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64,
            "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64}
_VALUE_TYPES = frozenset((float, int, type(None)))
OUTPUT_NAME = "predict"  # the one output tensor of every model


def parse_v2(doc: dict[str, Any], feature_names: Sequence[str], max_rows: int) -> ScoringInput:
    inputs = doc.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise InvalidPayload("'inputs' must be a non-empty list of tensors", code="invalid_v2_request")
    request_id = doc.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InvalidPayload("'id' must be a string", code="invalid_v2_request")
    params = doc.get("parameters")
    if params is not None and not isinstance(params, dict):
        raise InvalidPayload("'parameters' must be an object", code="invalid_v2_request")
    options = parse_options({k: v for k, v in (params or {}).items()
                             if k in ("raw_score", "pred_contrib")}, where="parameters")
    _check_outputs(doc.get("outputs"))
    tensors = [_tensor(t, i) for i, t in enumerate(inputs)]
    names = set(feature_names)
    if len(tensors) == 1 and tensors[0][0] not in names:
        X = _matrix_tensor(tensors[0], len(feature_names), max_rows)
    else:
        X = _column_tensors(tensors, feature_names, max_rows)
    return ScoringInput(X=X, options=options, format="v2", request_id=request_id)


def _check_outputs(outputs: Any) -> None:
    """Requested ``outputs`` (optional): the protocol returns what was asked for, and every
    model here has one output, ``predict``; asking for another is an error, not ignored."""
    if outputs is None:
        return
    if not isinstance(outputs, list) or not all(
            isinstance(o, dict) and isinstance(o.get("name"), str) for o in outputs):
        raise InvalidPayload("'outputs' must be a list of objects with a 'name'",
                             code="invalid_v2_request")
    unknown = sorted({o["name"] for o in outputs} - {OUTPUT_NAME})
    if unknown:
        raise InvalidPayload(f"unknown output(s) {[n[:64] for n in unknown[:5]]}: the only output "
                             f"is {OUTPUT_NAME!r}", code="invalid_v2_request")


_TENSOR_KEYS = frozenset(("name", "shape", "datatype", "data"))


def read_v2_body(body: bytes, max_rows: int) -> tuple[ScoringInput, str] | None:
    """The common V2 request, ``{"id"?, "inputs": [one FP64 tensor [n, w] with flat
    numbers]}``, read without a Python object per value (as :func:`read_rows_body` reads
    ``rows``): the input and its tensor's name; ``None`` for any other body.

    The caller checks the width against the model, and that the name is not a feature's
    (one tensor named after a feature is a column, see :func:`parse_v2`). Anything else
    (parameters, other datatypes, nested data, nulls, several tensors, bad values) goes to
    :func:`parse_v2`, which names the fault.
    """
    if b'"FP64"' not in body or body.find(b"l") >= 0 or body.startswith(b"\xef\xbb\xbf"):
        # Another datatype; an "l" (in null or false: no key of the shape has one); a BOM
        # (orjson refuses it). Found without parsing a body the full parser must read anyway.
        return None
    if body.count(b"[") != 3:
        return None  # lists other than "inputs", "shape" and "data": nested data, more tensors
    try:
        doc = simd.parse(body)
        if type(doc) is not simdjson.Object or not 1 <= len(doc) <= 2:
            return None
        request_id = doc.get("id") if len(doc) == 2 else None
        inputs = doc["inputs"]
        if (len(doc) == 2 and type(request_id) is not str) or type(inputs) is not simdjson.Array \
                or len(inputs) != 1:
            return None
        tensor = inputs[0]
        if type(tensor) is not simdjson.Object or len(tensor) != 4 or \
                set(tensor.keys()) != _TENSOR_KEYS or tensor["datatype"] != "FP64":
            return None
        name, shape, data = tensor["name"], tensor["shape"], tensor["data"]
        if type(name) is not str or not name or type(shape) is not simdjson.Array or \
                len(shape) != 2 or type(data) is not simdjson.Array:
            return None
        n, width = shape[0], shape[1]
        if type(n) is not int or type(width) is not int or not 0 < n <= max_rows or width <= 0:
            return None
        values = np.frombuffer(data.as_buffer(of_type="d"))  # numbers only, else TypeError
    except (KeyError, ValueError, TypeError, RuntimeError):
        return None
    if len(values) != n * width:
        return None
    return ScoringInput(X=values.reshape(n, width), options=DEFAULT_OPTIONS, format="v2",
                        request_id=request_id,
                        fields={"id": request_id} if request_id is not None else {}), name


def _tensor(raw: Any, i: int) -> tuple[str, list[int], str, np.ndarray]:
    if not isinstance(raw, dict):
        raise InvalidPayload(f"inputs[{i}] must be an object", code="invalid_v2_request")
    name, shape, datatype, data = (raw.get(k) for k in ("name", "shape", "datatype", "data"))
    if not isinstance(name, str) or not name:
        raise InvalidPayload(f"inputs[{i}].name must be a non-empty string", code="invalid_v2_request")
    if (not isinstance(shape, list) or not shape or len(shape) > 2
            or not all(type(d) is int and 0 <= d for d in shape)):
        raise InvalidPayload(f"inputs[{i}].shape must be a list of 1 or 2 non-negative integers",
                             code="invalid_v2_request")
    if not isinstance(datatype, str) or datatype not in _NUMERIC:
        raise InvalidPayload(f"inputs[{i}].datatype {str(datatype)[:16]!r} is not supported; use one "
                             f"of {sorted(_NUMERIC)}", code="unsupported_datatype")
    if not isinstance(data, list):
        raise InvalidPayload(f"inputs[{i}].data must be a list", code="invalid_v2_request")
    if data and type(data[0]) is list:
        if set(map(type, data)) != {list}:  # chaining a number or null would raise TypeError
            raise InvalidPayload(f"inputs[{i}].data must be flat or a list of lists, not a mix",
                                 code="non_numeric_value")
        # Nested data must be the shape's rows: re-flowing ragged rows would score values
        # under the wrong features.
        inner = shape[1] if len(shape) == 2 else 1
        if len(data) != shape[0] or any(len(row) != inner for row in data):
            raise InvalidPayload(f"inputs[{i}].data is nested as {len(data)} rows that do not all "
                                 f"hold {inner} values; shape {shape} needs {shape[0]} rows of "
                                 f"{inner}", code="shape_mismatch")
        flat = list(chain.from_iterable(data))
    else:
        flat = data
    if not set(map(type, flat)) <= _VALUE_TYPES:
        raise InvalidPayload(f"inputs[{i}].data must hold numbers (or null); nesting deeper than the "
                             f"shape or non-numeric values are not accepted", code="non_numeric_value")
    expected = math.prod(shape)
    if len(flat) != expected:
        raise InvalidPayload(f"inputs[{i}] has {len(flat)} values but shape {shape} needs {expected}",
                             code="shape_mismatch")
    values = np.array(flat, dtype=np.float64)
    dtype = _NUMERIC[datatype]
    if dtype is not np.float64:
        if np.issubdtype(dtype, np.integer):
            info = np.iinfo(dtype)
            finite = values[~np.isnan(values)]
            if np.isnan(values).any() or (finite != np.round(finite)).any() \
                    or (finite < info.min).any() or (finite > info.max).any():
                raise InvalidPayload(f"inputs[{i}] has values that are not {datatype}",
                                     code="non_numeric_value")
        else:
            # FP32/FP16 clients mean float32 values: round as the client's tensor would.
            with np.errstate(over="ignore"):
                values = values.astype(dtype).astype(np.float64)
            if np.isinf(values).any():
                raise InvalidPayload(f"inputs[{i}] overflows {datatype}", code="non_numeric_value")
    return name, shape, datatype, values


def _matrix_tensor(tensor: tuple[str, list[int], str, np.ndarray], width: int,
                   max_rows: int) -> np.ndarray:
    name, shape, _, values = tensor
    if len(shape) != 2 or shape[1] != width:
        raise InvalidPayload(f"input {name[:64]!r} has shape {shape}; the model expects [n, {width}] "
                             f"(or one tensor per feature, named after it)", code="shape_mismatch")
    check_count(shape[0], max_rows, "inputs")
    return values.reshape(shape[0], width)


def _column_tensors(tensors: list[tuple[str, list[int], str, np.ndarray]],
                    feature_names: Sequence[str], max_rows: int) -> np.ndarray:
    index = {name: j for j, name in enumerate(feature_names)}
    rows = None
    seen: set[str] = set()
    for name, shape, _, values in tensors:
        if name not in index:
            raise InvalidPayload(f"input {name[:64]!r} is not a feature of the model",
                                 code="unknown_feature")
        if name in seen:
            raise InvalidPayload(f"input {name[:64]!r} is given twice", code="invalid_v2_request")
        seen.add(name)
        if not (len(shape) == 1 or shape[1] == 1):
            raise InvalidPayload(f"input {name[:64]!r} must have shape [n] or [n, 1]",
                                 code="shape_mismatch")
        if rows is None:
            rows = shape[0]
            check_count(rows, max_rows, "inputs")
        elif shape[0] != rows:
            raise InvalidPayload("every feature tensor must have the same number of rows",
                                 code="shape_mismatch")
    X = np.full((rows or 0, len(feature_names)), np.nan)
    for name, _, _, values in tensors:
        X[:, index[name]] = values
    return X


def encode_v2_response(predictions: np.ndarray, *, model_name: str, model_version: str,
                       request_id: str | None, output_name: str = OUTPUT_NAME,
                       parameters: dict[str, Any] | None = None) -> bytes:
    """A V2 inference response with one FP64 output tensor (row-major data)."""
    doc: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if request_id is not None:
        doc["id"] = request_id
    if parameters:
        doc["parameters"] = parameters
    doc["outputs"] = [{"name": output_name, "shape": list(predictions.shape), "datatype": "FP64",
                       "data": predictions.reshape(-1)}]
    return dumps(doc)
