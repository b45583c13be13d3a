"""The latency summary: percentiles from histogram buckets, and its JSON fields in their order."""

from __future__ import annotations

import orjson

from tests.telemetry.conftest import points


def test_percentiles_from_buckets_stay_within_what_was_observed(readers):
    from shared.telemetry.summary import bucket_quantile

    telemetry, reader, _ = readers
    attrs = {"trigger": "http", "endpoint": "e", "outcome": "ok"}
    telemetry.record(attrs, duration_ms=180.0)
    (_, single), = points(reader, "scorefn.request.duration")
    assert bucket_quantile(single, 0.5) == 180.0  # one sample reads as itself
    for value in [0.12] * 90 + [0.4] * 9 + [3.0]:
        telemetry.record(attrs, duration_ms=value)
    (_, many), = points(reader, "scorefn.request.duration")
    p50, p99 = bucket_quantile(many, 0.5), bucket_quantile(many, 0.99)
    assert 0.1 <= p50 <= 0.15 and 0.3 <= p99 <= 180.0 and p50 < p99


def test_the_latency_summary_keeps_its_json_fields_and_their_order(readers):
    from shared.payloads import dumps
    from shared.telemetry.summary import summarize

    telemetry, reader, _ = readers
    attrs = {"trigger": "http", "endpoint": "e", "model.name": "m", "model.version": "v1",
             "outcome": "ok", "cold": False}
    telemetry.record(attrs, duration_ms=0.2)
    telemetry.record({**attrs, "outcome": "invalid_json"}, duration_ms=0.1)
    (row,) = orjson.loads(dumps({"latency": summarize(reader.get_metrics_data())}))["latency"]
    assert list(row) == ["trigger", "endpoint", "model", "version", "cold", "count", "mean_ms",
                         "p50_ms", "p90_ms", "p99_ms"]
    assert row["count"] == 1 and row["model"] == "m" and row["p50_ms"] == 0.2
