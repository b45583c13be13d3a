"""V2 (Open Inference Protocol) requests: what parse_v2 accepts, the exact error code for each
kind of bad input, the response tensor, and the direct read of one flat FP64 tensor
(read_v2_body), which takes a body only when it reads it as parse_v2 does."""

from __future__ import annotations

import math

import numpy as np
import pytest

from shared.errors import InvalidJson, InvalidPayload, PayloadTooLarge
from shared.models.schema import FeatureSchema
from shared.payloads import decode_json, encode_v2_response, parse_v2
from shared.payloads.common import dumps

NAMES = FeatureSchema(("a", "b", "c"))


def code_of(fn, *args):
    with pytest.raises((InvalidPayload, PayloadTooLarge, InvalidJson)) as err:
        fn(*args)
    return err.value.code


class TestV2:
    def v2(self, inputs, **extra):
        return parse_v2({"inputs": inputs, **extra}, NAMES, 100)

    def test_one_matrix_tensor_flat_or_nested(self):
        flat = self.v2([{"name": "input-0", "shape": [2, 3], "datatype": "FP64",
                         "data": [1, 2, 3, 4, 5, None]}])
        nested = self.v2([{"name": "x", "shape": [2, 3], "datatype": "FP64",
                           "data": [[1, 2, 3], [4, 5, None]]}])
        assert np.array_equal(flat.X, nested.X, equal_nan=True)
        assert flat.X.shape == (2, 3) and math.isnan(flat.X[1, 2])

    def test_one_tensor_per_feature_missing_ones_are_nan(self):
        parsed = self.v2([{"name": "b", "shape": [2], "datatype": "FP32", "data": [1.5, 2]},
                          {"name": "a", "shape": [2, 1], "datatype": "INT64", "data": [7, 8]}],
                         id="req-1", parameters={"raw_score": True, "content_type": "np"})
        assert parsed.request_id == "req-1" and parsed.options.raw_score
        assert parsed.X[:, 0].tolist() == [7, 8] and parsed.X[:, 1].tolist() == [1.5, 2]
        assert np.isnan(parsed.X[:, 2]).all()

    def test_fp32_values_are_rounded_as_float32(self):
        parsed = self.v2([{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [0.1, 0.2, 0.3]}])
        assert parsed.X[0].tolist() == np.array([0.1, 0.2, 0.3], dtype=np.float32).astype(float).tolist()

    @pytest.mark.parametrize("inputs,code", [
        ([], "invalid_v2_request"),
        ([{"name": "x", "shape": [1, 3], "datatype": "BYTES", "data": ["a", "b", "c"]}],
         "unsupported_datatype"),
        ([{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": [1, 2, 3, 4]}], "shape_mismatch"),
        ([{"name": "x", "shape": [2, 3], "datatype": "FP64", "data": [1, 2, 3]}], "shape_mismatch"),
        ([{"name": "x", "shape": [1, 3], "datatype": "FP64", "data": [1, "2", 3]}], "non_numeric_value"),
        ([{"name": "x", "shape": [1, 3], "datatype": "INT32", "data": [1, 2.5, 3]}], "non_numeric_value"),
        ([{"name": "x", "shape": [1, 3], "datatype": "FP16", "data": [1, 1e6, 3]}], "non_numeric_value"),
        ([{"name": "x", "shape": [0, 3], "datatype": "FP64", "data": []}], "empty_input"),
        ([{"name": "x", "shape": "1,3", "datatype": "FP64", "data": [1, 2, 3]}], "invalid_v2_request"),
        ([{"name": "a", "shape": [1], "datatype": "FP64", "data": [1]},
          {"name": "zz", "shape": [1], "datatype": "FP64", "data": [1]}], "unknown_feature"),
        ([{"name": "a", "shape": [2], "datatype": "FP64", "data": [1, 2]},
          {"name": "b", "shape": [1], "datatype": "FP64", "data": [1]}], "shape_mismatch"),
        ([{"name": "a", "shape": [1], "datatype": "FP64", "data": [1]},
          {"name": "a", "shape": [1], "datatype": "FP64", "data": [1]}], "invalid_v2_request"),
    ])
    def test_bad_v2_requests_have_a_precise_code(self, inputs, code):
        assert code_of(self.v2, inputs) == code

    def test_requested_outputs_must_be_the_one_there_is(self):
        tensor = [{"name": "x", "shape": [1, 3], "datatype": "FP64", "data": [1, 2, 3]}]
        assert self.v2(tensor, outputs=[{"name": "predict"}]).X.shape == (1, 3)
        for outputs in ([{"name": "proba"}], [{"name": "predict"}, {"name": "leaf"}],
                        "predict", [{"nom": "predict"}]):
            assert code_of(lambda o: self.v2(tensor, outputs=o), outputs) == "invalid_v2_request"

    def test_the_response_is_a_flat_fp64_tensor_with_its_shape(self):
        body = encode_v2_response(np.array([[0.1, 0.9], [0.3, 0.7]]), model_name="m",
                                  model_version="v1", request_id="r")
        doc = decode_json(body)
        assert doc["outputs"] == [{"name": "predict", "shape": [2, 2], "datatype": "FP64",
                                   "data": [0.1, 0.9, 0.3, 0.7]}]
        assert doc["id"] == "r" and doc["model_version"] == "v1"


# -- read_v2_body: one FP64 tensor of flat numbers, read directly; the rest to parse_v2 -----


def v2_body(data, shape=(1, 3), **extra) -> bytes:
    tensor = {"name": "input-0", "shape": list(shape), "datatype": "FP64", "data": data}
    return dumps({**extra, "inputs": [tensor]})


@pytest.mark.parametrize("body", [
    v2_body([1.5, 2, -3e-5]),
    v2_body([1.5, 2, -3e-5], id="req-7"), v2_body([1, 2, 3], id=""),
    v2_body([0.1, 0.2, 0.30000000000000004, 5e-324, 9007199254740993, -0.0], shape=(2, 3)),
    b'{ "inputs" : [ { "datatype" : "FP64", "data" : [ 1 , 2 , 3 ], "shape" : [ 1 , 3 ],\n'
    b' "name" : "x" } ] , "id" : "r" }',
])
def test_a_flat_fp64_v2_tensor_is_read_exactly_as_parse_v2_reads_it(body):
    from shared.payloads.v2 import read_v2_body

    direct = read_v2_body(body, 100)
    assert direct is not None
    request, name = direct
    full = parse_v2(decode_json(body), NAMES, 100)
    assert np.array_equal(request.X, full.X) and np.array_equal(np.signbit(request.X),
                                                                np.signbit(full.X))
    assert request.request_id == full.request_id and request.format == "v2"
    assert request.fields == ({"id": full.request_id} if full.request_id is not None else {})
    assert name == decode_json(body)["inputs"][0]["name"]


@pytest.mark.parametrize("body", [
    v2_body([[1, 2, 3]]), v2_body([1, None, 3]), v2_body([1, True, 3]), v2_body([1, "2", 3]),
    v2_body([1, 2, 3, 4]), v2_body([1, 2]), v2_body([1, 2, 3], shape=(3,)),
    v2_body([1, 2, 3], shape=(0, 3)), v2_body([1, 2, 3], shape=(1.0, 3)),
    v2_body([1, 2, 3], shape=(1, 3), parameters={"raw_score": True}),
    v2_body([1, 2, 3], id=7), v2_body([1, 2, 3], outputs=[{"name": "p"}]),
    dumps({"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}),
    dumps({"inputs": [{"name": "", "shape": [1, 3], "datatype": "FP64", "data": [1, 2, 3]}]}),
    dumps({"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP64", "data": [1, 2, 3],
                       "parameters": {}}]}),
    dumps({"inputs": [{"name": "a", "shape": [1], "datatype": "FP64", "data": [1]},
                      {"name": "b", "shape": [1], "datatype": "FP64", "data": [2]}]}),
    b'{"inputs": [{"name": "x", "name": "y", "shape": [1, 1], "datatype": "FP64", "data": [1]}]}',
    b'\xef\xbb\xbf' + v2_body([1, 2, 3]), v2_body([1, 2, 3])[:-1], b"{}", b"[]",
    v2_body([1.0] * 303, shape=(101, 3)),  # more rows than allowed
    b'{"id": "a", "id": "b", "inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP64", '
    b'"data": [1]}]}',  # orjson keeps the last "id", simdjson would read the first
])
def test_any_other_v2_body_is_left_to_parse_v2(body):
    from shared.payloads.v2 import read_v2_body

    assert read_v2_body(body, 100) is None


@pytest.mark.parametrize("shape,data", [
    ([2, 3], [[1, 2], [3, 4, 5, 6]]),    # the right count, ragged rows: never re-flowed
    ([2, 3], [[1, 2, 3, 4, 5, 6], []]),
    ([2, 3], [[1, 2, 3], [4, 5, 6], []]),
])
def test_nested_v2_data_must_follow_its_shape_row_by_row(shape, data):
    body = {"inputs": [{"name": "input-0", "shape": shape, "datatype": "FP64", "data": data}]}
    with pytest.raises(InvalidPayload) as err:
        parse_v2(body, FeatureSchema(("a", "b", "c")), 100)
    assert err.value.code == "shape_mismatch"


def test_a_per_feature_v2_tensor_may_nest_one_value_per_row():
    body = {"inputs": [{"name": n, "shape": [2, 1], "datatype": "FP64", "data": [[1.0], [2.0]]}
                       for n in ("a", "b", "c")]}
    assert parse_v2(body, FeatureSchema(("a", "b", "c")), 100).X.tolist() == [[1.0] * 3, [2.0] * 3]
    ragged = {"inputs": [{"name": "a", "shape": [2], "datatype": "FP64", "data": [[1.0, 2.0]]}]}
    with pytest.raises(InvalidPayload) as err:
        parse_v2(ragged, FeatureSchema(("a",)), 100)
    assert err.value.code == "shape_mismatch"
