"""Batch jobs end to end: messages on the job queue, run by the local Functions host (devhost)
with the host's queue semantics, results on the results queue. Covers the CLI, a worker killed
mid-job (the job still completes exactly once), poison after retried transient failures, and a
bad message reported once and never retried."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import numpy as np
import orjson
import pytest

from devhost.process import DevHost
from scorefn.__main__ import main as cli
from tests.batch_support import make_rig, read_csv, reference, sample, to_csv

APP_DIR = Path(__file__).resolve().parents[2]
CHURN = ("tenure_months", "monthly_charges", "support_calls", "contract_months", "age",
         "usage_gb", "late_payments", "discount_pct")
DEAD_STORAGE = ("DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;"
                "BlobEndpoint=http://127.0.0.1:9/devstoreaccount1;")


def send(rig, message) -> None:
    body = message if isinstance(message, bytes) else orjson.dumps(message)
    client = rig.queues.get_queue_client(rig.settings.score_queue_name)
    client.send_message(base64.b64encode(body).decode())


def wait_for(probe, timeout: float, what: str, host: DevHost | None = None):
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            log = f"\ndevhost log:\n{host.log_tail(60)}" if host else ""
            pytest.fail(f"{what} did not happen within {timeout} s{log}")
        time.sleep(0.2)


def results_for(rig, *ids: str) -> dict[str, list[dict]]:
    found: dict[str, list[dict]] = {i: [] for i in ids}
    for doc in rig.sent_results():
        if doc.get("id") in found:
            found[doc["id"]].append(doc)
    return found


def poisoned(rig) -> list:
    from azure.core.exceptions import ResourceNotFoundError

    try:
        return list(rig.queues.get_queue_client(rig.settings.score_queue_name + "-poison")
                    .peek_messages(max_messages=32))
    except ResourceNotFoundError:
        return []


def queue_empty(rig, name: str) -> bool:
    """No message at all, visible or not (the host deleted it)."""
    return rig.queues.get_queue_client(name).get_queue_properties().approximate_message_count == 0


@pytest.fixture(scope="module")
def rig(azurite, demo_models):
    rig = make_rig(azurite, demo_models)
    yield rig
    rig.cleanup()


@pytest.fixture(scope="module")
def host(rig, tmp_path_factory):
    log = tmp_path_factory.mktemp("batch-e2e") / "devhost.log"
    with DevHost(APP_DIR, rig.env, auth=False, lease_seconds=30, log_path=log) as running:
        yield running


def test_inline_and_blob_jobs_through_the_queue(rig, host, demo_models, tmp_path, capsys):
    X = sample(8, 30, seed=11)
    send(rig, {"id": "e2e-inline", "endpoint": "churn",
               "rows": [[None if np.isnan(v) else v for v in row] for row in X.tolist()]})
    Xb = sample(8, 2000, seed=12)
    ids = [f"cust-{i}" for i in range(2000)]
    local = tmp_path / "customers.csv"
    local.write_bytes(to_csv(Xb, CHURN, ids, "customer_id"))
    code = cli(["jobs", "submit", "churn", "--input", str(local), "--id", "e2e-blob",
                "--id-column", "customer_id", "--wait", "--timeout", "60",
                "--connection-string", rig.azurite.connection_string,
                "--queue", rig.settings.score_queue_name,
                "--results-queue", rig.settings.results_queue_name,
                "--container", rig.settings.batch_container])
    out = capsys.readouterr().out
    assert code == 0, out + host.log_tail()
    assert "e2e-blob succeeded: 2,000 rows" in out and "rows/s" in out
    assert f"{rig.settings.batch_container}/predictions/e2e-blob.csv" in out
    found = wait_for(lambda: (r := results_for(rig, "e2e-inline", "e2e-blob")) and all(r.values())
                     and r, 30, "both results", host)
    [inline], [blob] = found["e2e-inline"], found["e2e-blob"]
    assert np.array_equal(np.array(inline["predictions"]), reference(demo_models, "churn", X))
    header, rows = read_csv(rig.download("predictions/e2e-blob.csv"))
    assert header == ["customer_id", "prediction"] and [r[0] for r in rows] == ids
    assert np.array_equal(np.array([float(r[1]) for r in rows]), reference(demo_models, "churn", Xb))
    assert blob["rows"] == 2000 and blob["status"] == "succeeded"
    wait_for(lambda: queue_empty(rig, rig.settings.score_queue_name), 10, "messages deleted", host)


def test_a_bad_message_is_reported_once_and_not_retried(rig, host):
    send(rig, b"this is not json")
    send(rig, {"id": "e2e-bad-model", "endpoint": "no-such-model", "rows": [[1] * 8]})
    failed = wait_for(lambda: [r for r in rig.sent_results() if r["status"] == "failed"]
                      if len([r for r in rig.sent_results() if r["status"] == "failed"]) >= 2
                      else None, 30, "two failed results", host)
    codes = sorted(r["error"]["code"] for r in failed)
    assert codes == ["invalid_json", "model_not_found"]
    assert next(r for r in failed if r["error"]["code"] == "invalid_json")["id_generated"] is True
    # Deleted, not left for a retry: the queue holds no message, visible or not, and nothing
    # went to the poison queue.
    wait_for(lambda: queue_empty(rig, rig.settings.score_queue_name), 10, "messages deleted", host)
    assert poisoned(rig) == []
    time.sleep(1.0)
    assert len([r for r in rig.sent_results() if r["status"] == "failed"]) == 2
    log = Path(host.log_path).read_text()
    assert "this is not json" not in log and "model_not_found" in log


def test_a_worker_killed_mid_job_loses_nothing(azurite, demo_models, tmp_path):
    """SIGKILL the host while a job is half done: the message comes back after its lease, the
    next host waits for the dead worker's job lease, discards its blocks, and completes the
    job: one output, one result."""
    rig = make_rig(azurite, demo_models, {"BATCH_CHUNK_ROWS": "250"}, models=("churn",))
    try:
        n = 60_000
        X = sample(8, n, seed=13)
        rig.upload("inputs/big.csv", to_csv(X, CHURN))
        out = rig.blobs.get_blob_client(rig.settings.batch_container, "predictions/e2e-crash.csv")
        first = DevHost(APP_DIR, rig.env, auth=False, lease_seconds=3,
                        log_path=tmp_path / "first.log").start()
        try:
            send(rig, {"id": "e2e-crash", "endpoint": "churn", "input": {"blob": "inputs/big.csv"}})
            wait_for(lambda: _uncommitted(out) >= 5, 60, "some blocks staged", first)
        finally:
            first.kill()
        staged = _uncommitted(out)
        assert not out.exists() and rig.sent_results() == [] and staged < n // 250
        with DevHost(APP_DIR, rig.env, auth=False, lease_seconds=3,
                     log_path=tmp_path / "second.log") as second:
            wait_for(lambda: rig.sent_results(), 90, "the result", second)
            wait_for(lambda: queue_empty(rig, rig.settings.score_queue_name), 10,
                     "the message deleted", second)
        [result] = rig.sent_results()
        assert result["status"] == "succeeded" and result["rows"] == n
        _, rows = read_csv(out.download_blob().readall())
        assert np.array_equal(np.array([float(r[0]) for r in rows]),
                              reference(demo_models, "churn", X))
        assert len(out.get_block_list("committed")[0]) == n // 250
        record = rig.jobs.records.read("e2e-crash")
        assert record["state"] == "done" and record["attempts"] == 2
    finally:
        rig.cleanup()


def _uncommitted(blob) -> int:
    try:
        return len(blob.get_block_list("uncommitted")[1])
    except Exception:
        return 0


def test_a_transient_failure_is_retried_then_poisoned(azurite, demo_models, tmp_path):
    """Models on unreachable storage: every delivery raises, the host retries it and then moves
    it to the poison queue; no result is sent. (A copy of the app with a faster retry policy
    in host.json: visibilityTimeout 1 s, maxDequeueCount 3.)"""
    app = tmp_path / "app"
    app.mkdir()
    for name in ("function_app.py", "shared", "score_function"):
        (app / name).symlink_to(APP_DIR / name)
    host_json = json.loads((APP_DIR / "host.json").read_text())
    host_json["extensions"]["queues"].update(visibilityTimeout="00:00:01", maxDequeueCount=3,
                                             maxPollingInterval="00:00:01")
    (app / "host.json").write_text(json.dumps(host_json))
    rig = make_rig(azurite, demo_models, {"MODEL_STORAGE_CONNECTION": "DeadModels",
                                          "DeadModels": DEAD_STORAGE}, models=())
    try:
        with DevHost(app, rig.env, auth=False, lease_seconds=30,
                     log_path=tmp_path / "devhost.log") as host:
            send(rig, {"id": "e2e-poison", "endpoint": "churn", "rows": [[1] * 8]})
            wait_for(lambda: poisoned(rig), 60, "the poison message", host)
            wait_for(lambda: queue_empty(rig, rig.settings.score_queue_name), 10,
                     "the message moved", host)
        [moved] = poisoned(rig)
        assert orjson.loads(base64.b64decode(moved.content))["id"] == "e2e-poison"
        assert rig.sent_results() == []
        record = rig.jobs.records.read("e2e-poison")
        assert record["state"] == "running" and record["attempts"] == 3
        assert "model_unavailable" in Path(host.log_path).read_text()
    finally:
        rig.cleanup()
