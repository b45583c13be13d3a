"""Batch jobs fanned out across instances, through the shared core on real Azurite: the planner
(``BatchJobs.handle`` on a large input) and the chunk handler (``FanOut.handle_chunk``) called
directly, chunk messages taken from the real chunk queue. Exact output in input order, one
commit and one result however chunks are redelivered or race, clean failure, pinned model."""

from __future__ import annotations

import base64
import dataclasses
import threading

import numpy as np
import orjson
import pytest
from azure.storage.blob import BlobClient

import shared.batch.fanout.chunk_worker as chunk_worker_module
from shared.batch.fanout.chunk_messages import decode_chunk
from shared.batch.fanout.job_blobs import marker_name, plan_name
from shared.batch.fanout.markers import list_markers
from shared.batch.fanout.status import read_status
from shared.batch.ranges import byte_ranges, line_start_at_or_after, read_first_line
from shared.batch.records import Claim
from shared.batch.results import ResultQueue
from shared.batch.runner import BatchJobs
from tests.batch_support import read_csv, reference, rig, sample, to_csv, to_jsonl  # noqa: F401

CHURN = ("tenure_months", "monthly_charges", "support_calls", "contract_months", "age",
         "usage_gb", "late_payments", "discount_pct")
N = 3000


def fanout_jobs(rig, *, fanout_bytes=20_000, chunk_bytes=16_000, chunk_rows=37, **changes) -> BatchJobs:
    """A runner (its own process, as far as caches go) that fans out inputs over
    ``fanout_bytes`` in chunks of ``chunk_bytes``, staging ``chunk_rows`` rows per block."""
    settings = dataclasses.replace(rig.settings, batch_fanout_bytes=fanout_bytes,
                                   batch_fanout_chunk_bytes=chunk_bytes,
                                   batch_chunk_rows=chunk_rows, **changes)
    return BatchJobs(settings, rig.jobs.service, rig.blobs, rig.queues)


def blob_job(job_id, blob, **extra):
    return orjson.dumps({"id": job_id, "endpoint": extra.pop("endpoint", "churn"),
                         "input": {"blob": blob}, **extra})


def output(rig, name):
    return rig.blobs.get_blob_client(rig.settings.batch_container, name)


def single_invocation_output(rig, job_id, blob, **extra) -> bytes:
    """The same job scored in one invocation (fan-out off): the reference bytes."""
    jobs = fanout_jobs(rig, fanout_bytes=0)
    outcome = jobs.handle(blob_job(job_id, blob, **extra), message_id=f"ref-{job_id}")
    assert outcome.status == "succeeded"
    return output(rig, outcome.result["output_blob"]).download_blob().readall()


@pytest.fixture
def churn_csv(rig):
    X = sample(8, N, seed=21)
    order = [7, 0, 3, 1, 6, 2, 5, 4]
    ids = [f"C{i:05d}" for i in range(N)][::-1]
    rig.upload("inputs/big.csv", to_csv(X[:, order], [CHURN[j] for j in order], ids, "customer_id",
                                        id_position=3))
    return X, ids


# -- planning --------------------------------------------------------------------------------

@pytest.mark.parametrize("data", [
    b"h1,h2\n" + b"".join(b"%d,%d\n" % (i, i * i) for i in range(500)),
    b"h\r\n" + b"".join(b"x" * (i % 97) + b"\r\n" for i in range(400)),  # CRLF, blank lines
    b"h\n" + b"a" * 5000 + b"\nb\nc",  # a line longer than a chunk; no final newline
    b"h\n",  # a header alone
])
def test_byte_ranges_cover_every_line_once_cut_at_line_starts(data):
    reads = []

    def read(offset, length):
        reads.append(length)
        return data[offset:offset + length]

    header, start = read_first_line(read, len(data))
    assert header == data.split(b"\n")[0].rstrip(b"\r") and data[start - 1:start] == b"\n"
    for chunk_bytes in (1, 7, 100, 1000, 10**6):
        ranges = byte_ranges(read, len(data), start, chunk_bytes)
        assert ranges[0][0] == start and ranges[-1][1] == len(data)
        assert all(a < b for a, b in ranges) or ranges == [(start, start)]
        assert all(prev[1] == nxt[0] for prev, nxt in zip(ranges, ranges[1:]))
        for a, _ in ranges:
            assert data[a - 1:a] == b"\n"  # every range begins a line
        assert b"".join(data[a:b] for a, b in ranges) == data[start:]
    assert line_start_at_or_after(read, len(data), len(data)) == len(data)
    assert max(reads) <= 64 * 1024  # only small windows are read


def test_a_large_csv_job_is_planned_into_chunk_messages(rig, churn_csv):
    jobs = fanout_jobs(rig)
    size = len(rig.download("inputs/big.csv"))
    outcome = jobs.handle(blob_job("fan-plan", "inputs/big.csv", id_column="customer_id"),
                          message_id="m-plan")
    assert (outcome.status, outcome.result) == ("fanned_out", None)
    plan = orjson.loads(rig.download(plan_name("fan-plan")))
    assert plan["chunks"] == len(plan["ranges"]) >= size // 16_000
    assert plan["header"].split(",")[3] == "customer_id"
    assert plan["model"]["version"] and rig.exists(plan["model"]["copy"])
    messages = rig.chunk_messages()
    chunks = sorted((decode_chunk(base64.b64decode(m.content)) for m in messages),
                    key=lambda c: c.index)
    assert [(c.start, c.end) for c in chunks] == [tuple(r) for r in plan["ranges"]]
    assert {c.token for c in chunks} == {plan["token"]} and chunks[-1].end == size
    record = jobs.records.read("fan-plan")
    assert record["state"] == "fanned_out" and record["fanout"]["chunks"] == plan["chunks"]
    assert rig.sent_results() == [] and not output(rig, "predictions/fan-plan.csv").exists()
    status = read_status(rig.batch, "fan-plan")
    assert (status["chunks_done"], status["chunks"], status["rows"]) == (0, plan["chunks"], 0)


# The plan's keys in the order every version writes them: plans of jobs in flight stay readable.
PLAN_KEYS = ["kind", "v", "id", "token", "created", "created_at", "accepted_at", "endpoint", "variant",
             "id_generated", "model", "input", "output", "id_column", "options", "header",
             "num_outputs", "categorical", "chunk_rows", "chunk_bytes", "chunks", "ranges"]


def test_a_stored_plan_reads_back_as_a_record_that_writes_the_same_bytes(rig, churn_csv):
    from shared.batch.fanout.plan import Plan, read_plan

    fanout_jobs(rig).handle(blob_job("fan-json", "inputs/big.csv", id_column="customer_id"),
                            message_id="m-json")
    stored = rig.download(plan_name("fan-json"))
    doc = orjson.loads(stored)
    assert list(doc) == PLAN_KEYS and list(doc["model"]) == ["name", "version", "path", "copy"]
    assert list(doc["input"]) == ["container", "blob", "format", "etag", "size"]
    plan = read_plan(rig.batch, "fan-json")
    assert plan is not None and orjson.dumps(plan.to_json()) == stored
    assert Plan.from_json(doc) == plan and plan.chunks == len(doc["ranges"])
    assert (plan.input.size, plan.output.blob, plan.model.copy) == \
        (doc["input"]["size"], "predictions/fan-json.csv", doc["model"]["copy"])
    assert plan.accepted_at == doc["accepted_at"] <= plan.created_at  # the job record's time
    # A plan written before "categorical", "id_generated" and "accepted_at" existed reads as
    # having none.
    older = {k: v for k, v in doc.items()
             if k not in ("categorical", "id_generated", "accepted_at")}
    assert Plan.from_json(older).categorical == {} and not Plan.from_json(older).id_generated
    assert Plan.from_json(older).accepted_at is None


@pytest.mark.parametrize("damage", [
    lambda d: d.pop("token"), lambda d: d.update(token="not-a-token"),
    lambda d: d.update(chunks=d["chunks"] + 1), lambda d: d.update(ranges=[[0, "x"]]),
    lambda d: d["model"].pop("copy"), lambda d: d["input"].update(size="7"),
    lambda d: d.update(options=None), lambda d: d.update(categorical={"x": "colour"}),
    lambda d: d.update(header=3), lambda d: d.update(v=2),
])
def test_a_damaged_plan_is_refused_when_read_back(rig, churn_csv, damage):
    from shared.batch.fanout.plan import InvalidPlan, Plan, read_plan

    fanout_jobs(rig).handle(blob_job("fan-bad-plan", "inputs/big.csv", id_column="customer_id"),
                            message_id="m-bad-plan")
    doc = orjson.loads(rig.download(plan_name("fan-bad-plan")))
    damage(doc)
    with pytest.raises(InvalidPlan):
        Plan.from_json(doc)
    rig.upload(plan_name("fan-bad-plan"), orjson.dumps(doc))
    assert read_plan(rig.batch, "fan-bad-plan") is None  # no plan: its chunks are orphans
    [message] = rig.chunk_messages()[:1]
    assert rig.run_chunk(message, fanout_jobs(rig)).status == "orphan"


def test_a_job_under_the_threshold_runs_in_one_invocation(rig, churn_csv):
    jobs = fanout_jobs(rig, fanout_bytes=10**9)
    outcome = jobs.handle(blob_job("fan-small", "inputs/big.csv", id_column="customer_id"),
                          message_id="m-small")
    assert outcome.status == "succeeded" and outcome.result["rows"] == N
    assert "chunks" not in outcome.result and not rig.exists(plan_name("fan-small"))
    assert rig.chunk_messages() == []


# -- output ---------------------------------------------------------------------------------

def test_a_fanned_out_csv_job_equals_booster_predict_in_input_order(rig, churn_csv, demo_models):
    X, ids = churn_csv
    expected = single_invocation_output(rig, "fan-ref", "inputs/big.csv", id_column="customer_id")
    jobs = fanout_jobs(rig)
    jobs.handle(blob_job("fan-csv", "inputs/big.csv", id_column="customer_id"), message_id="m")
    outcomes = rig.drain_chunks(jobs)
    assert {o.status for o in outcomes} == {"scored"} and sum(o.rows for o in outcomes) == N
    assert [o.finished for o in outcomes].count(True) == 1
    out = output(rig, "predictions/fan-csv.csv")
    data = out.download_blob().readall()
    assert data == expected  # byte for byte the single-invocation output
    header, rows = read_csv(data)
    assert header == ["customer_id", "prediction"] and [r[0] for r in rows] == ids
    assert np.array_equal(np.array([float(r[1]) for r in rows]), reference(demo_models, "churn", X))
    [result] = [r for r in rig.sent_results() if r["id"] == "fan-csv"]
    assert result["status"] == "succeeded" and result["rows"] == N and result["error"] is None
    assert result["chunks"] == len(outcomes) > 20 and result["variant"] == "default"
    assert result["model"] == {"name": "churn", "version": out.get_blob_properties()
                               .metadata["scorefn_model_version"]}
    assert len(out.get_block_list("committed")[0]) > result["chunks"]  # sub-blocks per chunk
    assert jobs.records.read("fan-csv")["state"] == "done"
    assert not [b for b in rig.batch.list_blobs(name_starts_with="jobs/fan-csv/model-")]
    status = read_status(rig.batch, "fan-csv")
    assert status["chunks_done"] == status["chunks"] and status["rows"] == N


def test_a_fanned_out_jsonl_job_with_ids_equals_booster_predict(rig, demo_models):
    X = sample(8, N, seed=22)
    ids = [i * 7 if i % 3 else f"k{i}" for i in range(N)]
    rig.upload("inputs/big.jsonl", to_jsonl(X, CHURN, ids, "key"))
    expected = single_invocation_output(rig, "fanj-ref", "inputs/big.jsonl", id_column="key")
    jobs = fanout_jobs(rig)
    jobs.handle(blob_job("fanj", "inputs/big.jsonl", id_column="key"), message_id="m")
    outcomes = rig.drain_chunks(jobs)
    assert len(outcomes) > 20
    data = output(rig, "predictions/fanj.jsonl").download_blob().readall()
    assert data == expected
    lines = [orjson.loads(x) for x in data.splitlines()]
    assert [x["key"] for x in lines] == ids
    assert np.array_equal(np.array([x["prediction"] for x in lines]),
                          reference(demo_models, "churn", X))
    assert [r["rows"] for r in rig.sent_results() if r["id"] == "fanj"] == [N]


def test_multiclass_csv_to_jsonl_with_raw_scores(rig, demo_models):
    names = demo_models["segment"].feature_names
    X = sample(4, 2000, seed=23)
    rig.upload("inputs/seg.csv", to_csv(X, names))
    jobs = fanout_jobs(rig, chunk_bytes=5_000)
    jobs.handle(blob_job("fan-seg", "inputs/seg.csv", endpoint="segment",
                         output={"format": "jsonl"}, options={"raw_score": True}), message_id="m")
    rig.drain_chunks(jobs)
    docs = [orjson.loads(x) for x in output(rig, "predictions/fan-seg.jsonl").download_blob()
            .readall().splitlines()]
    assert np.array_equal(np.array([d["prediction"] for d in docs]),
                          reference(demo_models, "segment", X, raw_score=True))


# -- exactly once ----------------------------------------------------------------------------

def test_redelivered_chunks_and_planner_do_not_duplicate_rows(rig, churn_csv, demo_models,
                                                             monkeypatch):
    X, _ = churn_csv
    jobs = fanout_jobs(rig)
    message = blob_job("fan-again", "inputs/big.csv", id_column="customer_id")
    real_fan_out = Claim.fan_out

    def crash(self, **summary):
        raise ConnectionError("the planner died after sending the chunks")

    monkeypatch.setattr(Claim, "fan_out", crash)
    with pytest.raises(ConnectionError):
        jobs.handle(message, message_id="m-1")
    monkeypatch.setattr(Claim, "fan_out", real_fan_out)
    messages = rig.chunk_messages()
    half = len(messages) // 2
    # The first half is scored, and the host dies before deleting those messages: they are
    # delivered again (here to another process).
    first = [rig.run_chunk(m, jobs, delete=False) for m in messages[:half]]
    again = [rig.run_chunk(m, fanout_jobs(rig), dequeue_count=2) for m in messages[:half]]
    assert {o.status for o in first} == {"scored"} and {o.status for o in again} == {"skipped"}
    # The planner's message is delivered again: same plan, only the chunks not done are sent.
    assert jobs.handle(message, message_id="m-1", dequeue_count=2).status == "fanned_out"
    resent = rig.chunk_messages()
    assert len(resent) == len(messages) - half
    outcomes = [rig.run_chunk(m, jobs) for m in resent]
    late = [rig.run_chunk(m, jobs) for m in messages[half:]]  # the first copies, late
    assert [o.finished for o in outcomes].count(True) == 1
    assert {o.status for o in late} == {"duplicate"}
    [result] = rig.sent_results()
    assert result["rows"] == N and result["chunks"] == len(messages)
    out = output(rig, "predictions/fan-again.csv")
    _, rows = read_csv(out.download_blob().readall())
    assert np.array_equal(np.array([float(r[1]) for r in rows]), reference(demo_models, "churn", X))
    # Every delivery after completion is acknowledged without work.
    assert jobs.handle(message, message_id="m-1", dequeue_count=3).status == "duplicate"
    assert len(rig.sent_results()) == 1


def test_two_workers_finishing_the_last_chunks_together_commit_once(rig, churn_csv, monkeypatch):
    commits = []
    real_commit = BlobClient.commit_block_list

    def counting_commit(self, *args, **kwargs):
        commits.append(self.blob_name)
        return real_commit(self, *args, **kwargs)

    monkeypatch.setattr(BlobClient, "commit_block_list", counting_commit)
    real_marker = chunk_worker_module.write_marker
    barrier = threading.Barrier(2, timeout=30)
    racing = set()

    def marker_then_wait(container, msg, **kwargs):
        real_marker(container, msg, **kwargs)
        if msg.index in racing:
            barrier.wait()  # both markers exist before either checks for completion

    monkeypatch.setattr(chunk_worker_module, "write_marker", marker_then_wait)
    for round_ in range(3):
        job_id = f"fan-race-{round_}"
        fanout_jobs(rig).handle(blob_job(job_id, "inputs/big.csv", id_column="customer_id"),
                                message_id=f"m-{round_}")
        messages = rig.chunk_messages()
        racing.clear()
        for m in messages[:-2]:
            rig.run_chunk(m)
        last = messages[-2:]
        racing.update(decode_chunk(base64.b64decode(m.content)).index for m in last)
        barrier.reset()
        outcomes = [None, None]

        def work(i, outcomes=outcomes, last=last):  # two "instances": separate runners, caches and threads
            outcomes[i] = rig.run_chunk(last[i], fanout_jobs(rig))

        threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert all(o is not None and o.status == "scored" for o in outcomes), outcomes
        assert [o.finished for o in outcomes].count(True) == 1
    assert commits == [f"predictions/fan-race-{r}.csv" for r in range(3)]
    assert sorted(r["id"] for r in rig.sent_results()) == [f"fan-race-{r}" for r in range(3)]


def test_a_crash_between_commit_and_result_is_repaired_by_a_redelivery(rig, churn_csv, monkeypatch):
    jobs = fanout_jobs(rig)
    jobs.handle(blob_job("fan-crash", "inputs/big.csv", id_column="customer_id"), message_id="m")
    messages = rig.chunk_messages()
    for m in messages[:-1]:
        rig.run_chunk(m, jobs)
    real_send = ResultQueue.send

    def crash(self, result):
        raise ConnectionError("died before sending the result")

    monkeypatch.setattr(ResultQueue, "send", crash)
    with pytest.raises(ConnectionError):
        rig.run_chunk(messages[-1], jobs, delete=False)
    assert jobs.records.read("fan-crash")["state"] == "committed" and rig.sent_results() == []
    monkeypatch.setattr(ResultQueue, "send", real_send)
    outcome = rig.run_chunk(messages[-1], fanout_jobs(rig), dequeue_count=2)
    assert (outcome.status, outcome.finished) == ("duplicate", True)
    [result] = rig.sent_results()
    assert result["rows"] == N and jobs.records.read("fan-crash")["state"] == "done"
    assert rig.run_chunk(messages[-1], jobs, dequeue_count=3, delete=False).finished is False
    assert len(rig.sent_results()) == 1


# -- failures --------------------------------------------------------------------------------

def test_a_bad_row_fails_the_job_cleanly_without_output(rig, churn_csv):
    data = bytearray(rig.download("inputs/big.csv"))
    at = data.index(b"\n", len(data) // 2) + 1
    end = data.index(b",", at)
    data[at:end] = b"abc"  # one non-numeric value mid-file
    rig.upload("inputs/bad.csv", bytes(data))
    jobs = fanout_jobs(rig)
    jobs.handle(blob_job("fan-bad", "inputs/bad.csv", id_column="customer_id"), message_id="m")
    outcomes = rig.drain_chunks(jobs)
    failed = [o for o in outcomes if o.status == "failed"]
    assert len(failed) == 1
    assert not output(rig, "predictions/fan-bad.csv").exists()
    [result] = rig.sent_results()
    assert result["status"] == "failed" and result["rows"] == 0 and result["output_blob"] is None
    error = result["error"]
    assert error["code"] == "non_numeric_value"
    chunk = error["chunk"]
    assert chunk["index"] == failed[0].index and chunk["input_bytes"][0] <= at < chunk["input_bytes"][1]
    assert f"chunk {chunk['index']} of {chunk['count']}" in error["message"]
    assert jobs.records.read("fan-bad")["state"] == "done"
    # Chunks delivered after the failure are acknowledged without scoring.
    later = outcomes[outcomes.index(failed[0]) + 1:]
    assert later and {o.status for o in later} == {"duplicate"}


def test_a_poisoned_chunk_fails_the_job(rig, churn_csv):
    jobs = fanout_jobs(rig)
    jobs.handle(blob_job("fan-poison", "inputs/big.csv", id_column="customer_id"), message_id="m")
    messages = rig.chunk_messages()
    for m in messages[1:]:
        rig.run_chunk(m, jobs)
    outcome = jobs.chunk_worker.handle_poison(base64.b64decode(messages[0].content), message_id="p")
    assert outcome.status == "failed"
    [result] = rig.sent_results()
    assert result["status"] == "failed" and result["error"]["code"] == "chunk_failed"
    assert "chunk 0 of" in result["error"]["message"] and "-poison" in result["error"]["message"]
    assert not output(rig, "predictions/fan-poison.csv").exists()
    # The poison message delivered again (its handler's ack was lost): nothing more happens.
    again = jobs.chunk_worker.handle_poison(base64.b64decode(messages[0].content), message_id="p")
    assert again.status == "duplicate" and len(rig.sent_results()) == 1


def test_a_poisoned_copy_of_a_scored_chunk_is_ignored(rig, churn_csv):
    jobs = fanout_jobs(rig)
    jobs.handle(blob_job("fan-p2", "inputs/big.csv", id_column="customer_id"), message_id="m")
    messages = rig.chunk_messages()
    rig.run_chunk(messages[0], jobs)
    outcome = jobs.chunk_worker.handle_poison(base64.b64decode(messages[0].content), message_id="p")
    assert outcome.status == "skipped" and rig.sent_results() == []
    for m in messages[1:]:
        rig.run_chunk(m, jobs)
    assert [r["status"] for r in rig.sent_results()] == ["succeeded"]


def test_an_input_changed_mid_job_fails_it(rig, churn_csv):
    jobs = fanout_jobs(rig)
    jobs.handle(blob_job("fan-changed", "inputs/big.csv", id_column="customer_id"), message_id="m")
    messages = rig.chunk_messages()
    rig.run_chunk(messages[0], jobs)
    rig.upload("inputs/big.csv", rig.download("inputs/big.csv") + b"")  # a new ETag
    assert rig.run_chunk(messages[1], jobs).status == "failed"
    [result] = rig.sent_results()
    assert result["error"]["code"] == "input_changed"
    assert not output(rig, "predictions/fan-changed.csv").exists()


def test_a_pinned_model_copy_over_the_model_size_limit_fails_the_job_without_being_read(
        rig, churn_csv):
    jobs = fanout_jobs(rig)
    jobs.handle(blob_job("fan-big-copy", "inputs/big.csv", id_column="customer_id"), message_id="m")
    copy = orjson.loads(rig.download(plan_name("fan-big-copy")))["model"]["copy"]
    rig.upload(copy, b"x" * (2 * 1024 * 1024))  # the copy replaced by something over 1 MiB
    first = rig.chunk_messages()[0]
    assert rig.run_chunk(first, fanout_jobs(rig, max_model_mb=1)).status == "failed"
    [result] = rig.sent_results()
    assert result["error"]["code"] == "invalid_model" and "over the limit" in result["error"]["message"]


def test_job_records_and_plans_are_read_only_up_to_their_bound(rig):
    from shared.batch.fanout.job_blobs import read_json
    from shared.batch.fanout.plan import MAX_PLAN_BYTES
    from shared.storage import MAX_RECORD_BYTES

    rig.upload("jobs/huge/plan.json", b'{"kind": "scorefn.plan"' + b" " * MAX_PLAN_BYTES + b"}")
    assert read_json(rig.batch, "jobs/huge/plan.json", MAX_PLAN_BYTES) is None
    # A plan may be larger than a job record: 50,000 chunks' ranges alone take ~1.4 MB.
    rig.upload("jobs/large/plan.json", b'{"kind": "scorefn.plan"' + b" " * MAX_RECORD_BYTES + b"}")
    assert read_json(rig.batch, "jobs/large/plan.json", MAX_PLAN_BYTES) == {"kind": "scorefn.plan"}
    rig.upload("jobs/small/plan.json", b'{"kind": "scorefn.plan"}')
    assert read_json(rig.batch, "jobs/small/plan.json", MAX_PLAN_BYTES) == {"kind": "scorefn.plan"}


def test_a_plan_too_large_for_its_chunks_to_read_fails_the_job_at_planning(rig, churn_csv,
                                                                          monkeypatch):
    import shared.batch.fanout.planner as planner

    monkeypatch.setattr(planner, "MAX_PLAN_BYTES", 200)  # as if the ranges were ~50,000
    outcome = fanout_jobs(rig).handle(blob_job("fan-huge", "inputs/big.csv", id_column="customer_id"),
                                      message_id="m")
    assert outcome.status == "failed" and outcome.result["error"]["code"] == "input_too_large"
    assert "BATCH_FANOUT_CHUNK_BYTES" in outcome.result["error"]["message"]
    assert rig.chunk_messages() == [] and not rig.exists(plan_name("fan-huge"))
    assert not [b for b in rig.batch.list_blobs() if b.name.startswith("jobs/fan-huge/model")]


def test_a_bad_header_fails_at_planning_without_chunks(rig):
    rig.upload("inputs/extra.csv", b"tenure_months,shoe_size\n" + b"1,2\n" * 10_000)
    outcome = fanout_jobs(rig).handle(blob_job("fan-head", "inputs/extra.csv"), message_id="m")
    assert outcome.status == "failed" and outcome.result["error"]["code"] == "unknown_column"
    assert rig.chunk_messages() == [] and not rig.exists(plan_name("fan-head"))


# -- model version ----------------------------------------------------------------------------

def test_a_model_swapped_mid_job_does_not_mix_versions(rig, churn_csv, demo_models):
    X, _ = churn_csv
    jobs = fanout_jobs(rig)
    jobs.handle(blob_job("fan-swap", "inputs/big.csv", id_column="customer_id"), message_id="m")
    pinned = orjson.loads(rig.download(plan_name("fan-swap")))["model"]["version"]
    messages = rig.chunk_messages()
    half = len(messages) // 2
    for m in messages[:half]:
        rig.run_chunk(m, jobs)
    # The live model blob changes to another model with the same features, and the cache
    # picks it up; a new job would score with it.
    models = rig.blobs.get_container_client(rig.settings.model_container)
    models.upload_blob("churn.txt", demo_models["churn_v1"].path.read_bytes(), overwrite=True)
    assert rig.jobs.service.store.refresh("churn")
    assert rig.jobs.service.store.get("churn")[0].info.version != pinned
    for m in messages[half:half + 3]:
        rig.run_chunk(m, jobs)  # a process that had the pinned model parsed already
    for m in messages[half + 3:]:
        rig.run_chunk(m, fanout_jobs(rig))  # fresh processes: they read the job's copy
    [result] = rig.sent_results()
    assert result["model"]["version"] == pinned
    _, rows = read_csv(output(rig, "predictions/fan-swap.csv").download_blob().readall())
    got = np.array([float(r[1]) for r in rows])
    assert np.array_equal(got, reference(demo_models, "churn", X))
    assert not np.allclose(got, reference(demo_models, "churn_v1", X))


# -- status and bindings ----------------------------------------------------------------------

def test_status_counts_chunks_and_rows_from_storage(rig, churn_csv):
    jobs = fanout_jobs(rig)
    jobs.handle(blob_job("fan-status", "inputs/big.csv", id_column="customer_id"), message_id="m")
    messages = rig.chunk_messages()
    outcomes = [rig.run_chunk(m, jobs) for m in messages[:5]]
    status = read_status(rig.batch, "fan-status")
    assert status["chunks_done"] == 5 and status["chunks"] == len(messages)
    assert status["rows"] == sum(o.rows for o in outcomes) > 0
    assert status["elapsed_s"] >= 0 and status["model"]["name"] == "churn"
    markers = list_markers(rig.batch, "fan-status")
    assert sorted(markers) == sorted(o.index for o in outcomes)
    assert rig.exists(marker_name("fan-status", outcomes[0].index))


def test_the_chunk_functions_bind_the_chunk_queue_setting(app_functions):
    triggers = {f.get_function_name(): f.get_trigger() for f in app_functions}
    assert triggers["score_chunk"].get_binding_name() == "queueTrigger"
    assert (triggers["score_chunk"].queue_name, triggers["score_chunk"].connection) == \
        ("%CHUNK_QUEUE_NAME%", "AzureWebJobsStorage")
    assert triggers["chunk_poisoned"].queue_name == "%CHUNK_QUEUE_NAME%-poison"


def test_jobs_wait_shows_a_progress_bar_for_a_fanned_out_job(rig, churn_csv):
    from scorefn.commands.jobs import _describe, _fanout_status

    jobs = fanout_jobs(rig)
    jobs.handle(blob_job("fan-cli", "inputs/big.csv", id_column="customer_id"), message_id="m")
    messages = rig.chunk_messages()
    for m in messages[:len(messages) // 2]:
        rig.run_chunk(m, jobs)
    record = jobs.records.read("fan-cli")
    status = _fanout_status(rig.batch, "fan-cli", record)
    text = _describe(record, status)
    half, total = len(messages) // 2, len(messages)
    assert text.startswith("[" + "#" * (24 * half // total))
    assert f"{half}/{total} chunks" in text and f"{status['rows']:,} rows" in text
    assert _fanout_status(rig.batch, "fan-cli", {"state": "running"}) is None


def test_a_failed_chunk_is_measured_with_its_code(rig, churn_csv):
    from tests.batch_support import metered

    data = bytearray(rig.download("inputs/big.csv"))
    at = data.index(b"\n", len(data) // 2) + 1
    data[at:data.index(b",", at)] = b"abc"
    rig.upload("inputs/bad.csv", bytes(data))
    jobs, durations = metered(rig, fanout_jobs(rig).settings)
    jobs.handle(blob_job("fan-metered", "inputs/bad.csv", id_column="customer_id"), message_id="m")
    outcomes = rig.drain_chunks(jobs)
    recorded = durations()
    scored = sum(o.status == "scored" for o in outcomes)
    assert [p["outcome"] for p in recorded].count("non_numeric_value") == 1
    assert sum(1 for p in recorded if p["outcome"] == "ok") == (1 if scored else 0)
    assert {p["model.name"] for p in recorded} == {"churn"}
