"""The prediction log through the scoring service, on a real Azurite: opt-in per endpoint,
features only when configured, shadows as their own records, flush on close, and every
record that cannot be written counted (storage down, buffer full)."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time

import numpy as np
import orjson
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from shared.ablog.blobs import MAX_BLOCK_BYTES, AppendTarget, hour_prefix, instance_name, pack_lines
from shared.ablog.predictions import PredictionLog
from shared.ablog.record import PredictionRecord
from shared.ablog.writer import BufferedLogWriter
from shared.errors import InvalidJson, ModelNotFound
from shared.models.blob_source import BlobSource
from shared.models.store import ModelStore
from shared.router import RouterConfigSource, RouterHolder, ShadowRunner
from shared.scoring.service import ScoringService
from shared.settings import Settings
from shared.telemetry import Telemetry
from tests.conftest import upload

ROW = [12, 70.5, 1, 12, 40, 33.2, None, 5]


def router_config(log_block=None, shadow=False, other_endpoint=True) -> str:
    churn = {"variants": [{"name": "control", "model": "churn_v1", "weight": 1},
                          {"name": "candidate", "model": "churn", "weight": 1}],
             "sticky": {"header": "x-user-id"}}
    if log_block is not None:
        churn["log"] = log_block
    if shadow:
        churn["shadow"] = [{"name": "next", "model": "churn", "fraction": 1.0}]
    endpoints = {"churn": churn}
    if other_endpoint:  # configured, but without a log block
        endpoints["quiet"] = {"variants": [{"name": "only", "model": "churn"}]}
    return json.dumps({"endpoints": endpoints})


@pytest.fixture
def models(container, demo_models):
    upload(container, "churn.txt", demo_models["churn"].path)
    upload(container, "churn_v1.txt", demo_models["churn_v1"].path)
    return container


@pytest.fixture
def telemetry():
    reader = InMemoryMetricReader()
    return Telemetry(MeterProvider(metric_readers=[reader])), reader


def make_service(models, config: str, log_container, telemetry=None, *, flush_seconds=3600.0,
                 max_records=10_000, shadows=False, target=None):
    store = ModelStore(BlobSource(models, 64 << 20), refresh_seconds=3600)
    routing = RouterHolder(RouterConfigSource(inline=config))
    writer = BufferedLogWriter(target or (lambda: AppendTarget(log_container, "test-instance")),
                               flush_seconds=flush_seconds, max_records=max_records,
                               telemetry=telemetry, retry_delay=0.05)
    return ScoringService(Settings.from_env({}), store, telemetry, routing=routing,
                          shadows=ShadowRunner(workers=1, max_pending=64) if shadows else None,
                          prediction_log=PredictionLog(writer))


def a_record(endpoint="churn", **fields) -> PredictionRecord:
    """A prediction record made now, for the writer alone."""
    made = dict(time=time.time(), endpoint=endpoint, request_id="r", trigger="http", variant="a",
                model_name="m", model_version="1", objective="binary", rows=1,
                predictions=np.zeros(1), latency_ms=1.0)
    return PredictionRecord(**{**made, **fields})


def score(service, endpoint="churn", user=None, request_id=None, rows=(ROW,)):
    headers = {"x-user-id": user} if user else {}
    return service.score(endpoint, orjson.dumps({"rows": list(rows)}), headers=headers,
                         request_id=request_id)


def logged(container) -> list[dict]:
    out = []
    for blob in container.list_blobs():
        out += [orjson.loads(line) for line in container.download_blob(blob.name).readall().splitlines()]
    return out


def dropped_points(reader) -> dict[tuple[str, str], int]:
    data = reader.get_metrics_data()  # scorefn.log.dropped is added at once, not deferred
    found = {}
    for rm in data.resource_metrics if data else []:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                if metric.name == "scorefn.log.dropped":
                    for p in metric.data.data_points:
                        found[(p.attributes["endpoint"], p.attributes["reason"])] = p.value
    return found


def test_records_are_written_on_close_with_the_documented_fields(models, container, blob_service):
    log_container = blob_service.get_container_client(container.container_name + "log")
    service = make_service(models, router_config({"sample": 1.0}), log_container)
    results = [score(service, user=f"u{i}", request_id=f"req-{i}") for i in range(20)]
    assert not log_container.exists()  # nothing written before a flush: flush_seconds is an hour
    service.close()
    records = logged(log_container)
    assert len(records) == 20
    by_id = {r["request_id"]: r for r in records}
    for i, result in enumerate(results):
        r = by_id[f"req-{i}"]
        assert r["endpoint"] == "churn" and r["key"] == f"u{i}" and r["trigger"] == "http"
        assert r["variant"] == result.variant and r["shadow"] is False
        assert r["variant_index"] == ["control", "candidate"].index(result.variant)
        assert r["model"] == {"name": result.model.name, "version": result.model.version}
        assert r["objective"] == "binary" and r["output"] == "predict" and r["rows"] == 1
        assert r["predictions"] == result.predictions.tolist()
        assert r["latency_ms"] > 0
        assert "features" not in r
        assert r["time"].endswith("Z")
    names = [b.name for b in log_container.list_blobs()]
    assert names == [f"{hour_prefix('churn', time.time())}/test-instance.jsonl"]
    log_container.delete_container()


def test_a_request_whose_caller_pinned_the_variant_is_logged_as_pinned(models, container,
                                                                       blob_service):
    log_container = blob_service.get_container_client(container.container_name + "log")
    config = json.loads(router_config({"sample": 1.0}))
    config["endpoints"]["churn"]["allow_override"] = True
    service = make_service(models, json.dumps(config), log_container)
    body = orjson.dumps({"rows": [ROW]})
    service.score("churn", body, headers={"x-user-id": "qa", "x-scorefn-variant": "candidate"},
                  request_id="pinned-1")
    service.score("churn", body, headers={"x-user-id": "u1"}, request_id="random-1")
    service.close()
    by_id = {r["request_id"]: r for r in logged(log_container)}
    assert by_id["pinned-1"]["pinned"] is True and by_id["pinned-1"]["variant"] == "candidate"
    assert "pinned" not in by_id["random-1"]
    log_container.delete_container()


def test_an_endpoint_without_a_log_block_logs_nothing(models, container, blob_service):
    log_container = blob_service.get_container_client(container.container_name + "log")
    service = make_service(models, router_config({"sample": 1.0}), log_container)
    for i in range(5):
        score(service, "quiet", request_id=f"q{i}")
        score(service, "churn_v1", request_id=f"single{i}")  # unconfigured: single-model mode
    service.close()
    assert not log_container.exists()
    service = make_service(models, router_config(None), log_container)
    score(service, user="a")
    service.close()
    assert not log_container.exists()


def test_features_are_logged_only_when_configured(models, container, blob_service):
    log_container = blob_service.get_container_client(container.container_name + "log")
    service = make_service(models, router_config({"features": True}), log_container)
    rows = [ROW, [1, 2, 3, 4, 5, 6, 7, 8]]
    result = score(service, user="f", request_id="feat", rows=rows)
    service.close()
    (record,) = logged(log_container)
    assert record["features"] == rows  # missing values stay null
    assert record["feature_names"] == list(result.model.feature_names)
    assert record["rows"] == 2 and len(record["predictions"]) == 2
    log_container.delete_container()


def test_sampling_by_key_is_stable(models, container, blob_service):
    log_container = blob_service.get_container_client(container.container_name + "log")
    service = make_service(models, router_config({"sample": 0.3}), log_container)
    for rep in range(2):
        for i in range(200):
            score(service, user=f"user-{i}", request_id=f"r{rep}-{i}")
    service.close()
    records = logged(log_container)
    first = {r["key"] for r in records if r["request_id"].startswith("r0-")}
    second = {r["key"] for r in records if r["request_id"].startswith("r1-")}
    assert first == second  # the same users both times
    assert 30 <= len(first) <= 90  # about 30% of 200
    log_container.delete_container()


def test_shadows_are_logged_with_the_request_id_of_the_answer(models, container, blob_service):
    log_container = blob_service.get_container_client(container.container_name + "log")
    service = make_service(models, router_config({"sample": 1.0}, shadow=True), log_container,
                           shadows=True)
    for i in range(10):
        score(service, user=f"s{i}", request_id=f"sh-{i}")
    deadline = time.monotonic() + 10
    while service.shadows.stats.completed < 10 and time.monotonic() < deadline:
        time.sleep(0.02)
    service.close()
    records = logged(log_container)
    answers = {r["request_id"]: r for r in records if not r["shadow"]}
    shadows = {r["request_id"]: r for r in records if r["shadow"]}
    assert set(answers) == set(shadows) == {f"sh-{i}" for i in range(10)}
    for rid, s in shadows.items():
        assert s["variant"] == "next" and s["model"]["name"] == "churn"
        assert s["key"] == answers[rid]["key"] and "variant_index" not in s
        assert s["latency_ms"] > 0
    log_container.delete_container()


def dead_storage_target():
    """A container client on a port where nothing listens: every call fails fast."""
    from azure.storage.blob import BlobServiceClient

    from devhost.azurite import DEV_ACCOUNT, DEV_KEY

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    conn = (f"DefaultEndpointsProtocol=http;AccountName={DEV_ACCOUNT};AccountKey={DEV_KEY};"
            f"BlobEndpoint=http://127.0.0.1:{port}/{DEV_ACCOUNT};")
    from shared.settings import StorageConnection
    from shared.storage import blob_service

    client = blob_service(StorageConnection("dead", connection_string=conn), timeout=2)
    assert isinstance(client, BlobServiceClient)
    return AppendTarget(client.get_container_client("predictions"), "dead")


def test_storage_down_requests_are_answered_and_every_lost_record_is_counted(
        models, telemetry, caplog):
    tel, reader = telemetry
    target = dead_storage_target()
    writing_threads = set()
    write = target.append

    def append(prefix, block):
        writing_threads.add(threading.get_ident())
        return write(prefix, block)

    target.append = append
    service = make_service(models, router_config({"sample": 1.0}), None, tel,
                           flush_seconds=0.2, target=lambda: target)
    caplog.set_level(logging.WARNING, logger="scorefn.predlog")
    results = [score(service, user=f"d{i}", request_id=f"d{i}") for i in range(40)]
    assert len(results) == 40 and all(r.predictions.shape == (1,) for r in results)
    time.sleep(0.5)  # a flush or two fail meanwhile
    results += [score(service, user=f"e{i}", request_id=f"e{i}") for i in range(10)]
    service.close()
    stats = service.prediction_log.writer.stats
    assert stats.enqueued == 50 and stats.written == 0
    assert stats.dropped == {"storage_error": 50}
    assert dropped_points(reader) == {("churn", "storage_error"): 50}
    warnings = [r for r in caplog.records if "dropped" in r.getMessage()]
    assert 1 <= len(warnings) <= stats.flushes  # one line per flush, not per record
    assert sum(r.dropped for r in warnings) == 50
    assert "ServiceRequestError" in warnings[0].getMessage()
    # Every write to the dead storage was tried off the request thread: requests never wait.
    assert writing_threads and threading.get_ident() not in writing_threads


def test_a_full_buffer_drops_and_counts_instead_of_growing(models, container, blob_service, telemetry):
    tel, reader = telemetry
    log_container = blob_service.get_container_client(container.container_name + "log")
    gate, in_flight, hang_over = threading.Event(), threading.Event(), threading.Event()

    class Slow(AppendTarget):
        def append(self, prefix, block):
            in_flight.set()
            gate.wait(10)  # storage hangs until released
            hang_over.set()
            super().append(prefix, block)

    slow = Slow(log_container, "slow")
    service = make_service(models, router_config({"sample": 1.0}), log_container, tel,
                           flush_seconds=0.05, max_records=10, target=lambda: slow)
    score(service, user="first", request_id="first")
    assert in_flight.wait(10)  # the first record is now in flight, stuck in the hung append
    for i in range(25):
        score(service, user=f"b{i}", request_id=f"b{i}")
    assert not hang_over.is_set()  # all 25 answered while the first write still hung
    gate.set()
    service.close()
    stats = service.prediction_log.writer.stats
    assert stats.dropped == {"buffer_full": 15}
    assert stats.written == 11 and len(logged(log_container)) == 11
    assert dropped_points(reader) == {("churn", "buffer_full"): 15}
    log_container.delete_container()


def test_records_after_close_are_counted_not_lost_silently(telemetry):
    tel, reader = telemetry
    writer = BufferedLogWriter(lambda: None, telemetry=tel)
    writer.close()
    assert writer.enqueue(a_record("churn")) is False
    assert writer.stats.dropped == {"closed": 1}
    assert dropped_points(reader) == {("churn", "closed"): 1}


def test_instance_names_and_block_packing():
    assert instance_name({"WEBSITE_INSTANCE_ID": "ab12/../cd ef"}) == "ab12-..-cd-ef"
    assert instance_name({}).rsplit("-", 1)[1].isdigit()
    lines = [b"x" * 10 + b"\n"] * 7
    assert [n for _, n in pack_lines(lines, limit=33)] == [3, 3, 1]
    assert all(len(b) <= 33 for b, _ in pack_lines(lines, limit=33))
    assert hour_prefix("churn", 0) == "churn/1970/01/01/00"


def test_big_records_keep_predictions_and_drop_features(models, container, blob_service):
    log_container = blob_service.get_container_client(container.container_name + "log")
    writer = BufferedLogWriter(lambda: AppendTarget(log_container, "big"), flush_seconds=3600)
    features = np.random.default_rng(0).normal(size=(30_000, 8))
    writer.enqueue(a_record(request_id="big", rows=30_000, predictions=np.zeros(30_000),
                            features=features, feature_names=["a"] * 8))
    writer.close()
    (record,) = logged(log_container)
    assert record["features_omitted"] == "too_large" and "features" not in record
    assert len(record["predictions"]) == 30_000
    assert len(orjson.dumps(features, option=orjson.OPT_SERIALIZE_NUMPY)) > MAX_BLOCK_BYTES
    log_container.delete_container()


def test_close_does_not_hang_on_a_stuck_write_and_counts_what_it_gives_up(container, telemetry):
    tel, reader = telemetry
    gate, in_flight, hang_over = threading.Event(), threading.Event(), threading.Event()

    class Stuck(AppendTarget):  # the real container, whose write hangs until released
        def append(self, prefix, block):
            in_flight.set()
            gate.wait(30)
            hang_over.set()
            super().append(prefix, block)

    writer = BufferedLogWriter(lambda: Stuck(container, "stuck"), flush_seconds=0.05, telemetry=tel)
    for i in range(3):
        writer.enqueue(a_record(request_id=f"r{i}"))
    assert in_flight.wait(10)  # the three are in flight now
    for i in range(2):
        writer.enqueue(a_record(request_id=f"s{i}"))
    closer = threading.Thread(target=writer.close, kwargs={"timeout": 0.5})
    closer.start()
    closer.join(10)
    assert not closer.is_alive() and not hang_over.is_set()  # closed while the write still hung
    assert writer.stats.dropped == {"closed": 5}
    assert dropped_points(reader) == {("churn", "closed"): 5}
    gate.set()


def test_log_settings_are_validated_with_safe_defaults():
    from shared.errors import SettingsError

    s = Settings.from_env({})
    assert (s.prediction_log_container, s.outcome_log_container, s.prediction_log_flush_seconds,
            s.prediction_log_max_buffer, s.prediction_log_max_buffer_mb,
            s.prediction_log_connection) == ("predictions", "outcomes", 5.0, 10_000, 64,
                                             "AzureWebJobsStorage")
    for env in ({"PREDICTION_LOG_FLUSH_SECONDS": "0"}, {"PREDICTION_LOG_MAX_BUFFER": "-1"},
                {"PREDICTION_LOG_CONTAINER": "Bad_Name"}, {"OUTCOME_LOG_CONTAINER": "x"},
                {"PREDICTION_LOG_MAX_BUFFER_MB": "lots"}, {"PREDICTION_LOG_CONNECTION": "a b"}):
        with pytest.raises(SettingsError, match=next(iter(env))):
            Settings.from_env(env)


def test_a_routed_request_that_fails_through_no_fault_of_its_own_is_logged_as_a_failure(
        models, container, blob_service):
    # The candidate names a model that is not in storage: its requests fail (404 model_not_found)
    # after routing; a rollout must see them. A bad request is the caller's fault: not logged.
    log_container = blob_service.get_container_client(container.container_name + "log")
    config = json.loads(router_config({"sample": 1.0}))
    config["endpoints"]["churn"]["variants"][1]["model"] = "churn_missing"
    service = make_service(models, json.dumps(config), log_container)
    outcomes = {}
    for i in range(30):
        try:
            outcomes[f"req-{i}"] = score(service, user=f"u{i}", request_id=f"req-{i}").variant
        except ModelNotFound:
            outcomes[f"req-{i}"] = "failed"
    with pytest.raises(InvalidJson):
        service.score("churn", b"{not json", headers={"x-user-id": "u1"}, request_id="bad-body")
    service.close()
    by_id = {r["request_id"]: r for r in logged(log_container)}
    assert "bad-body" not in by_id
    failed = [rid for rid, how in outcomes.items() if how == "failed"]
    assert failed and len(failed) < 30  # both variants drew users
    for rid in failed:
        r = by_id[rid]
        assert r["error"] == "model_not_found" and r["variant"] == "candidate"
        assert r["rows"] == 0 and r["predictions"] is None and r["latency_ms"] > 0
        assert r["model"] == {"name": "churn_missing", "version": "?"}
        assert PredictionRecord.from_json(r).error == "model_not_found"
    assert all("error" not in by_id[rid] for rid in outcomes if rid not in failed)
    log_container.delete_container()
