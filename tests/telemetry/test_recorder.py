"""What a scoring records: duration, model time and rows per request, failures by error code,
buckets that resolve below a millisecond, log lines with the code and never the payload (unless
configured), failed background refreshes and failing shadows counted."""

from __future__ import annotations

import logging

import orjson
import pytest

from shared.errors import ModelNotFound, ScoreError
from shared.models.blob_source import BlobSource
from shared.models.store import ModelStore
from shared.scoring.service import ScoringService
from shared.settings import Settings
from shared.telemetry import Telemetry
from tests.conftest import upload
from tests.telemetry.conftest import body, points


def test_each_scoring_records_duration_model_time_and_rows(service, readers):
    _, reader, _ = readers
    service.score("price", body(3), trigger="http")
    service.score("price", body(2), trigger="queue")
    durations = points(reader, "scorefn.request.duration")
    assert {unit for unit, _ in durations} == {"ms"}
    by_trigger = {p.attributes["trigger"]: p for _, p in durations}
    assert set(by_trigger) == {"http", "queue"}
    attrs = dict(by_trigger["http"].attributes)
    assert attrs["endpoint"] == "price" and attrs["model.name"] == "price"
    assert attrs["model.version"] and attrs["outcome"] == "ok" and attrs["cold"] is True
    assert by_trigger["http"].count == 1 and by_trigger["http"].sum > 0
    predict = points(reader, "scorefn.predict.duration")
    assert sum(p.count for _, p in predict) == 2
    rows = points(reader, "scorefn.rows")
    assert sum(p.value for _, p in rows) == 5
    loads = points(reader, "scorefn.model.load.duration")
    assert len(loads) == 1 and loads[0][1].count == 1  # only the cold request loaded


def test_failures_are_counted_by_error_code(service, readers):
    _, reader, _ = readers
    for bad in (b"{", orjson.dumps({"rows": [[1, 2]]})):
        with pytest.raises(ScoreError):
            service.score("price", bad)
    with pytest.raises(ModelNotFound):
        service.score("no-such-model", body())
    errors = {p.attributes["outcome"]: p.value for _, p in points(reader, "scorefn.errors")}
    assert errors == {"invalid_json": 1, "wrong_row_width": 1, "model_not_found": 1}
    endpoints = {p.attributes["endpoint"] for _, p in points(reader, "scorefn.errors")}
    assert "no-such-model" not in endpoints  # unknown names never become dimensions


def test_sub_millisecond_and_millisecond_scorings_land_in_different_buckets(readers):
    telemetry, reader, _ = readers
    attrs = {"trigger": "http", "endpoint": "e", "outcome": "ok"}
    telemetry.record(attrs, duration_ms=0.2)
    telemetry.record(attrs, duration_ms=5.0)
    (_, point), = points(reader, "scorefn.request.duration")
    assert point.explicit_bounds[0] <= 0.1  # resolves well below a millisecond
    filled = [i for i, count in enumerate(point.bucket_counts) if count]
    assert len(filled) == 2


def test_failure_logs_carry_the_code_and_never_the_payload(service, caplog):
    secret_value = "123456.789"
    with caplog.at_level(logging.INFO, logger="scorefn"):
        with pytest.raises(ScoreError):
            service.score("price", f'{{"rows": [[{secret_value}, "x", 1, 1, 1, 1]]}}'.encode())
    lines = [r for r in caplog.records if r.name.startswith("scorefn")]
    assert len(lines) == 1 and lines[0].error_code == "non_numeric_value"
    assert secret_value not in caplog.text


def test_payloads_are_logged_only_when_configured(container, demo_models, caplog):
    upload(container, "price.txt", demo_models["price"].path)
    store = ModelStore(BlobSource(container, 64 << 20))
    service = ScoringService(Settings.from_env({}), store, telemetry=Telemetry(log_payloads=True))
    with caplog.at_level(logging.INFO, logger="scorefn"):
        with pytest.raises(ScoreError):
            service.score("price", b'{"rows": [[4242.5, "x", 1, 1, 1, 1]]}')
    assert "4242.5" in caplog.records[-1].payload


def test_an_unexpected_fault_is_counted_as_internal_error(service, readers, monkeypatch):
    import shared.scoring.service as service_module

    _, reader, spans = readers

    def broken_encoder(*args):
        raise RuntimeError("bug")

    monkeypatch.setattr(service_module, "encode_response", broken_encoder)
    with pytest.raises(RuntimeError):
        service.score("price", body())
    errors = {p.attributes["outcome"]: p.value for _, p in points(reader, "scorefn.errors")}
    assert errors == {"internal_error": 1}
    root = next(s for s in spans.get_finished_spans() if s.name == "scorefn.score")
    assert not root.status.is_ok


def test_a_failed_background_refresh_is_counted_by_model_and_code(container, demo_models, readers):
    telemetry, reader, _ = readers
    upload(container, "price.txt", demo_models["price"].path)
    store = ModelStore(BlobSource(container, 64 << 20), refresh_seconds=3600,
                       on_refresh_failure=telemetry.record_refresh_failure)
    served, _ = store.get("price")
    upload(container, "price.txt", b"not a model")
    assert store.refresh("price") is False
    assert store.get("price")[0] is served  # the working version keeps serving
    [(unit, point)] = points(reader, "scorefn.model.refresh_failures")
    assert point.value == 1 and unit == "{refresh}"
    assert dict(point.attributes) == {"model.name": "price", "error_code": "invalid_model"}


def test_a_shadow_failing_unexpectedly_is_counted_and_its_log_line_quotes_no_request(
        container, demo_models, readers, monkeypatch, caplog):
    import json

    from shared.models.model import LoadedModel
    from shared.router import RouterConfigSource, RouterHolder, ShadowRunner

    telemetry, reader, _ = readers
    upload(container, "price.txt", demo_models["price"].path)
    upload(container, "price/next.txt", demo_models["price"].path)
    config = {"endpoints": {"price": {"variants": [{"name": "main", "model": "price"}],
                                      "shadow": [{"name": "next", "model": "price/next.txt",
                                                  "fraction": 1.0}]}}}
    runner = ShadowRunner(workers=1)
    service = ScoringService(Settings.from_env({}),
                             ModelStore(BlobSource(container, 64 << 20), refresh_seconds=3600),
                             telemetry=telemetry, shadows=runner,
                             routing=RouterHolder(RouterConfigSource(inline=json.dumps(config))))
    service.store.get("price/next.txt")[0]  # loaded; now its predictions break (not a ScoreError)
    real = LoadedModel._predict_one

    def broken(model, X, predict_type):
        if model.info.path == "price/next.txt":
            raise RuntimeError("native failure")
        return real(model, X, predict_type)

    monkeypatch.setattr(LoadedModel, "_predict_one", broken)
    with caplog.at_level(logging.WARNING, logger="scorefn.shadow"):
        assert service.score("price", body()).predictions.shape == (1,)
        runner.close()
    shadow = [p for _, p in points(reader, "scorefn.request.duration")
              if p.attributes.get("shadow")]
    assert [p.attributes["outcome"] for p in shadow] == ["internal_error"]
    assert runner.stats.failed == 1 and "RuntimeError" in caplog.text

    # A shadow's parse failure is logged by its code, without the message that names fields.
    runner2 = ShadowRunner(workers=1)
    service.shadows = runner2
    monkeypatch.setattr(LoadedModel, "_predict_one", real)
    predict_parsed = service.predict_parsed

    def refusing(model, request, cold, route=None):
        if model.info.path == "price/next.txt":
            raise ScoreError("unknown field(s) ['secret_field_name']", code="invalid_payload")
        return predict_parsed(model, request, cold, route)

    monkeypatch.setattr(service, "predict_parsed", refusing)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="scorefn.shadow"):
        assert service.score("price", body()).predictions.shape == (1,)
        runner2.close()
    assert runner2.stats.failed == 1
    assert "invalid_payload" in caplog.text and "secret_field_name" not in caplog.text
