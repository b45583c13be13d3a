"""Open Inference Protocol (KServe V2) requests and responses.

Two request shapes are accepted:

- one tensor holding the whole matrix, ``shape [n, num_features]``, any name;
- one tensor per feature, named after the features (or the names they were trained
  with), ``shape [n]`` or ``[n, 1]`` (a feature with no tensor is missing, NaN).

In the matrix a categorical feature holds codes, as ``Booster.predict`` reads a matrix; a
feature's own tensor holds category values: a ``BYTES`` tensor of strings, or a numeric
tensor where the training categories were numbers.

``data`` may be flat (row-major) or nested. Unknown ``parameters`` are ignored, as the
protocol lets clients send their own; ``raw_score`` and ``pred_contrib`` are honoured.
"""

from __future__ import annotations

import math
from itertools import chain
from typing import Any

import numpy as np
import simdjson

from shared.errors import InvalidPayload
from shared.models.schema import FeatureSchema
from shared.payloads import simd
from shared.payloads.common import (
    DEFAULT_OPTIONS,
    ScoringInput,
    check_count,
    dumps,
    json_numbers,
    parse_options,
)
from shared.payloads.v2_binary import OUTPUT_NAME, wants_binary_output

_NUMERIC = {"FP16": np.float16, "FP32": np.float32, "FP64": np.float64,
            "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64,
            "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64}
_VALUE_TYPES = frozenset((float, int, type(None)))
BYTES = "BYTES"
_EXACT = 2.0 ** 53  # floats below this are exact integers
_DATATYPES = sorted([*_NUMERIC, BYTES])


def parse_v2(doc: dict[str, Any], schema: FeatureSchema, max_rows: int) -> ScoringInput:
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
    if len(tensors) == 1 and schema.resolve(tensors[0][0]) is None:
        X = _matrix_tensor(tensors[0], len(schema.names), max_rows)
    else:
        X = _column_tensors(tensors, schema, max_rows)
    return ScoringInput(X=X, options=options, format="v2", request_id=request_id,
                        binary_output=wants_binary_output(doc))


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
        request_id: str | None = None
        if len(doc) == 2:
            given = doc.get("id")
            if type(given) is not str:
                return None
            request_id = given
        inputs = doc["inputs"]
        if type(inputs) is not simdjson.Array or len(inputs) != 1:
            return None
        # pysimdjson's stubs type an Array's item as an Array; it is any JSON value.
        tensor: simdjson.SimValue = inputs[0]
        if type(tensor) is not simdjson.Object or len(tensor) != 4 or \
                set(tensor.keys()) != _TENSOR_KEYS or tensor["datatype"] != "FP64":
            return None
        name, shape, data = tensor["name"], tensor["shape"], tensor["data"]
        if type(name) is not str or not name or type(shape) is not simdjson.Array or \
                len(shape) != 2 or type(data) is not simdjson.Array:
            return None
        n: simdjson.SimValue = shape[0]
        width: simdjson.SimValue = shape[1]
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


def _tensor(raw: Any, i: int) -> tuple[str, list[int], str, Any]:
    """An input tensor's name, shape, datatype and values: float64 for a numeric tensor, a
    list of strings for ``BYTES``."""
    if not isinstance(raw, dict):
        raise InvalidPayload(f"inputs[{i}] must be an object", code="invalid_v2_request")
    name, shape, datatype, data = (raw.get(k) for k in ("name", "shape", "datatype", "data"))
    if not isinstance(name, str) or not name:
        raise InvalidPayload(f"inputs[{i}].name must be a non-empty string", code="invalid_v2_request")
    if (not isinstance(shape, list) or not shape or len(shape) > 2
            or not all(type(d) is int and 0 <= d for d in shape)):
        raise InvalidPayload(f"inputs[{i}].shape must be a list of 1 or 2 non-negative integers",
                             code="invalid_v2_request")
    if not isinstance(datatype, str) or datatype not in _NUMERIC and datatype != BYTES:
        raise InvalidPayload(f"inputs[{i}].datatype {str(datatype)[:16]!r} is not supported; use one "
                             f"of {_DATATYPES}", code="unsupported_datatype")
    expected = math.prod(shape)
    if isinstance(data, np.ndarray):  # binary tensor data, already of its datatype
        if data.size != expected:
            raise InvalidPayload(f"inputs[{i}] has {data.size} values but shape {shape} needs "
                                 f"{expected}", code="shape_mismatch")
        return name, shape, datatype, data.astype(np.float64)
    if not isinstance(data, list):
        raise InvalidPayload(f"inputs[{i}].data must be a list", code="invalid_v2_request")
    flat = _flatten(data, shape, i)
    if len(flat) != expected:
        raise InvalidPayload(f"inputs[{i}] has {len(flat)} values but shape {shape} needs {expected}",
                             code="shape_mismatch")
    if datatype == BYTES:
        if not set(map(type, flat)) <= {str, type(None)}:
            raise InvalidPayload(f"inputs[{i}] is BYTES: its data must be strings (or null)",
                                 code="non_numeric_value")
        return name, shape, datatype, flat
    if not set(map(type, flat)) <= _VALUE_TYPES:
        raise InvalidPayload(f"inputs[{i}].data must hold numbers (or null); nesting deeper than the "
                             f"shape or non-numeric values are not accepted", code="non_numeric_value")
    dtype = _NUMERIC[datatype]
    if np.issubdtype(dtype, np.integer):
        _check_integers(flat, dtype, datatype, i)
    values = np.array(flat, dtype=np.float64)
    if dtype is not np.float64 and not np.issubdtype(dtype, np.integer):
        # FP32/FP16 clients mean float32 values: round as the client's tensor would.
        with np.errstate(over="ignore"):
            values = values.astype(dtype).astype(np.float64)
        if np.isinf(values).any():
            raise InvalidPayload(f"inputs[{i}] overflows {datatype}", code="non_numeric_value")
    return name, shape, datatype, values


def _flatten(data: list[Any], shape: list[int], i: int) -> list[Any]:
    if not data or type(data[0]) is not list:
        return data
    if set(map(type, data)) != {list}:  # chaining a number or null would raise TypeError
        raise InvalidPayload(f"inputs[{i}].data must be flat or a list of lists, not a mix",
                             code="non_numeric_value")
    # Nested data must be the shape's rows: re-flowing ragged rows would score values under
    # the wrong features.
    inner = shape[1] if len(shape) == 2 else 1
    if len(data) != shape[0] or any(len(row) != inner for row in data):
        raise InvalidPayload(f"inputs[{i}].data is nested as {len(data)} rows that do not all "
                             f"hold {inner} values; shape {shape} needs {shape[0]} rows of "
                             f"{inner}", code="shape_mismatch")
    return list(chain.from_iterable(data))


def _check_integers(flat: list[Any], dtype: Any, datatype: str, i: int) -> None:
    """Integer tensors hold integers within their type, checked exactly (as Python ints: in
    float64, 2**63 would pass as INT64)."""
    info = np.iinfo(dtype)
    if set(map(type, flat)) <= {int}:
        ok = not flat or (info.min <= min(flat) and max(flat) <= info.max)
    else:
        # A float is taken only where it is exactly an integer: past 2**53 it may be a literal
        # JSON parsing rounded (-2**63 - 1 reads as the float -2**63).
        ok = all(type(v) is int or (type(v) is float and v.is_integer() and abs(v) < _EXACT)
                 for v in flat) and all(info.min <= int(v) <= info.max for v in flat)
    if not ok:
        raise InvalidPayload(f"inputs[{i}] has values that are not {datatype}",
                             code="non_numeric_value")


def _matrix_tensor(tensor: tuple[str, list[int], str, np.ndarray], width: int,
                   max_rows: int) -> np.ndarray:
    name, shape, datatype, values = tensor
    if datatype == BYTES:
        raise InvalidPayload(f"input {name[:64]!r} is a BYTES matrix: send the matrix as numbers "
                             f"(category codes), or each categorical feature as a BYTES tensor "
                             f"named after it", code="unsupported_datatype")
    if len(shape) != 2 or shape[1] != width:
        raise InvalidPayload(f"input {name[:64]!r} has shape {shape}; the model expects [n, {width}] "
                             f"(or one tensor per feature, named after it)", code="shape_mismatch")
    check_count(shape[0], max_rows, "inputs")
    return values.reshape(shape[0], width)


def _column_tensors(tensors: list[tuple[str, list[int], str, Any]], schema: FeatureSchema,
                    max_rows: int) -> np.ndarray:
    names = [t[0] for t in tensors]
    if len(set(names)) != len(names):
        twice = next(n for n in names if names.count(n) > 1)
        raise InvalidPayload(f"input {twice[:64]!r} is given twice", code="invalid_v2_request")
    index = schema.resolve_all(names, "the request")
    rows = None
    for name, shape, _, _ in tensors:
        if not (len(shape) == 1 or shape[1] == 1):
            raise InvalidPayload(f"input {name[:64]!r} must have shape [n] or [n, 1]",
                                 code="shape_mismatch")
        if rows is None:
            rows = shape[0]
            check_count(rows, max_rows, "inputs")
        elif shape[0] != rows:
            raise InvalidPayload("every feature tensor must have the same number of rows",
                                 code="shape_mismatch")
    X = np.full((rows or 0, len(schema.names)), np.nan)
    for name, _, datatype, values in tensors:
        j = index[name]
        X[:, j] = _feature_values(schema, j, name, datatype, values)
    return X


def _feature_values(schema: FeatureSchema, j: int, name: str, datatype: str,
                    values: Any) -> Any:
    """One feature's tensor as the matrix column: category values become codes."""
    cats = schema.by_index.get(j)
    if cats is None:
        if datatype == BYTES:
            if schema.mapping == "unknown":
                schema.needs_values()
            raise InvalidPayload(f"input {name[:64]!r} is BYTES but feature {schema.names[j]!r} "
                                 f"is numeric: send a numeric tensor", code="unsupported_datatype")
        return values
    if datatype == BYTES:
        return cats.codes_of(values)
    if cats.kind == "str":
        raise InvalidPayload(f"feature {cats.name!r} takes category values (strings, one of "
                             f"{list(cats.values)[:8]}): send a BYTES tensor, or its codes in "
                             f"the matrix tensor", code="invalid_category_value")
    # Numeric categories: the tensor's numbers are category values.
    return cats.codes_of(None if v != v else v for v in values.tolist())


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
                       "data": json_numbers(predictions.reshape(-1))}]
    return dumps(doc)
