"""Outcomes: validated (4xx with a code for every bad payload), appended to the outcome log
on a real Azurite, 503 when storage is down; the CSV the report accepts follows the same
rules."""

from __future__ import annotations

import time

import orjson
import pytest

from shared.ablog.blobs import AppendTarget, hour_prefix
from shared.ablog.outcomes import MAX_OUTCOMES, OutcomeLog
from shared.errors import ScoreError
from shared.models.blob_source import BlobSource
from shared.models.store import ModelStore
from shared.scoring.service import ScoringService
from shared.settings import Settings


def models_in(container) -> ModelStore:
    """A model store on a real container (outcomes never load a model)."""
    return ModelStore(BlobSource(container, 1 << 20), refresh_seconds=3600)


@pytest.fixture
def service(container):
    store = models_in(container)
    return ScoringService(Settings.from_env({}), store,
                          outcome_log=OutcomeLog(lambda: AppendTarget(container, "inst")))


def stored(container) -> list[dict]:
    out = []
    for blob in container.list_blobs():
        out += [orjson.loads(x) for x in container.download_blob(blob.name).readall().splitlines()]
    return out


def test_outcomes_are_appended_with_their_schema(service, container):
    body = {"outcomes": [{"request_id": "r-1", "label": 1},
                         {"key": "user-7", "label": 0, "time": "2026-01-02T03:04:05Z"},
                         {"key": 42, "label": 0.5, "row": 2, "time": "2026-01-02T03:04:05"}]}
    before = time.time()
    assert service.record_outcomes("churn", orjson.dumps(body)) == 3
    one = {"outcomes": [{"request_id": "r-2", "label": 0}]}
    assert service.record_outcomes("churn", orjson.dumps(one)) == 1
    records = stored(container)
    assert [b.name for b in container.list_blobs()] == [f"{hour_prefix('churn', time.time())}/inst.jsonl"]
    assert len(records) == 4
    first, second, third, fourth = records
    assert first["request_id"] == "r-1" and first["label"] == 1 and first["endpoint"] == "churn"
    assert first["time"] == first["received"]  # no time given: when it was received
    assert before - 1 <= _epoch(first["received"]) <= time.time() + 1
    assert second == {"time": "2026-01-02T03:04:05.000000Z", "received": second["received"],
                      "endpoint": "churn", "key": "user-7", "label": 0}
    assert third["key"] == "42" and third["row"] == 2 and third["time"] == second["time"]
    assert fourth["request_id"] == "r-2"


def _epoch(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text).timestamp()


BAD = [
    (b"{not json", 400, "invalid_json"),
    (b"[]", 400, "invalid_outcome"),
    (orjson.dumps({"outcome": []}), 400, "invalid_outcome"),
    (orjson.dumps({"outcomes": {}}), 400, "invalid_outcome"),
    (orjson.dumps({"outcomes": []}), 400, "empty_input"),
    (orjson.dumps({"outcomes": [{"label": 1}]}), 400, "invalid_outcome"),
    (orjson.dumps({"outcomes": [{"request_id": "a", "key": "b", "label": 1}]}), 400, "invalid_outcome"),
    (orjson.dumps({"outcomes": [{"request_id": "a"}]}), 400, "invalid_outcome"),
    (orjson.dumps({"outcomes": [{"request_id": "a", "label": "1"}]}), 400, "invalid_outcome"),
    (orjson.dumps({"outcomes": [{"request_id": "a", "label": True}]}), 400, "invalid_outcome"),
    (orjson.dumps({"outcomes": [{"request_id": "a", "label": None}]}), 400, "invalid_outcome"),
    (b'{"outcomes": [{"request_id": "a", "label": 1e999}]}', 400, "invalid_json"),
    (orjson.dumps({"outcomes": [{"request_id": "x" * 129, "label": 1}]}), 400, "invalid_outcome"),
    (orjson.dumps({"outcomes": [{"request_id": "", "label": 1}]}), 400, "invalid_outcome"),
    (orjson.dumps({"outcomes": [{"request_id": 7, "label": 1}]}), 400, "invalid_outcome"),
    (orjson.dumps({"outcomes": [{"key": "a\nb", "label": 1}]}), 400, "invalid_outcome"),
    (orjson.dumps({"outcomes": [{"key": "a", "label": 1, "time": "yesterday"}]}), 400, "invalid_outcome"),
    (orjson.dumps({"outcomes": [{"key": "a", "label": 1, "time": "2999-01-01T00:00:00Z"}]}), 400,
     "invalid_outcome"),
    (orjson.dumps({"outcomes": [{"key": "a", "label": 1, "row": -1}]}), 400, "invalid_outcome"),
    (orjson.dumps({"outcomes": [{"key": "a", "label": 1, "colour": "red"}]}), 400, "invalid_outcome"),
    (orjson.dumps({"outcomes": [{"request_id": "a", "label": 1}] * (MAX_OUTCOMES + 1)}), 413,
     "too_many_outcomes"),
]


@pytest.mark.parametrize("body,status,code", BAD, ids=[c + str(i) for i, (_, _, c) in enumerate(BAD)])
def test_bad_payloads_are_4xx_with_a_code(service, container, body, status, code):
    with pytest.raises(ScoreError) as caught:
        service.record_outcomes("churn", body)
    assert (caught.value.status, caught.value.code) == (status, code)
    assert not list(container.list_blobs())


def test_the_body_size_and_type_and_endpoint_name_are_checked(service):
    settings = Settings.from_env({"MAX_REQUEST_BYTES": "2048"})
    small = ScoringService(settings, service.store, outcome_log=service.outcome_log)
    big = orjson.dumps({"outcomes": [{"request_id": f"r{i}", "label": 1} for i in range(200)]})
    for svc, endpoint, body, ctype, code in (
            (small, "churn", big, None, "payload_too_large"),
            (service, "churn", b'{"outcomes": []}', "text/csv", "unsupported_media_type"),
            (service, "../etc", b'{"outcomes": [{"key": "a", "label": 1}]}', None, "invalid_name")):
        with pytest.raises(ScoreError) as caught:
            svc.record_outcomes(endpoint, body, content_type=ctype)
        assert caught.value.code == code and 400 <= caught.value.status < 500


def test_storage_down_is_a_503_the_caller_can_retry(container):
    from tests.ablog.test_predictions import dead_storage_target

    target = dead_storage_target()
    svc = ScoringService(Settings.from_env({}), models_in(container),
                         outcome_log=OutcomeLog(lambda: target))
    with pytest.raises(ScoreError) as caught:
        svc.record_outcomes("churn", b'{"outcomes": [{"key": "a", "label": 1}]}')
    assert (caught.value.status, caught.value.code) == (503, "outcome_log_unavailable")


def test_the_report_reads_outcomes_from_csv_with_the_same_rules(tmp_path):
    from shared.ablog.dataset import read_outcomes_csv

    good = tmp_path / "good.csv"
    good.write_text("request_id,key,label,time,row\nr1,,1,,\n,u2,0,2026-01-01T00:00:00Z,\n,u3,1,,3\n")
    rows = read_outcomes_csv(good, now=1e10)
    assert [(r.get("request_id"), r.get("key"), r["label"], r.get("row")) for r in rows] == [
        ("r1", None, 1, None), (None, "u2", 0, None), (None, "u3", 1, 3)]
    assert rows[1]["time"] == 1767225600.0 and rows[0]["time"] == 1e10
    bad = tmp_path / "bad.csv"
    bad.write_text("request_id,label\nr1,1\nr2,yes\n")
    with pytest.raises(ValueError, match="line 3"):
        read_outcomes_csv(bad)
    header = tmp_path / "header.csv"
    header.write_text("id,label\nr1,1\n")
    with pytest.raises(ValueError, match="header"):
        read_outcomes_csv(header)
