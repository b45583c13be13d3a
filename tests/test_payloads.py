"""Request formats: what each accepts, and the exact error code for each kind of bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest

from shared.errors import InvalidJson, InvalidPayload, PayloadTooLarge
from shared.models.schema import FeatureSchema
from shared.payloads import decode_json, encode_v2_response, parse_score_body, parse_v2
from shared.payloads.common import dumps

NAMES = FeatureSchema(("a", "b", "c"))


def score(doc, max_rows=100):
    return parse_score_body(doc, NAMES, max_rows)


def code_of(fn, *args):
    with pytest.raises((InvalidPayload, PayloadTooLarge, InvalidJson)) as err:
        fn(*args)
    return err.value.code


class TestJsonDecoding:
    def test_an_object_is_decoded(self):
        assert decode_json(b'{"rows": [[1, 2, 3]]}') == {"rows": [[1, 2, 3]]}

    @pytest.mark.parametrize("body", [b"", b"{", b"[1, NaN]", b'{"a": Infinity}', b"\xff\xfe",
                                      b'{"a": 1e999}', b'{"a": ' + b'9' * 400 + b'}'])
    def test_invalid_json_is_rejected(self, body):
        assert code_of(decode_json, body) == "invalid_json"

    @pytest.mark.parametrize("body", [b"[]", b"1", b'"rows"', b"null"])
    def test_the_body_must_be_an_object(self, body):
        assert code_of(decode_json, body) == "invalid_payload"


class TestRows:
    def test_rows_become_a_float_matrix_with_null_as_nan(self):
        X = score({"rows": [[1, 2.5, None], [0, -1, 3]]}).X
        assert X.dtype == np.float64 and X.shape == (2, 3)
        assert math.isnan(X[0, 2]) and X[1, 1] == -1.0

    def test_options_are_read(self):
        parsed = score({"rows": [[1, 2, 3]], "options": {"raw_score": True}})
        assert parsed.options.raw_score and not parsed.options.pred_contrib
        assert parsed.format == "rows"

    @pytest.mark.parametrize("doc,code", [
        ({"rows": []}, "empty_input"),
        ({"rows": "1,2,3"}, "invalid_rows"),
        ({"rows": [1, 2, 3]}, "invalid_rows"),
        ({"rows": [[1, 2]]}, "wrong_row_width"),
        ({"rows": [[1, 2, 3], [1, 2, 3, 4]]}, "wrong_row_width"),
        ({"rows": [[1, "2", 3]]}, "non_numeric_value"),
        ({"rows": [[1, True, 3]]}, "non_numeric_value"),
        ({"rows": [[1, [2], 3]]}, "non_numeric_value"),
        ({"rows": [[1, {"v": 2}, 3]]}, "non_numeric_value"),
        ({}, "invalid_payload"),
        ({"rows": [[1, 2, 3]], "records": [{}]}, "invalid_payload"),
        ({"rows": [[1, 2, 3]], "extra": 1}, "invalid_payload"),
        ({"rows": [[1, 2, 3]], "options": {"raw_score": "yes"}}, "invalid_options"),
        ({"rows": [[1, 2, 3]], "options": {"bogus": True}}, "invalid_options"),
        ({"rows": [[1, 2, 3]], "options": {"raw_score": True, "pred_contrib": True}}, "invalid_options"),
        ({"rows": [[1, 2, 3]], "options": []}, "invalid_options"),
    ])
    def test_bad_rows_have_a_precise_code(self, doc, code):
        assert code_of(score, doc) == code

    def test_the_error_names_the_offending_value(self):
        with pytest.raises(InvalidPayload) as err:
            score({"rows": [[1, 2, 3], [4, "x", 6]]})
        assert "rows[1][1]" in err.value.message and "(b)" in err.value.message

    def test_too_many_rows_is_413(self):
        with pytest.raises(PayloadTooLarge) as err:
            score({"rows": [[1, 2, 3]] * 11}, 10)
        assert err.value.code == "too_many_rows" and err.value.status == 413


class TestRecords:
    def test_records_are_placed_by_feature_name_and_absent_features_are_nan(self):
        X = score({"records": [{"c": 3, "a": 1}, {"b": 2, "a": None}]}).X
        assert X[0, 0] == 1 and math.isnan(X[0, 1]) and X[0, 2] == 3
        assert math.isnan(X[1, 0]) and X[1, 1] == 2

    @pytest.mark.parametrize("doc,code", [
        ({"records": []}, "empty_input"),
        ({"records": {"a": 1}}, "invalid_records"),
        ({"records": [[1, 2, 3]]}, "invalid_records"),
        ({"records": [{"a": 1, "typo": 2}]}, "unknown_feature"),
        ({"records": [{"a": "1"}]}, "non_numeric_value"),
    ])
    def test_bad_records_have_a_precise_code(self, doc, code):
        assert code_of(score, doc) == code


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
        ([{"name": "x", "shape": [1, 3], "datatype": "BYTES", "data": ["a", "b", "c"]}], "unsupported_datatype"),
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
            assert code_of(lambda: self.v2(tensor, outputs=outputs)) == "invalid_v2_request"

    def test_the_response_is_a_flat_fp64_tensor_with_its_shape(self):
        body = encode_v2_response(np.array([[0.1, 0.9], [0.3, 0.7]]), model_name="m",
                                  model_version="v1", request_id="r")
        doc = decode_json(body)
        assert doc["outputs"] == [{"name": "predict", "shape": [2, 2], "datatype": "FP64",
                                   "data": [0.1, 0.9, 0.3, 0.7]}]
        assert doc["id"] == "r" and doc["model_version"] == "v1"


def test_floats_survive_a_json_round_trip_exactly():
    values = np.random.default_rng(0).random(1000)
    assert decode_json(dumps({"v": values}))["v"] == values.tolist()


# -- read_rows_body: the direct path takes a body only when it reads it as the full parser --


def full_parser(body: bytes, width: int, max_rows: int = 100):
    """What the full path makes of a body, or the error code it raises."""
    try:
        return parse_score_body(decode_json(body), FeatureSchema(tuple(f"f{i}" for i in range(width))), max_rows).X
    except (InvalidJson, InvalidPayload, PayloadTooLarge) as exc:
        return exc.code


@pytest.mark.parametrize("body", [
    b'{"rows": [[1.5, 2, -3e-5]]}',
    b'{"rows":[[0.1,0.2,0.30000000000000004],[5e-324,1.7976931348623157e308,-0.0]]}',
    b'{ "rows" : [ [ 1 , 2 , 3 ] ,\n [ 4 , 5 , 6 ] ] }',
    b'{"rows": [[9007199254740993, 18446744073709551615, -9223372036854775808]]}',
    b'{"rows": [[1e-400, 2.2250738585072014e-308, 123456789012345678901234567890.5]]}',
])
def test_plain_number_rows_are_read_exactly_as_the_full_parser_reads_them(body):
    from shared.payloads.rows import read_rows_body

    X = read_rows_body(body, 100)
    assert X is not None and X.dtype == np.float64
    expected = full_parser(body, X.shape[1])
    assert np.array_equal(X, expected) and np.array_equal(np.signbit(X), np.signbit(expected))


@pytest.mark.parametrize("body", [
    b'{"rows": [[1, null, 3]]}', b'{"rows": [[1, true, 3]]}', b'{"rows": [[1, "2", 3]]}',
    b'{"rows": [[1, [2], 3]]}', b'{"rows": [[[1]], [2]]}', b'{"rows": [[1, {"a": 2}, 3]]}',
    b'{"rows": [[1, 2, 3], [4, 5]]}', b'{"rows": [[1, 2, 3], 4]}', b'{"rows": []}',
    b'{"rows": [[]]}', b'{"rows": [1, 2, 3]}', b'{"rows": {"a": 1}}', b'{"rows": 5}',
    b'{"rows": [[1, 2, 3]], "options": {"raw_score": true}}', b'{"records": [{"f0": 1}]}',
    b'{"rows": [[1, 2, 3]], "rows": [[4, 5, 6]]}', b'{"rows": [[1, 2, 3]]', b'[[1, 2, 3]]',
    b'{"rows": [[1, 2, NaN]]}', b'{"rows": [[1, 2, 1e400]]}', b'{"rows": [[01, 2, 3]]}',
    b'{"rows": [[1, 2, 3]]} x', b"", b'{"rows": [[1, 2, 3]]}\xff',
    b'\xef\xbb\xbf{"rows": [[1, 2, 3]]}',  # a BOM: orjson refuses it, so must this path
    b'{"rows": [[' + b",".join([b"1"] * 3) + b"]" + b", [1, 2, 3]" * 100 + b"]}",  # 101 rows
])
def test_anything_else_is_left_to_the_full_parser(body):
    from shared.payloads.rows import read_rows_body

    assert read_rows_body(body, 100) is None


def test_directly_read_values_outlive_the_parser():
    import gc

    from shared.payloads.rows import read_rows_body

    rows = np.random.default_rng(2).normal(size=(50, 20))
    X = read_rows_body(dumps({"rows": rows}), 100)
    gc.collect()
    junk = [bytes(1000) for _ in range(10_000)]  # reuse whatever memory was freed
    assert np.array_equal(X, rows) and len(junk) == 10_000


# -- the parser each thread keeps for direct reads ---------------------------------------------


def test_a_matrix_read_earlier_is_untouched_when_the_threads_parser_reads_the_next_body():
    from shared.payloads.rows import read_rows_body

    first, second = np.random.default_rng(3).normal(size=(2, 4, 10))
    X = read_rows_body(dumps({"rows": first}), 100)
    Y = read_rows_body(dumps({"rows": second}), 100)
    assert np.array_equal(X, first) and np.array_equal(Y, second)


def test_a_document_someone_still_holds_does_not_stop_the_next_direct_read():
    from shared.payloads import simd
    from shared.payloads.rows import read_rows_body

    held = simd.parse(b'{"rows": [[1, 2]]}')["rows"]  # keeps the thread's parser's document
    assert read_rows_body(b'{"rows": [[3, 4]]}', 100).tolist() == [[3.0, 4.0]]
    assert held.as_list() == [[1, 2]]  # ... which is still intact


def test_invalid_json_leaves_the_threads_parser_usable():
    from shared.payloads import simd
    from shared.payloads.rows import read_rows_body

    with pytest.raises(ValueError):
        simd.parse(b'{"rows": [[1, 2]')
    assert read_rows_body(b'{"rows": [[5, 6]]}', 100).tolist() == [[5.0, 6.0]]


def test_every_thread_reads_with_a_parser_of_its_own():
    import threading

    from shared.payloads.rows import read_rows_body

    barrier = threading.Barrier(4)
    results: dict[int, list] = {}

    def read(k: int) -> None:
        body = dumps({"rows": [[float(k)] * 50] * 20})
        barrier.wait()
        results[k] = [read_rows_body(body, 100) for _ in range(300)]

    threads = [threading.Thread(target=read, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(np.array_equal(X, np.full((20, 50), float(k))) for k in range(4)
               for X in results[k])


def test_a_large_body_gets_a_parser_of_its_own_so_the_kept_one_stays_small():
    from shared.payloads import simd
    from shared.payloads.rows import read_rows_body

    read_rows_body(b'{"rows": [[1, 2]]}', 100)
    kept = simd._local.parser
    big = dumps({"rows": np.ones((2_000, 10))})
    assert len(big) > simd.REUSE_MAX_BYTES
    assert read_rows_body(big, 10_000).shape == (2_000, 10)
    assert simd._local.parser is kept


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
