"""The prediction log record: the exact JSON line stored logs hold, read back by the report."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from types import SimpleNamespace

import numpy as np
import orjson
import pytest

from shared.ablog.record import DamagedRecord, PredictionRecord, output_kind
from shared.models.schema import Categories, FeatureSchema

T = datetime(2026, 11, 24, 21, 5, 9, 123456, tzinfo=UTC).timestamp()
PLANS = FeatureSchema(names=("tenure", "plan"), categorical=(Categories.build(1, "plan", ["basic", "pro"]),))


def model(schema=None):
    return SimpleNamespace(name="churn", version="3", objective="binary",
                           feature_names=("tenure", "plan"), schema=schema)


def scored(**fields):
    made = dict(endpoint="churn", request_id="r1", key="u42", trigger="http", variant="candidate",
                predictions=np.array([0.25, 0.5]), latency_ms=1.234567, output="predict", rows=2,
                variant_index=1)
    record = PredictionRecord.scored_by(fields.pop("model", model()), **{**made, **fields})
    record.time = T
    return record


def test_the_line_is_the_documented_format_byte_for_byte():
    line = scored(pinned=True).json_line(1 << 20)
    assert line == (b'{"time":"2026-11-24T21:05:09.123456Z","endpoint":"churn","request_id":"r1",'
                    b'"key":"u42","trigger":"http","variant":"candidate","shadow":false,'
                    b'"variant_index":1,"pinned":true,"model":{"name":"churn","version":"3"},'
                    b'"objective":"binary","output":"predict","rows":2,"predictions":[0.25,0.5],'
                    b'"latency_ms":1.2346}\n')
    bare = scored(key=None, variant_index=None).json_line(1 << 20)
    assert b'"key"' not in bare and b'"variant_index"' not in bare and b'"pinned"' not in bare


def test_features_are_written_as_sent_and_dropped_when_too_large():
    X = np.array([[3.0, 1.0], [np.nan, np.nan]])
    doc = orjson.loads(scored(model=model(PLANS), features=X).json_line(1 << 20))
    assert doc["feature_names"] == ["tenure", "plan"]
    assert doc["features"] == [[3.0, "pro"], [None, None]]
    small = orjson.loads(scored(features=X).json_line(300))
    assert small["features_omitted"] == "too_large" and "features" not in small
    assert "feature_names" not in small and small["predictions"] == [0.25, 0.5]


def test_pred_contrib_predictions_are_null_and_output_kinds():
    assert orjson.loads(scored(output="pred_contrib").json_line(1 << 20))["predictions"] is None
    assert output_kind(SimpleNamespace(pred_contrib=True, raw_score=True)) == "pred_contrib"
    assert output_kind(SimpleNamespace(raw_score=True)) == "raw_score"
    assert output_kind(None) == "predict"


def test_a_line_reads_back_as_the_record_it_was():
    record = scored(model=model(PLANS), features=np.array([[3.0, 0.0], [1.0, 1.0]]), shadow=True)
    line = record.json_line(1 << 20)
    back = PredictionRecord.from_json(orjson.loads(line))
    assert back.json_line(1 << 20) == line
    assert (back.time, back.endpoint, back.key, back.variant_index, back.shadow, back.model_name,
            back.model_version, back.rows) == (T, "churn", "u42", 1, True, "churn", "3", 2)
    assert back.predictions.tolist() == [0.25, 0.5] and back.features == [[3.0, "basic"], [1.0, "pro"]]


def test_older_lines_get_defaults_and_damaged_ones_are_refused():
    minimal = {"time": "2026-11-24T10:00:00", "request_id": 7, "variant": "a", "predictions": [0.1]}
    record = PredictionRecord.from_json(minimal, endpoint="churn")
    assert (record.endpoint, record.request_id, record.output, record.rows, record.model_name,
            record.objective, record.key, record.pinned) == ("churn", "7", "predict", 1, "?",
                                                             "unknown", None, False)
    assert record.time == datetime(2026, 11, 24, 10, tzinfo=UTC).timestamp()
    assert math.isnan(record.latency_ms)
    for damaged in ({**minimal, "time": "garbage"}, {**minimal, "time": 5}, {"time": minimal["time"]},
                    {**minimal, "model": "x"}, {**minimal, "predictions": [[1], [1, 2]]},
                    {**minimal, "variant_index": "1"}, {**minimal, "latency_ms": None}):
        with pytest.raises(DamagedRecord):
            PredictionRecord.from_json(damaged, endpoint="churn")
    with pytest.raises(DamagedRecord):
        PredictionRecord.from_json(minimal)  # names no endpoint, and none given
