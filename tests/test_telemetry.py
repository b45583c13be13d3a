"""Latency telemetry: metrics and spans through OpenTelemetry, read back in memory, and the
real Azure Monitor exporter sending to a local capture server."""

from __future__ import annotations

import logging
import threading

import orjson
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from shared.models.blob_source import BlobSource
from shared.errors import ModelNotFound, ScoreError
from shared.models.store import ModelStore
from shared.scoring.service import ScoringService
from shared.settings import Settings
from shared.telemetry import Telemetry, get_telemetry, set_telemetry
from tests.conftest import upload
from tests.ingestion_support import Ingestion

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


class FlushedReader:
    """A metric reader read only after the telemetry's queued measurements are recorded
    (they are recorded off the request thread)."""

    def __init__(self, telemetry, reader):
        self.telemetry, self.reader = telemetry, reader

    def get_metrics_data(self):
        self.telemetry.flush()
        return self.reader.get_metrics_data()


@pytest.fixture
def readers():
    metric_reader = InMemoryMetricReader()
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    telemetry = Telemetry(MeterProvider(metric_readers=[metric_reader]), tracer_provider)
    return telemetry, FlushedReader(telemetry, metric_reader), spans


@pytest.fixture
def service(container, demo_models, readers):
    upload(container, "price.txt", demo_models["price"].path)
    store = ModelStore(BlobSource(container, 64 << 20), refresh_seconds=3600)
    return ScoringService(Settings.from_env({}), store, telemetry=readers[0])


def points(reader, name):
    data = reader.get_metrics_data()
    found = []
    for rm in data.resource_metrics if data else []:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                if metric.name == name:
                    found += [(metric.unit, p) for p in metric.data.data_points]
    return found


def body(n=1):
    return orjson.dumps({"rows": [[1800, 3, 2, 10, 0.3, 12]] * n})


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


def test_one_span_per_request_with_stage_times_continuing_the_callers_trace(service, readers):
    _, _, spans = readers
    service.score("price", body(), carrier={"traceparent": TRACEPARENT})
    finished = spans.get_finished_spans()
    root = next(s for s in finished if s.name == "scorefn.score")
    assert format(root.context.trace_id, "032x") == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert format(root.parent.span_id, "016x") == "00f067aa0ba902b7"
    children = [s.name for s in finished if s.parent and s.parent.span_id == root.context.span_id]
    assert children == ["model.load"]  # a cold request; stages are attributes, not spans
    load = next(s for s in finished if s.name == "model.load")
    assert root.start_time <= load.start_time <= load.end_time <= root.end_time
    stages = ("scorefn.decode_ms", "scorefn.parse_ms", "scorefn.predict_ms", "scorefn.serialize_ms")
    assert all(root.attributes[name] >= 0 for name in stages)
    assert root.attributes["scorefn.predict_ms"] > 0


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


def test_the_azure_monitor_exporter_sends_latency_and_no_payload(container, demo_models, monkeypatch):
    from azure.monitor.opentelemetry.exporter import AzureMonitorMetricExporter

    # The exporter's own usage telemetry (statsbeat) would otherwise keep posting at exit.
    monkeypatch.setenv("APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL", "true")
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

    ingestion = Ingestion()
    try:
        conn = ingestion.connection_string
        exporter = AzureMonitorMetricExporter(connection_string=conn, disable_offline_storage=True)
        reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
        provider = MeterProvider(metric_readers=[reader])
        upload(container, "price.txt", demo_models["price"].path)
        service = ScoringService(Settings.from_env({}),
                                 ModelStore(BlobSource(container, 64 << 20)),
                                 telemetry=Telemetry(provider, TracerProvider()))
        service.score("price", orjson.dumps({"rows": [[987654.25, 3, 2, 10, 0.3, 12]]}))
        service.telemetry.flush()
        provider.force_flush()
        sent = b"".join(ingestion.received)
    finally:
        provider.shutdown()
        # The capture server stays up (a daemon thread) until the test process exits: the
        # exporter may still post once at exit, and a refused connection would log a retry.
    assert b"scorefn.request.duration" in sent
    assert b"987654.25" not in sent


def test_the_request_span_carries_the_metric_attributes(service, readers):
    _, _, spans = readers
    service.score("price", body())
    root = next(s for s in spans.get_finished_spans() if s.name == "scorefn.score")
    assert root.attributes["model.name"] == "price" and root.attributes["variant"] == "default"
    assert root.attributes["outcome"] == "ok" and root.attributes["cold"] is True


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


def test_unsampled_requests_make_no_span_and_a_sampled_caller_is_always_traced(service, readers):
    telemetry, _, spans = readers
    telemetry.trace_sample_ratio = 0.0
    service.score("price", body())
    assert [s for s in spans.get_finished_spans() if s.name == "scorefn.score"] == []
    service.score("price", body(), carrier={"traceparent": TRACEPARENT})  # flag 01: sampled
    assert len([s for s in spans.get_finished_spans() if s.name == "scorefn.score"]) == 1
    unsampled_parent = TRACEPARENT[:-2] + "00"
    service.score("price", body(), carrier={"traceparent": unsampled_parent})
    assert len([s for s in spans.get_finished_spans() if s.name == "scorefn.score"]) == 1
    # Other flag bits set as well: the sampled bit still decides (W3C: flags & 01).
    service.score("price", body(), carrier={"traceparent": TRACEPARENT[:-2] + "03"})
    assert len([s for s in spans.get_finished_spans() if s.name == "scorefn.score"]) == 2
    service.score("price", body(), carrier={"traceparent": TRACEPARENT[:-2] + "02"})
    assert len([s for s in spans.get_finished_spans() if s.name == "scorefn.score"]) == 2


def test_metrics_are_recorded_off_the_request_thread_and_bounded(readers):
    telemetry, reader, _ = readers
    attrs = {"trigger": "http", "endpoint": "e", "outcome": "ok"}
    threads, recorded = [], threading.Event()
    telemetry.deferred.put(lambda: (threads.append(threading.current_thread().name),
                                    recorded.set()))
    assert recorded.wait(10) and threads == ["scorefn-metrics"]  # no flush: the drainer did it

    telemetry.deferred.max_pending = 3
    busy, release = threading.Event(), threading.Event()
    telemetry.deferred.put(lambda: (busy.set(), release.wait(10)))  # the drainer is held here
    assert busy.wait(10)
    for _ in range(5):
        telemetry.record(attrs, duration_ms=1.0)
    assert telemetry.deferred.dropped == 2  # bounded: never an unlimited queue
    release.set()
    (_, point), = points(reader, "scorefn.request.duration")
    assert point.count == 3


def test_a_flush_returns_once_every_measurement_before_it_is_recorded(readers):
    telemetry, reader, _ = readers
    attrs = {"trigger": "http", "endpoint": "e", "outcome": "ok"}
    for i in range(2000):
        telemetry.record(attrs, duration_ms=0.1, rows=1)
        if i % 500 == 0:
            telemetry.flush()
    (_, point), = points(reader, "scorefn.request.duration")
    (_, rows), = points(reader, "scorefn.rows")
    assert point.count == 2000 and rows.value == 2000  # counter sums added by the flush too


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


def test_the_process_wide_telemetry_can_be_replaced(readers):
    from shared.telemetry.process import current_setup

    telemetry, _, _ = readers
    before = current_setup()
    set_telemetry(telemetry)
    try:
        assert get_telemetry() is telemetry
    finally:
        set_telemetry(before.telemetry if before else None)


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
