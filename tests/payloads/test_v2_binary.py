"""The binary tensor data extension (shared/payloads/v2_binary.py) against tritonclient's own
encoder (InferenceServerClient.generate_request_body) and decoder (InferResult): no network."""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import serialize_byte_tensor

from shared.errors import BadRequest, InvalidPayload
from shared.models.schema import FeatureSchema
from shared.payloads import parse_v2
from shared.payloads.v2_binary import (
    HEADER,
    decode_binary_request,
    encode_binary_response,
    header_length_of,
    wants_binary_output,
)

NUMERIC = {"FP16": np.float16, "FP32": np.float32, "FP64": np.float64, "INT8": np.int8,
           "INT16": np.int16, "INT32": np.int32, "INT64": np.int64, "UINT8": np.uint8,
           "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64}


def tensor(name: str, array: np.ndarray, datatype: str, binary: bool = True) -> httpclient.InferInput:
    t = httpclient.InferInput(name, list(array.shape), datatype)
    t.set_data_from_numpy(array, binary_data=binary)
    return t


def request(*inputs, outputs=None, **kwargs) -> tuple[bytes, int | None]:
    return httpclient.InferenceServerClient.generate_request_body(list(inputs), outputs=outputs,
                                                                  **kwargs)


def refused(body: bytes, header_length: int, code: str) -> BadRequest:
    with pytest.raises(BadRequest) as caught:
        decode_binary_request(body, header_length)
    assert caught.value.code == code and caught.value.status == 400, caught.value.message
    return caught.value


# -- requests tritonclient encodes --------------------------------------------------------------

@pytest.mark.parametrize("datatype", sorted(NUMERIC))
def test_every_numeric_datatype_decodes_to_the_clients_array(datatype):
    rng = np.random.default_rng(len(datatype))
    array = (rng.normal(0, 50, size=(3, 4)) if datatype.startswith("FP")
             else rng.integers(0, 100, size=(3, 4))).astype(NUMERIC[datatype])
    body, n = request(tensor("input-0", array, datatype), request_id="r-1")
    assert n is not None and n < len(body)
    doc = decode_binary_request(body, n)
    data = doc["inputs"][0]["data"]
    assert data.dtype == NUMERIC[datatype] and data.shape == (12,)
    assert np.array_equal(data, array.reshape(-1))
    assert doc["inputs"][0]["parameters"] == {}  # binary_data_size is consumed
    assert doc["id"] == "r-1" and doc["inputs"][0]["shape"] == [3, 4]


def test_extreme_values_come_through_bit_for_bit():
    array = np.array([[np.nan, np.inf, -np.inf, 5e-324, -0.0, np.finfo(np.float64).max]])
    body, n = request(tensor("x", array, "FP64"))
    data = decode_binary_request(body, n)["inputs"][0]["data"]
    assert data.tobytes() == array.tobytes()
    ints = np.array([np.iinfo(np.int64).min, np.iinfo(np.int64).max], dtype=np.int64)
    body, n = request(tensor("i", ints, "INT64"))
    assert decode_binary_request(body, n)["inputs"][0]["data"].tolist() == ints.tolist()


def test_binary_and_json_inputs_mix_in_request_order():
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    b = np.array([7, 8], dtype=np.int32)
    c = np.array([1.25, 2.5], dtype=np.float64)
    body, n = request(tensor("a", a, "FP32"), tensor("b", b, "INT32", binary=False),
                      tensor("c", c, "FP64"))
    inputs = decode_binary_request(body, n)["inputs"]
    assert np.array_equal(inputs[0]["data"], a.reshape(-1))
    assert inputs[1]["data"] == [7, 8]  # JSON data is left as it is
    assert np.array_equal(inputs[2]["data"], c) and inputs[2]["data"].dtype == np.float64


def test_bytes_tensors_decode_to_utf8_strings():
    values = np.array([b"red", "gr\u00fcn".encode(), b"", "\U0001F600".encode()], dtype=np.object_)
    body, n = request(tensor("colour", values, "BYTES"))
    assert decode_binary_request(body, n)["inputs"][0]["data"] == ["red", "gr\u00fcn", "", "\U0001F600"]


def test_a_bytes_element_that_is_not_utf8_is_refused():
    body, n = request(tensor("colour", np.array([b"ok", b"\xff\xfe"], dtype=np.object_), "BYTES"))
    assert "element 1" in refused(body, n, "invalid_binary_data").message


def test_a_decoded_request_parses_to_the_matrix_the_client_sent():
    schema = FeatureSchema(("a", "b", "c"))
    matrix = np.array([[1.5, np.nan, 3], [4, 5, 6.25]], dtype=np.float32)
    body, n = request(tensor("input-0", matrix, "FP32"))
    parsed = parse_v2(decode_binary_request(body, n), schema, 100)
    assert np.array_equal(parsed.X, matrix.astype(np.float64), equal_nan=True)
    columns = [tensor(name, np.array([j, j + 10], dtype=np.int16), "INT16")
               for j, name in enumerate(schema.names)]
    body, n = request(*columns)
    parsed = parse_v2(decode_binary_request(body, n), schema, 100)
    assert parsed.X.tolist() == [[0, 1, 2], [10, 11, 12]]


# -- what the client asks for its output ---------------------------------------------------------

def test_tritonclient_asks_for_binary_outputs_by_default_and_per_output():
    x = tensor("x", np.ones((1, 3)), "FP64")
    assert wants_binary_output(decode_binary_request(*request(x)))  # no outputs: binary_data_output
    wanted = [httpclient.InferRequestedOutput("predict")]  # binary_data=True by default
    assert wants_binary_output(decode_binary_request(*request(x, outputs=wanted)))
    json_out = [httpclient.InferRequestedOutput("predict", binary_data=False)]
    body, n = request(x, outputs=json_out)
    assert not wants_binary_output(decode_binary_request(body, n))


def test_an_outputs_own_setting_overrides_the_requests():
    doc = {"inputs": [], "parameters": {"binary_data_output": True},
           "outputs": [{"name": "predict", "parameters": {"binary_data": False}}]}
    assert not wants_binary_output(doc)
    doc["outputs"] = [{"name": "other", "parameters": {"binary_data": False}}, {"name": "predict"}]
    assert wants_binary_output(doc)  # another output's setting is not predict's
    assert not wants_binary_output({"inputs": []})
    assert not wants_binary_output({"parameters": {"binary_data_output": False}})


@pytest.mark.parametrize("doc", [{"parameters": {"binary_data_output": "yes"}},
                                 {"parameters": {"binary_data_output": 1}},
                                 {"outputs": [{"name": "predict", "parameters": {"binary_data": None}}]}])
def test_a_binary_flag_that_is_not_a_boolean_is_refused(doc):
    with pytest.raises(InvalidPayload) as caught:
        wants_binary_output(doc)
    assert caught.value.code == "invalid_v2_request"


# -- responses tritonclient decodes ----------------------------------------------------------------

@pytest.mark.parametrize("predictions", [np.array([0.25, 0.5, 1e-300]),
                                         np.arange(12, dtype=np.float64).reshape(4, 3) / 7,
                                         np.array([np.nan, np.inf, -np.inf])])
def test_tritonclient_reads_the_binary_response(predictions):
    body, n = encode_binary_response(predictions, model_name="churn/v2", model_version="0x8D",
                                     request_id="r-9", parameters={"variant": "a", "model": "churn/v2"})
    result = httpclient.InferenceServerClient.parse_response_body(body, header_length=n)
    got = result.as_numpy("predict")
    assert got.dtype == np.float64 and got.shape == predictions.shape
    assert got.tobytes() == predictions.tobytes()
    response = result.get_response()
    assert (response["model_name"], response["model_version"], response["id"]) == ("churn/v2", "0x8D", "r-9")
    assert response["parameters"] == {"variant": "a", "model": "churn/v2"}
    assert response["outputs"][0]["parameters"] == {"binary_data_size": predictions.size * 8}
    assert "data" not in response["outputs"][0]
    assert len(body) == n + predictions.size * 8


def test_the_response_without_a_request_id_has_no_id():
    body, n = encode_binary_response(np.array([1.0]), model_name="m", model_version="v",
                                     request_id=None)
    assert "id" not in httpclient.InferResult.from_response_body(body, header_length=n).get_response()


# -- bad framing: typed 4xx errors, never a 500 -----------------------------------------------------

@pytest.fixture
def good() -> tuple[bytes, int]:
    body, n = request(tensor("a", np.arange(6, dtype=np.float64).reshape(2, 3), "FP64"),
                      tensor("b", np.array([b"x", b"yz"], dtype=np.object_), "BYTES"))
    return body, n


@pytest.mark.parametrize("length", [0, -1, "12", 10**9, True])
def test_a_header_length_outside_the_body_is_refused(good, length):
    body, _ = good
    if length == 10**9:
        length = len(body) + 1
    refused(body, length, "invalid_binary_header")


def test_a_header_length_that_is_not_the_json_is_invalid_json(good):
    body, n = good
    assert f"first {n - 1} bytes" in refused(body, n - 1, "invalid_json").message
    refused(body, n + 1, "invalid_json")
    refused(b"[1, 2]" + body[n:], 6, "invalid_payload")  # JSON, but not an object
    nan = b'{"inputs": [], "x": NaN}'
    refused(nan, len(nan), "invalid_json")  # strict, as decode_json


def test_bytes_missing_or_left_over_are_refused(good):
    body, n = good
    assert "left" in refused(body[:-1], n, "invalid_binary_data").message
    assert "follow" in refused(body + b"\x00", n, "invalid_binary_data").message
    body_json_only, m = request(tensor("a", np.ones(3), "FP64", binary=False))
    assert m is None  # all JSON: tritonclient sends no header length
    refused(body_json_only + b"junk", len(body_json_only), "invalid_binary_data")


def binary_body(inputs: list[dict], payload: bytes) -> tuple[bytes, int]:
    import orjson

    header = orjson.dumps({"inputs": inputs})
    return header + payload, len(header)


@pytest.mark.parametrize("size", [-8, 8.0, "8", True, None])
def test_a_binary_data_size_that_is_not_a_byte_count_is_refused(size):
    body, n = binary_body([{"name": "x", "shape": [1], "datatype": "FP64",
                            "parameters": {"binary_data_size": size}}], b"\x00" * 8)
    refused(body, n, "invalid_binary_data")


def test_numeric_bytes_must_be_whole_values_of_the_shapes_count():
    body, n = binary_body([{"name": "x", "shape": [1], "datatype": "FP64",
                            "parameters": {"binary_data_size": 7}}], b"\x00" * 7)
    assert "whole number of FP64" in refused(body, n, "invalid_binary_data").message
    body, n = binary_body([{"name": "x", "shape": [1, 3], "datatype": "FP64",
                            "parameters": {"binary_data_size": 16}}], b"\x00" * 16)
    assert "needs 3" in refused(body, n, "shape_mismatch").message
    body, n = binary_body([{"name": "x", "shape": [3], "datatype": "BYTES",
                            "parameters": {"binary_data_size": 9}}], serialize_byte_tensor(
        np.array([b"a", b"b"], dtype=np.object_)).item() + b"\x00")
    refused(body, n, "invalid_binary_data")  # the 9th byte is a length cut short


def test_a_bytes_length_past_the_tensors_data_is_refused():
    data = (5).to_bytes(4, "little") + b"abc"
    body, n = binary_body([{"name": "x", "shape": [1], "datatype": "BYTES",
                            "parameters": {"binary_data_size": len(data)}}], data)
    assert "says 5 bytes" in refused(body, n, "invalid_binary_data").message


@pytest.mark.parametrize("datatype", ["BF16", "BOOL", "FP8", ["FP64"], None])
def test_a_datatype_that_cannot_come_as_binary_is_refused(datatype):
    body, n = binary_body([{"name": "x", "shape": [2], "datatype": datatype,
                            "parameters": {"binary_data_size": 2}}], b"\x01\x00")
    refused(body, n, "unsupported_datatype")


def test_an_input_with_both_data_and_binary_data_is_refused():
    body, n = binary_body([{"name": "x", "shape": [1], "datatype": "FP64", "data": [1.0],
                            "parameters": {"binary_data_size": 8}}], b"\x00" * 8)
    refused(body, n, "invalid_binary_data")


def test_every_cut_and_corruption_of_a_request_is_a_400_never_another_error(good):
    body, n = good
    rng = np.random.default_rng(7)
    tried = 0
    cases = [(body[:k], min(n, k)) for k in range(1, len(body))]
    for _ in range(300):
        mutated = bytearray(body)
        for i in rng.integers(0, len(body), size=int(rng.integers(1, 4))):
            mutated[i] = int(rng.integers(0, 256))
        cases.append((bytes(mutated), n))
    for data, length in cases:
        try:
            decode_binary_request(data, length)
        except BadRequest as exc:  # InvalidJson or InvalidPayload: a 400 with a code
            assert exc.status == 400 and exc.code != "bad_request"
        tried += 1
    assert tried == len(body) - 1 + 300


@pytest.mark.parametrize("value,expected", [("123", 123), (" 7 ", 7), ("0", 0)])
def test_the_header_value_is_a_plain_byte_count(value, expected):
    assert header_length_of(value) == expected


@pytest.mark.parametrize("value", ["", "-1", "+5", "1e3", "0x10", "12 34", "\u0661\u0662",
                                   "9" * 19])
def test_any_other_header_value_is_refused(value):
    with pytest.raises(InvalidPayload) as caught:
        header_length_of(value)
    assert caught.value.code == "invalid_binary_header" and HEADER in caught.value.message
