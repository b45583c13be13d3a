"""Request formats: what each accepts, and the exact error code for each kind of bad input: JSON
decoding, rows and records (V2 requests: test_v2.py; bodies read directly: test_rows.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from shared.errors import InvalidJson, InvalidPayload, PayloadTooLarge
from shared.models.schema import FeatureSchema
from shared.payloads import decode_json, parse_score_body
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


def test_floats_survive_a_json_round_trip_exactly():
    values = np.random.default_rng(0).random(1000)
    assert decode_json(dumps({"v": values}))["v"] == values.tolist()
