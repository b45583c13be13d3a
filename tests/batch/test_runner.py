"""Batch jobs through the shared core (``BatchJobs.handle``) on real Azurite blobs and queues:
exact predictions, chunking, idempotent redelivery, crash recovery, and one ``failed`` result
for every bad message."""

from __future__ import annotations

import dataclasses

import numpy as np
import orjson
import pytest
from azure.core.exceptions import AzureError

import shared.batch.units as units_module
from shared.batch.records import Claim, JobRecords
from shared.batch.results import ResultQueue
from shared.batch.runner import BatchJobs
from shared.errors import JobBusy, ModelUnavailable
from shared.models.blob_source import BlobSource
from shared.models.store import ModelStore
from shared.scoring.service import ScoringService
from shared.settings import StorageConnection
from shared.storage import blob_service
from tests.batch_support import make_rig, read_csv, reference, rig, sample, to_csv, to_jsonl, unique  # noqa: F401

CHURN = ("tenure_months", "monthly_charges", "support_calls", "contract_months", "age",
         "usage_gb", "late_payments", "discount_pct")


def json_rows(X):
    return [[None if np.isnan(v) else float(v) for v in row] for row in X]


def with_settings(rig, **changes) -> BatchJobs:
    """The rig's runner with other settings (same service, storage and lease length)."""
    return BatchJobs(dataclasses.replace(rig.settings, **changes), rig.jobs.service, rig.blobs,
                     rig.queues)


def blob_job(job_id, blob="inputs/in.csv", **extra):
    return {"id": job_id, "endpoint": extra.pop("endpoint", "churn"), "input": {"blob": blob},
            **extra}


# -- inline --------------------------------------------------------------------------------

def test_inline_rows_equal_booster_predict(rig, demo_models):
    X = sample(8, 40)
    outcome = rig.run({"id": "job-rows", "endpoint": "churn", "rows": json_rows(X)})
    [result] = rig.sent_results()
    assert outcome.status == result["status"] == "succeeded" and outcome.scored
    assert result["id"] == "job-rows" and result["rows"] == 40 and "id_generated" not in result
    assert result["model"]["name"] == "churn" and result["model"]["version"]
    assert result["error"] is None and result["elapsed_ms"] > 0 and result["rows_per_second"] > 0
    assert np.array_equal(np.array(result["predictions"]), reference(demo_models, "churn", X))


def test_inline_records_and_options(rig, demo_models):
    X = sample(6, 25, seed=2)
    names = demo_models["price"].feature_names
    records = [{f: float(v) for f, v in zip(names, row) if not np.isnan(v)} for row in X]
    rig.run({"id": "job-rec", "endpoint": "price", "records": records,
             "options": {"raw_score": True}})
    [result] = rig.sent_results()
    assert np.array_equal(np.array(result["predictions"]),
                          reference(demo_models, "price", X, raw_score=True))


def test_inline_predictions_too_large_for_a_message_go_to_a_blob(rig, demo_models):
    from shared.batch.messages import MAX_MESSAGE_BYTES

    X = np.random.default_rng(5).integers(0, 99, size=(3000, 4)).astype(float)
    message = orjson.dumps({"id": "job-big", "endpoint": "segment", "rows": X.astype(int).tolist()})
    assert len(message) < MAX_MESSAGE_BYTES
    rig.run(message)
    [result] = rig.sent_results()
    assert "predictions" not in result and result["rows"] == 3000
    assert (result["output_container"], result["output_blob"]) == \
        (rig.settings.batch_container, "results/job-big.json")
    stored = orjson.loads(rig.download("results/job-big.json"))
    assert stored["id"] == "job-big"
    assert np.array_equal(np.array(stored["predictions"]), reference(demo_models, "segment", X))


# -- blobs ---------------------------------------------------------------------------------

def test_csv_job_keeps_input_order_ids_and_exact_predictions(rig, demo_models):
    X = sample(8, 500, seed=3)
    X[:, 4] = np.nan  # "age" has no column: missing for every row
    order = [7, 0, 3, 1, 6, 2, 5]
    ids = [f"C{i:05d}" for i in range(500)][::-1]  # not sorted: order must be kept, not sorted
    rig.upload("inputs/in.csv", to_csv(X[:, order], [CHURN[j] for j in order], ids, "customer_id",
                                       id_position=3))
    outcome = rig.run(blob_job("job-csv", id_column="customer_id"))
    header, rows = read_csv(rig.download("predictions/job-csv.csv"))
    assert header == ["customer_id", "prediction"]
    assert [r[0] for r in rows] == ids
    assert np.array_equal(np.array([float(r[1]) for r in rows]), reference(demo_models, "churn", X))
    [result] = rig.sent_results()
    assert result == outcome.result
    assert (result["rows"], result["output_blob"]) == (500, "predictions/job-csv.csv")
    meta = rig.blobs.get_blob_client(rig.settings.batch_container,
                                     "predictions/job-csv.csv").get_blob_properties().metadata
    assert meta["scorefn_job_id"] == "job-csv"
    assert meta["scorefn_model_version"] == result["model"]["version"]


def test_jsonl_job_with_ids_of_any_type(rig, demo_models):
    X = sample(8, 120, seed=4)
    ids = [i * 3 if i % 2 else f"k{i}" for i in range(120)]
    rig.upload("inputs/in.jsonl", to_jsonl(X, CHURN, ids, "key"))
    rig.run(blob_job("job-jsonl", "inputs/in.jsonl", id_column="key"))
    lines = [orjson.loads(x) for x in rig.download("predictions/job-jsonl.jsonl").splitlines()]
    assert [x["key"] for x in lines] == ids
    assert np.array_equal(np.array([x["prediction"] for x in lines]),
                          reference(demo_models, "churn", X))


@pytest.mark.parametrize("out_format", ["csv", "jsonl"])
def test_multiclass_output_is_a_column_per_class_or_a_list(rig, demo_models, out_format):
    names = demo_models["segment"].feature_names
    X = sample(4, 60, seed=6)
    rig.upload("inputs/seg.csv", to_csv(X, names, [str(i) for i in range(60)], "id"))
    rig.run(blob_job("job-seg", "inputs/seg.csv", endpoint="segment", id_column="id",
                     output={"format": out_format}))
    data = rig.download(f"predictions/job-seg.{out_format}")
    expected = reference(demo_models, "segment", X)
    if out_format == "csv":
        header, rows = read_csv(data)
        assert header == ["id", "p0", "p1", "p2"]
        got = np.array([[float(v) for v in r[1:]] for r in rows])
    else:
        docs = [orjson.loads(x) for x in data.splitlines()]
        assert docs[0]["id"] == "0"
        got = np.array([d["prediction"] for d in docs])
    assert np.array_equal(got, expected)


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_many_small_chunks_give_the_same_output_as_one(rig, demo_models, fmt):
    X = sample(8, 300, seed=7)
    ids = [f"r{i}" for i in range(300)]
    data = to_csv(X, CHURN, ids, "cid") if fmt == "csv" else to_jsonl(X, CHURN, ids, "cid")
    rig.upload(f"inputs/in.{fmt}", data)
    outputs = []
    for chunk_rows, job_id in ((7, "job-small"), (50_000, "job-one")):
        with_settings(rig, batch_chunk_rows=chunk_rows).handle(
            orjson.dumps(blob_job(job_id, f"inputs/in.{fmt}", id_column="cid")), message_id=job_id)
        blob = rig.blobs.get_blob_client(rig.settings.batch_container, f"predictions/{job_id}.{fmt}")
        outputs.append(blob.download_blob().readall())
        committed, _ = blob.get_block_list("committed")
        assert len(committed) == (43 if chunk_rows == 7 else 1)
    assert outputs[0] == outputs[1]


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_small_units_are_predicted_and_each_chunk_is_staged_as_one_block(rig, demo_models,
                                                                        monkeypatch, fmt):
    X = sample(8, 1010, seed=11)
    ids = [f"r{i}" for i in range(1010)]
    data = to_csv(X, CHURN, ids, "cid") if fmt == "csv" else to_jsonl(X, CHURN, ids, "cid")
    rig.upload(f"inputs/units.{fmt}", data)
    real_predict, calls = units_module.predict, []

    def counting_predict(model, request, **kwargs):
        calls.append(request.X.shape[0])
        return real_predict(model, request, **kwargs)

    monkeypatch.setattr(units_module, "predict", counting_predict)
    jobs = with_settings(rig, batch_chunk_rows=100)
    outputs = {}
    for job_id, unit_rows, first_unit_rows in (("job-units", 16, 5), ("job-whole", 100, 100)):
        monkeypatch.setattr(units_module, "UNIT_ROWS", unit_rows)
        monkeypatch.setattr(units_module, "FIRST_UNIT_ROWS", first_unit_rows)
        calls.clear()
        jobs.handle(orjson.dumps(blob_job(job_id, f"inputs/units.{fmt}", id_column="cid")),
                    message_id=job_id)
        blob = rig.blobs.get_blob_client(rig.settings.batch_container,
                                         f"predictions/{job_id}.{fmt}")
        body = outputs[job_id] = blob.download_blob().readall()
        committed, _ = blob.get_block_list("committed")
        ends = [0, *np.cumsum([b.size for b in committed])]
        lines = [body[a:b].count(b"\n") for a, b in zip(ends, ends[1:])]
        header = 1 if fmt == "csv" else 0
        assert lines == [100 + header] + [100] * 9 + [10]  # blocks of BATCH_CHUNK_ROWS rows
        assert sum(calls) == 1010 and max(calls) <= unit_rows and calls[0] == first_unit_rows
    assert len(calls) == 11  # one unit per block
    assert outputs["job-units"] == outputs["job-whole"]
    if fmt == "csv":
        got = np.array([float(r[1]) for r in read_csv(outputs["job-units"])[1]])
    else:
        got = np.array([orjson.loads(x)["prediction"] for x in outputs["job-units"].splitlines()])
    assert np.array_equal(got, reference(demo_models, "churn", X))


def test_an_empty_input_gives_a_header_only_output(rig):
    rig.upload("inputs/in.csv", ("cid," + ",".join(CHURN) + "\n").encode())
    outcome = rig.run(blob_job("job-empty", id_column="cid"))
    assert outcome.status == "succeeded" and outcome.result["rows"] == 0
    assert rig.download("predictions/job-empty.csv") == b"cid,prediction\n"


# -- exactly once --------------------------------------------------------------------------

def test_a_redelivered_or_repeated_message_is_acknowledged_without_scoring(rig):
    rig.upload("inputs/in.csv", to_csv(sample(8, 50), CHURN))
    message = blob_job("job-twice")
    first = rig.run(message, message_id="m-1")
    etag = rig.blobs.get_blob_client(rig.settings.batch_container,
                                     "predictions/job-twice.csv").get_blob_properties().etag
    again = rig.run(message, message_id="m-1", dequeue_count=2)  # redelivery
    resent = rig.run(message, message_id="m-2")  # the caller sent it twice
    assert (first.status, first.scored) == ("succeeded", True)
    assert [o.status for o in (again, resent)] == ["duplicate", "duplicate"]
    assert not again.scored and not resent.scored
    assert len(rig.sent_results()) == 1
    assert rig.blobs.get_blob_client(rig.settings.batch_container,
                                     "predictions/job-twice.csv").get_blob_properties().etag == etag


def test_inline_jobs_are_idempotent_too(rig):
    message = {"id": "job-inline", "endpoint": "price", "rows": [[1, 2, 3, 4, 5, 6]]}
    assert rig.run(message).status == "succeeded"
    assert rig.run(message, dequeue_count=2).status == "duplicate"
    assert len(rig.sent_results()) == 1


def test_a_job_without_id_gets_one_that_redeliveries_share(rig):
    message = {"endpoint": "price", "rows": [[1, 2, 3, 4, 5, 6]]}
    first = rig.run(message, message_id="0b5e-41")
    assert rig.run(message, message_id="0b5e-41", dequeue_count=2).status == "duplicate"
    [result] = rig.sent_results()
    assert result["id"] == first.job_id == "msg-0b5e-41" and result["id_generated"] is True


def test_a_crash_mid_job_is_completed_by_the_next_delivery(rig, demo_models, monkeypatch):
    X = sample(8, 400, seed=8)
    rig.upload("inputs/in.csv", to_csv(X, CHURN))
    jobs = with_settings(rig, batch_chunk_rows=50)
    real_predict, calls = units_module.predict, []

    def dying_predict(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("worker died")
        return real_predict(*args, **kwargs)

    monkeypatch.setattr(units_module, "predict", dying_predict)
    message = orjson.dumps(blob_job("job-crash"))
    with pytest.raises(RuntimeError):
        jobs.handle(message, message_id="m-1")
    out = rig.blobs.get_blob_client(rig.settings.batch_container, "predictions/job-crash.csv")
    assert not out.exists() and rig.sent_results() == []
    assert len(out.get_block_list("uncommitted")[1]) == 2  # staged, never committed
    monkeypatch.setattr(units_module, "predict", real_predict)
    outcome = jobs.handle(message, message_id="m-1", dequeue_count=2)
    assert outcome.status == "succeeded" and outcome.result["rows"] == 400
    _, rows = read_csv(out.download_blob().readall())
    assert np.array_equal(np.array([float(r[0]) for r in rows]), reference(demo_models, "churn", X))
    assert len(out.get_block_list("committed")[0]) == 8
    assert len(rig.sent_results()) == 1


def test_a_crash_after_commit_does_not_score_again(rig, monkeypatch):
    rig.upload("inputs/in.csv", to_csv(sample(8, 30), CHURN))
    real_commit = Claim.commit

    def crash(self, result):
        raise ConnectionError("died after committing the output")

    monkeypatch.setattr(Claim, "commit", crash)
    with pytest.raises(ConnectionError):
        rig.run(blob_job("job-commit"))
    assert rig.exists("predictions/job-commit.csv") and rig.sent_results() == []
    monkeypatch.setattr(Claim, "commit", real_commit)
    outcome = rig.run(blob_job("job-commit"), dequeue_count=2)
    assert (outcome.status, outcome.scored) == ("succeeded", False)
    [result] = rig.sent_results()
    assert result["rows"] == 30 and result["model"]["name"] == "churn"


def test_a_crash_before_the_result_is_sent_sends_it_once_later(rig, monkeypatch):
    rig.upload("inputs/in.csv", to_csv(sample(8, 30), CHURN))
    real_send = ResultQueue.send

    def crash(self, result):
        raise ConnectionError("died before sending the result")

    monkeypatch.setattr(ResultQueue, "send", crash)
    with pytest.raises(ConnectionError):
        rig.run(blob_job("job-send"))
    assert rig.jobs.records.read("job-send")["state"] == "committed"
    monkeypatch.setattr(ResultQueue, "send", real_send)
    outcome = rig.run(blob_job("job-send"), dequeue_count=2)
    assert (outcome.status, outcome.scored) == ("succeeded", False)
    assert rig.run(blob_job("job-send"), dequeue_count=3).status == "duplicate"
    assert [r["id"] for r in rig.sent_results()] == ["job-send"]
    assert rig.jobs.records.read("job-send")["state"] == "done"


def test_a_job_leased_by_a_live_worker_is_waited_for(rig):
    """Another delivery holds the job's lease: a duplicate message is acknowledged, the same
    message (its visibility lapsed) fails for a later retry."""
    holder = rig.jobs.records.claim("job-held", message_id="m-holder", digest="x")
    now = [0.0]
    rig.jobs.records = JobRecords(rig.batch, clock=lambda: now[0],
                                  sleep=lambda s: now.__setitem__(0, now[0] + s))
    try:
        message = {"id": "job-held", "endpoint": "price", "rows": [[1, 2, 3, 4, 5, 6]]}
        assert rig.run(message, message_id="m-other").status == "duplicate"
        with pytest.raises(JobBusy):
            rig.run(message, message_id="m-holder", dequeue_count=2)
        assert rig.sent_results() == []
    finally:
        holder.release()
    assert rig.run(message, message_id="m-holder", dequeue_count=3).status == "succeeded"


# -- job ids: one id, one job ---------------------------------------------------------------

def test_an_id_reused_by_a_different_job_fails_that_message_and_leaves_the_job_alone(rig):
    first = {"id": "job-reuse", "endpoint": "price", "rows": [[1, 2, 3, 4, 5, 6]]}
    assert rig.run(first, message_id="m-1").status == "succeeded"
    record = rig.jobs.records.read("job-reuse")
    outcome = rig.run({**first, "rows": [[6, 5, 4, 3, 2, 1]]}, message_id="m-2")
    assert (outcome.status, outcome.scored) == ("failed", False)
    error = outcome.result["error"]
    assert error["code"] == "job_id_reused" and "'job-reuse'" in error["message"]
    assert "new id" in error["message"]
    assert [r["status"] for r in rig.sent_results()] == ["succeeded", "failed"]
    assert rig.sent_results()[1] == outcome.result and "predictions" not in outcome.result
    assert rig.jobs.records.read("job-reuse") == record  # the first job's record is untouched
    # The first job's message again (redelivered, sent twice, or with its fields in another
    # order) is the same job: acknowledged, its result stands.
    assert rig.run(first, message_id="m-1", dequeue_count=2).status == "duplicate"
    assert rig.run(orjson.dumps({"rows": [[1, 2, 3, 4, 5, 6]], "id": "job-reuse",
                                 "endpoint": "price"}), message_id="m-3").status == "duplicate"
    assert len(rig.sent_results()) == 2


def test_a_blob_job_id_reused_with_another_input_fails_and_keeps_the_first_output(rig):
    rig.upload("inputs/a.csv", to_csv(sample(8, 20, seed=1), CHURN))
    rig.upload("inputs/b.csv", to_csv(sample(8, 30, seed=2), CHURN))
    assert rig.run(blob_job("job-blob-reuse", "inputs/a.csv")).status == "succeeded"
    out = rig.blobs.get_blob_client(rig.settings.batch_container, "predictions/job-blob-reuse.csv")
    etag = out.get_blob_properties().etag
    outcome = rig.run(blob_job("job-blob-reuse", "inputs/b.csv"), message_id="m-2")
    assert outcome.status == "failed" and outcome.result["error"]["code"] == "job_id_reused"
    assert outcome.result["output_blob"] is None and outcome.result["rows"] == 0
    assert out.get_blob_properties().etag == etag


def test_a_different_job_under_the_id_of_a_running_job_fails_without_waiting(rig):
    from shared.batch.messages import job_digest

    running = {"id": "job-running", "endpoint": "price", "rows": [[1, 2, 3, 4, 5, 6]]}
    holder = rig.jobs.records.claim("job-running", message_id="m-holder", digest="x",
                                    job_digest=job_digest(running))
    waited = []
    rig.jobs.records = JobRecords(rig.batch, sleep=waited.append)
    try:
        outcome = rig.run({**running, "options": {"raw_score": True}}, message_id="m-other")
        assert outcome.result["error"]["code"] == "job_id_reused" and waited == []
        assert "now running" in outcome.result["error"]["message"]
    finally:
        holder.release()
    assert rig.jobs.records.read("job-running")["message_id"] == "m-holder"
    assert rig.run(running, message_id="m-holder", dequeue_count=2).status == "succeeded"


def test_a_poisoned_copy_of_a_reusing_message_fails_it_and_not_the_job(rig):
    first = {"id": "job-p", "endpoint": "price", "rows": [[1, 2, 3, 4, 5, 6]]}
    assert rig.run(first).status == "succeeded"
    record = rig.jobs.records.read("job-p")
    outcome = rig.jobs.handle_poison(orjson.dumps({**first, "key": "tenant-2"}), message_id="m-9")
    assert outcome.status == "failed" and outcome.result["error"]["code"] == "job_id_reused"
    assert rig.jobs.records.read("job-p") == record
    assert rig.jobs.handle_poison(orjson.dumps(first), message_id="m-1").status == "duplicate"


def test_a_record_from_before_job_digests_keeps_acknowledging(rig):
    """Records written before this rule have no job digest: a different message is only
    logged, as before (nothing to compare it with)."""
    claim = rig.jobs.records.claim("job-old", message_id="m-old", digest="x")
    claim.commit({"id": "job-old", "status": "succeeded"})
    claim.mark_done()
    claim.release()
    assert "job_sha256" not in rig.jobs.records.read("job-old")
    message = {"id": "job-old", "endpoint": "price", "rows": [[1, 2, 3, 4, 5, 6]]}
    assert rig.run(message, message_id="m-new").status == "duplicate"


# -- failures ------------------------------------------------------------------------------

BAD = {
    "not_json": (b"{oops", "invalid_json"),
    "not_an_object": (b"[1, 2]", "invalid_message"),
    "wrong_schema": ({"id": "bad", "endpoint": "churn"}, "invalid_message"),
    "bad_job_id": ({"id": "no spaces please", "endpoint": "churn", "rows": [[1]]}, "invalid_job_id"),
    "unknown_model": ({"id": "bad", "endpoint": "nope", "rows": [[1]]}, "model_not_found"),
    "invalid_model": ({"id": "bad", "endpoint": "broken", "rows": [[1]]}, "invalid_model"),
    "bad_rows": ({"id": "bad", "endpoint": "churn", "rows": [[1, 2]]}, "wrong_row_width"),
    "message_too_large": (orjson.dumps({"rows": [[1.25] * 8] * 3000}), "message_too_large"),
    "missing_input": (blob_job("bad", "inputs/none.csv"), "input_not_found"),
    "bad_csv_value": (blob_job("bad", "inputs/bad.csv"), "non_numeric_value"),
    "unknown_column": (blob_job("bad", "inputs/extra.csv"), "unknown_column"),
    "line_too_long": (blob_job("bad", "inputs/long.csv"), "invalid_csv"),
    "jsonl_line_too_long": (blob_job("bad", "inputs/long.jsonl"), "invalid_json"),
    "input_too_large": (blob_job("bad", "inputs/big.csv"), "input_too_large"),
    "no_output_container": (blob_job("bad", "inputs/ok.csv",  # allowed, but never created
                                     output={"blob": "x.csv", "container": "nowhere"}),
                            "output_container_not_found"),
    "output_container_not_allowed": (blob_job("bad", "inputs/ok.csv",
                                              output={"blob": "x.csv", "container": "elsewhere"}),
                                     "container_not_allowed"),
    "input_container_not_allowed": ({"id": "bad", "endpoint": "churn",
                                      "input": {"blob": "ok.csv", "container": "elsewhere"}},
                                     "container_not_allowed"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_message_fails_once_with_its_code_and_no_output(rig, case, caplog):
    message, code = BAD[case]
    rig.blobs.get_blob_client(rig.settings.model_container, "broken.txt").upload_blob(b"not a model")
    rig.upload("inputs/ok.csv", to_csv(sample(8, 5), CHURN))
    rig.upload("inputs/bad.csv", b"tenure_months,age\n1,2\n3,abc\n")
    rig.upload("inputs/extra.csv", b"tenure_months,shoe_size\n1,2\n")
    rig.upload("inputs/long.csv", b"tenure_months,age\n1,2\n1," + b" " * 120_000 + b"2\n")  # valid
    rig.upload("inputs/long.jsonl", b'{"age": 1}\n{"age":' + b" " * 300_000 + b"1}\n")  # valid
    rig.upload("inputs/big.csv", to_csv(sample(8, 9000), CHURN))  # > 1 MiB
    jobs = with_settings(rig, batch_max_input_mb=1, batch_allowed_containers=("nowhere",))
    with caplog.at_level("INFO", logger="scorefn.batch"):
        body = message if isinstance(message, bytes) else orjson.dumps(message)
        outcome = jobs.handle(body, message_id="m-bad")  # returns: the message is deleted
        again = jobs.handle(body, message_id="m-bad", dequeue_count=2)
    assert outcome.status == "failed" and again.status == "duplicate"
    [result] = rig.sent_results()
    assert result["status"] == "failed" and result["error"]["code"] == code
    assert result["id"] == outcome.job_id and result["rows"] == 0 and result["output_blob"] is None
    assert not rig.exists("predictions/bad.csv") and not rig.exists("x.csv")
    # One line from the job (the model store also logs a model it could not load).
    failures = [r for r in caplog.records if r.levelname == "WARNING" and r.name == "scorefn.batch"]
    assert len(failures) == 1 and code in failures[0].getMessage()
    assert "abc" not in caplog.text and "1.25" not in caplog.text  # never the payload


def test_unreachable_model_storage_raises_so_the_host_retries(rig, demo_models):
    dead = blob_service(StorageConnection("dead", connection_string=(
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;"
        "BlobEndpoint=http://127.0.0.1:9/devstoreaccount1;")), timeout=2)
    store = ModelStore(BlobSource(dead.get_container_client("models"), 1 << 20))
    jobs = BatchJobs(rig.settings, ScoringService(rig.settings, store), rig.blobs, rig.queues)
    message = orjson.dumps({"id": "job-t", "endpoint": "churn", "rows": [[1] * 8]})
    with pytest.raises(ModelUnavailable):
        jobs.handle(message, message_id="m-t")
    assert rig.sent_results() == []
    record = rig.jobs.records.blob("job-t").get_blob_properties()
    assert record.lease.state == "available"  # released: the retry need not wait
    assert rig.run(message, message_id="m-t", dequeue_count=2).status == "succeeded"


def test_unreachable_batch_storage_raises(rig):
    dead = blob_service(StorageConnection("dead", connection_string=(
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;"
        "BlobEndpoint=http://127.0.0.1:9/devstoreaccount1;")), timeout=2)
    jobs = BatchJobs(rig.settings, rig.jobs.service, dead, rig.queues)
    with pytest.raises(AzureError):
        jobs.handle(orjson.dumps({"id": "job-u", "endpoint": "churn", "rows": [[1] * 8]}))
    assert rig.sent_results() == []


def test_the_results_queue_and_batch_container_are_created_on_first_use(azurite, demo_models):
    from tests.batch_support import make_rig

    fresh = make_rig(azurite, demo_models, {"BATCH_CONTAINER": unique("nb"),
                                            "RESULTS_QUEUE_NAME": unique("nr")})
    try:
        assert not fresh.batch.exists()
        assert fresh.run({"id": "j", "endpoint": "price", "rows": [[1] * 6]}).status == "succeeded"
        assert fresh.batch.exists() and len(fresh.sent_results()) == 1
    finally:
        fresh.cleanup()


def test_the_queue_function_binds_the_job_queue_setting(app_functions):
    [trigger] = [f.get_trigger() for f in app_functions if f.get_function_name() == "score_job"]
    assert trigger.get_binding_name() == "queueTrigger"
    assert (trigger.queue_name, trigger.connection) == ("%SCORE_QUEUE_NAME%", "AzureWebJobsStorage")


def test_a_whole_job_gets_one_variant_routed_by_its_key_or_id(azurite, demo_models):
    from shared.router import RouterConfigSource, RouterHolder

    rig = make_rig(azurite, demo_models, models=("churn", "churn_v1"))
    try:
        config = ('{"endpoints": {"churn": {"variants": [{"name": "control", "model": "churn_v1"},'
                  ' {"name": "candidate", "model": "churn"}]}}}')
        rig.jobs.service.routing = RouterHolder(RouterConfigSource(inline=config))
        expected = {}
        for i in range(12):
            route = rig.jobs.service.route("churn", key=f"user-{i}")
            expected[f"user-{i}"] = route
            X = sample(8, 3, seed=i)
            rig.run({"id": f"job-k{i}", "key": f"user-{i}", "endpoint": "churn", "rows": json_rows(X)},
                    message_id=f"m-k{i}")
        results = {r["id"]: r for r in rig.sent_results()}
        variants = set()
        for i in range(12):
            result, route = results[f"job-k{i}"], expected[f"user-{i}"]
            assert result["variant"] == route.variant  # the same key always gets the same variant
            assert result["model"]["name"] == route.model
            assert np.array_equal(np.array(result["predictions"]),
                                  reference(demo_models, route.model, sample(8, 3, seed=i)))
            variants.add(result["variant"])
        assert variants == {"control", "candidate"}
    finally:
        rig.cleanup()


def test_inline_jobs_are_in_the_prediction_log_like_requests(azurite, demo_models):
    from shared.ablog.blobs import AppendTarget
    from shared.ablog.predictions import PredictionLog
    from shared.ablog.writer import BufferedLogWriter
    from shared.router import RouterConfigSource, RouterHolder

    rig = make_rig(azurite, demo_models, models=("churn", "churn_v1"))
    log_container = rig.blobs.get_container_client(rig.settings.batch_container + "log")
    rig.created.append(("container", log_container.container_name))
    try:
        config = ('{"endpoints": {"churn": {"variants": [{"name": "control", "model": "churn_v1"},'
                  ' {"name": "candidate", "model": "churn"}], "log": {"sample": 1.0}}}}')
        service = rig.jobs.service
        service.routing = RouterHolder(RouterConfigSource(inline=config))
        service.prediction_log = PredictionLog(BufferedLogWriter(
            lambda: AppendTarget(log_container, "test-instance"), flush_seconds=3600))
        for i in range(3):
            rig.run({"id": f"job-log{i}", "key": f"user-{i}", "endpoint": "churn",
                     "rows": json_rows(sample(8, 2, seed=i))}, message_id=f"m-log{i}")
        service.prediction_log.close()
        records = {}
        for blob in log_container.list_blobs():
            for line in log_container.download_blob(blob.name).readall().splitlines():
                record = orjson.loads(line)
                records[record["request_id"]] = record
        results = {r["id"]: r for r in rig.sent_results()}
        assert sorted(records) == ["job-log0", "job-log1", "job-log2"]
        for i in range(3):
            record, result = records[f"job-log{i}"], results[f"job-log{i}"]
            assert record["trigger"] == "queue" and record["key"] == f"user-{i}"
            assert record["variant"] == result["variant"] and record["rows"] == 2
            assert record["predictions"] == result["predictions"]
    finally:
        rig.cleanup()


# -- a job message that failed on every delivery (moved to <queue>-poison by the host) --------

def test_a_poisoned_job_message_sends_the_jobs_one_failed_result(rig):
    body = orjson.dumps({"id": "job-poisoned", "endpoint": "churn", "rows": [[1] * 8]})
    outcome = rig.jobs.handle_poison(body, message_id="poison-copy")
    assert outcome.status == "failed"
    [result] = rig.sent_results()
    assert result["id"] == "job-poisoned" and result["status"] == "failed"
    assert result["error"]["code"] == "job_failed" and "-poison" in result["error"]["message"]
    # The poison message delivered again, or the original finally succeeding: nothing more.
    assert rig.jobs.handle_poison(body, message_id="poison-copy").status == "duplicate"
    assert rig.jobs.handle(body, message_id="late", dequeue_count=6).status == "duplicate"
    assert len(rig.sent_results()) == 1


def test_a_job_that_finished_before_its_message_was_poisoned_gets_no_second_result(rig):
    body = orjson.dumps({"id": "job-done", "endpoint": "churn", "rows": [[1] * 8]})
    assert rig.run(body).status == "succeeded"
    assert rig.jobs.handle_poison(body, message_id="poison-copy").status == "duplicate"
    assert [r["status"] for r in rig.sent_results()] == ["succeeded"]


def test_a_poisoned_job_without_an_id_still_gets_a_result_under_a_new_generated_id(rig):
    body = orjson.dumps({"endpoint": "churn", "rows": [[1] * 8]})
    assert rig.jobs.handle_poison(body, message_id="poison-copy").status == "failed"
    [result] = rig.sent_results()
    assert result["id_generated"] is True and result["error"]["code"] == "job_failed"


def test_the_job_poison_function_binds_the_job_queues_poison_queue(app_functions):
    [trigger] = [f.get_trigger() for f in app_functions if f.get_function_name() == "job_poisoned"]
    assert (trigger.queue_name, trigger.connection) == ("%SCORE_QUEUE_NAME%-poison",
                                                       "AzureWebJobsStorage")


# -- metrics -------------------------------------------------------------------------------

def test_a_failed_job_is_measured_with_its_code_and_the_model_it_was_routed_to(rig, monkeypatch):
    from tests.batch_support import metered

    jobs, durations = metered(rig)
    rig.upload("inputs/bad.csv", b"tenure_months,age\n1,2\n3,abc\n")
    assert jobs.handle(orjson.dumps(blob_job("m-bad", "inputs/bad.csv")), message_id="m1") \
        .status == "failed"
    # A retried (transient) failure and a bug are measured too, before the queue retries.
    monkeypatch.setattr(jobs.blob_jobs, "run", lambda *a: (_ for _ in ()).throw(
        ModelUnavailable("storage is down")))
    with pytest.raises(ModelUnavailable):
        jobs.handle(orjson.dumps(blob_job("m-down", "inputs/bad.csv")), message_id="m2")
    monkeypatch.setattr(jobs.blob_jobs, "run", lambda *a: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        jobs.handle(orjson.dumps(blob_job("m-bug", "inputs/bad.csv")), message_id="m3")
    by_outcome = {p["outcome"]: p for p in durations()}
    assert set(by_outcome) == {"non_numeric_value", "model_unavailable", "internal_error"}
    for attrs in by_outcome.values():
        assert (attrs["trigger"], attrs["endpoint"], attrs["variant"], attrs["model.name"]) == \
            ("queue", "churn", "default", "churn")
