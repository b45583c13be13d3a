"""The Open Inference Protocol's binary tensor data extension (Triton's ``binary_tensor_data``,
what tritonclient sends by default: ``InferInput.set_data_from_numpy(..., binary_data=True)``).

A request body is a JSON inference request of ``Inference-Header-Content-Length`` bytes,
followed by the raw data of every input whose ``parameters.binary_data_size`` says how many
bytes it takes, in the order of ``inputs``: little-endian, row-major, no padding; a ``BYTES``
element is a 4-byte little-endian unsigned length followed by that many bytes. An output is
returned the same way when the request asks for it: ``binary_data`` on the requested output,
else ``parameters.binary_data_output``; the response then carries the JSON part's length in
``Inference-Header-Content-Length`` and is ``application/octet-stream``.

Pure functions: :func:`decode_binary_request` gives the JSON document with each binary
input's ``data`` filled in (what :func:`shared.payloads.v2.parse_v2` reads), and every fault
of the framing is a typed 4xx error, never a 500.
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np

from shared.errors import InvalidJson, InvalidPayload
from shared.payloads.common import decode_json, dumps

HEADER = "Inference-Header-Content-Length"
OUTPUT_NAME = "predict"  # the one output tensor of every model
# Little-endian, as the extension lays tensors out; decoded into the machine's own order.
_NUMERIC = {"FP16": "<f2", "FP32": "<f4", "FP64": "<f8",
            "INT8": "<i1", "INT16": "<i2", "INT32": "<i4", "INT64": "<i8",
            "UINT8": "<u1", "UINT16": "<u2", "UINT32": "<u4", "UINT64": "<u8"}
BYTES = "BYTES"
_SUPPORTED = sorted([*_NUMERIC, BYTES])
_LENGTH = re.compile(r"[0-9]{1,18}")


def header_length_of(value: str) -> int:
    """The value of the ``Inference-Header-Content-Length`` request header as a byte count;
    anything but a plain non-negative decimal integer is a 400 ``invalid_binary_header``."""
    text = value.strip()
    if _LENGTH.fullmatch(text) is None:
        raise InvalidPayload(f"the {HEADER} header must be the JSON header's length in bytes, "
                             f"a non-negative integer; got {text[:32]!r}",
                             code="invalid_binary_header")
    return int(text)


def decode_binary_request(body: bytes, header_length: int) -> dict[str, Any]:
    """The inference request in ``body``: its first ``header_length`` bytes decoded as JSON
    (strictly, as :func:`~shared.payloads.common.decode_json` does), then each input with
    ``parameters.binary_data_size`` given its ``data`` from the bytes after it, in order:
    a flat numpy array of the input's datatype (native byte order) for a numeric tensor, a
    list of ``str`` for ``BYTES``; ``binary_data_size`` is removed from its parameters.

    Raises :class:`~shared.errors.InvalidPayload`: ``invalid_binary_header`` for a header
    length outside 1..len(body); ``invalid_json`` / ``invalid_payload`` for a header that is
    not a JSON object; ``invalid_binary_data`` when the sizes do not add up (a size that is
    not a non-negative integer, more bytes asked for than the body holds, bytes left over,
    a numeric size that is not whole elements, a ``BYTES`` element cut short or not UTF-8,
    an input with both ``data`` and binary data); ``unsupported_datatype`` for a datatype
    that cannot come as binary here; ``shape_mismatch`` when the elements are not the
    shape's count.
    """
    if type(header_length) is not int or not 0 < header_length <= len(body):
        raise InvalidPayload(f"{HEADER} is {header_length!r}: it must be the length of the JSON "
                             f"header, between 1 and the body's {len(body)} bytes",
                             code="invalid_binary_header")
    try:
        doc = decode_json(body[:header_length])
    except InvalidJson as exc:
        detail = exc.message.removeprefix("body is not valid JSON: ")
        raise InvalidJson(f"the JSON header (the body's first {header_length} bytes, as {HEADER} "
                          f"says) is not valid JSON: {detail}") from None
    view = memoryview(body)
    offset = header_length
    inputs = doc.get("inputs")
    for i, tensor in enumerate(inputs if isinstance(inputs, list) else ()):
        params = tensor.get("parameters") if isinstance(tensor, dict) else None
        if not isinstance(params, dict) or "binary_data_size" not in params:
            continue  # JSON data (or a malformed tensor, which parse_v2 names)
        size = params.pop("binary_data_size")
        if type(size) is not int or size < 0:
            raise InvalidPayload(f"inputs[{i}].parameters.binary_data_size must be a byte count "
                                 f"(a non-negative integer); got {str(size)[:32]}",
                                 code="invalid_binary_data")
        if "data" in tensor:
            raise InvalidPayload(f"inputs[{i}] has both 'data' and binary data "
                                 f"(parameters.binary_data_size): send one of them",
                                 code="invalid_binary_data")
        left = len(body) - offset
        if size > left:
            raise InvalidPayload(f"inputs[{i}] has {size} bytes of binary data but only {left} "
                                 f"are left in the body after the JSON header and the inputs "
                                 f"before it", code="invalid_binary_data")
        tensor["data"] = _tensor_data(tensor, i, view[offset:offset + size])
        offset += size
    if offset != len(body):
        raise InvalidPayload(f"{len(body) - offset} bytes follow the binary data of the inputs: "
                             f"the body must be the JSON header ({header_length} bytes) and the "
                             f"inputs' binary_data_size bytes ({offset - header_length}), nothing "
                             f"more", code="invalid_binary_data")
    return doc


def _tensor_data(tensor: dict[str, Any], i: int, chunk: memoryview) -> Any:
    datatype = tensor.get("datatype")
    if not isinstance(datatype, str) or datatype not in _NUMERIC and datatype != BYTES:
        raise InvalidPayload(f"inputs[{i}].datatype {str(datatype)[:16]!r} cannot be sent as "
                             f"binary data here; use one of {_SUPPORTED}",
                             code="unsupported_datatype")
    shape = tensor.get("shape")
    expected = math.prod(shape) if isinstance(shape, list) and all(
        type(d) is int and d >= 0 for d in shape) else None  # else parse_v2 names the fault
    if datatype == BYTES:
        values: Any = _strings(chunk, i)
        count, what = len(values), f"{len(chunk)} bytes hold {len(values)} BYTES elements"
    else:
        dtype = np.dtype(_NUMERIC[datatype])
        if len(chunk) % dtype.itemsize:
            raise InvalidPayload(f"inputs[{i}] has {len(chunk)} bytes of binary data: not a whole "
                                 f"number of {datatype} values ({dtype.itemsize} bytes each)",
                                 code="invalid_binary_data")
        values = np.frombuffer(chunk, dtype=dtype).astype(dtype.newbyteorder("="))
        count, what = values.size, f"{len(chunk)} bytes hold {values.size} {datatype} values"
    if expected is not None and count != expected:
        raise InvalidPayload(f"inputs[{i}]: {what} but shape {shape} needs {expected}",
                             code="shape_mismatch")
    return values


def _strings(chunk: memoryview, i: int) -> list[str]:
    """A ``BYTES`` tensor's elements: each a 4-byte little-endian length, then its bytes."""
    values: list[str] = []
    pos, end = 0, len(chunk)
    while pos < end:
        if end - pos < 4:
            raise InvalidPayload(f"inputs[{i}] BYTES element {len(values)}: {end - pos} bytes left "
                                 f"where a 4-byte length is due", code="invalid_binary_data")
        length = int.from_bytes(chunk[pos:pos + 4], "little")
        pos += 4
        if length > end - pos:
            raise InvalidPayload(f"inputs[{i}] BYTES element {len(values)} says {length} bytes but "
                                 f"only {end - pos} are left in its binary data",
                                 code="invalid_binary_data")
        try:
            values.append(str(chunk[pos:pos + length], "utf-8"))
        except UnicodeDecodeError:
            raise InvalidPayload(f"inputs[{i}] BYTES element {len(values)} is not UTF-8 text",
                                 code="invalid_binary_data") from None
        pos += length
    return values


def wants_binary_output(doc: dict[str, Any]) -> bool:
    """Whether the response should carry the output ``predict`` as binary data: ``binary_data``
    on the requested output ``predict`` when given, else ``parameters.binary_data_output``
    (the extension: an output's own setting overrides the request's), else no.

    A flag that is not a boolean is a 400 ``invalid_v2_request``; other malformed parts
    (``outputs`` not a list, ...) are left to :func:`~shared.payloads.v2.parse_v2`.
    """
    outputs = doc.get("outputs")
    for k, output in enumerate(outputs if isinstance(outputs, list) else ()):
        if not isinstance(output, dict) or output.get("name") != OUTPUT_NAME:
            continue
        params = output.get("parameters")
        if isinstance(params, dict) and "binary_data" in params:
            return _flag(params["binary_data"], f"outputs[{k}].parameters.binary_data")
    params = doc.get("parameters")
    if isinstance(params, dict) and "binary_data_output" in params:
        return _flag(params["binary_data_output"], "parameters.binary_data_output")
    return False


def _flag(value: Any, where: str) -> bool:
    if type(value) is not bool:
        raise InvalidPayload(f"{where} must be true or false", code="invalid_v2_request")
    return value


def encode_binary_response(predictions: np.ndarray, *, model_name: str, model_version: str,
                           request_id: str | None, output_name: str = OUTPUT_NAME,
                           parameters: dict[str, Any] | None = None) -> tuple[bytes, int]:
    """A V2 inference response with one FP64 output tensor as binary data (row-major,
    little-endian), as :func:`shared.payloads.v2.encode_v2_response` writes it as JSON:
    the body and the length of its JSON header (the ``Inference-Header-Content-Length``)."""
    data = np.ascontiguousarray(predictions, dtype="<f8").tobytes()
    doc: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if request_id is not None:
        doc["id"] = request_id
    if parameters:
        doc["parameters"] = parameters
    doc["outputs"] = [{"name": output_name, "shape": list(predictions.shape), "datatype": "FP64",
                       "parameters": {"binary_data_size": len(data)}}]
    header = dumps(doc)
    return header + data, len(header)
