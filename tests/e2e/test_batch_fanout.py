"""Fanned-out batch jobs through the local Functions host (devhost): the job message is planned,
its chunks are scored by the host's queue workers in parallel (several messages at once, as the
host's batch size allows), and one result arrives. Also: the host SIGKILLed mid-job and started
again; the job still completes exactly once."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from devhost.process import DevHost
from scorefn.__main__ import main as cli
from shared.batch.fanout.status import read_status
from tests.batch_support import make_rig, read_csv, reference, sample, to_csv
from tests.e2e.test_batch import CHURN, queue_empty, send, wait_for

APP_DIR = Path(__file__).resolve().parents[2]


def test_a_fanned_out_job_through_the_host_equals_booster_predict(azurite, demo_models, tmp_path,
                                                                   capsys):
    rig = make_rig(azurite, demo_models, {"BATCH_FANOUT_BYTES": "100000",
                                          "BATCH_FANOUT_CHUNK_BYTES": "60000",
                                          "BATCH_CHUNK_ROWS": "150"}, models=("churn",))
    try:
        n = 20_000
        X = sample(8, n, seed=31)
        ids = [f"cust-{i}" for i in range(n)]
        local = tmp_path / "customers.csv"
        local.write_bytes(to_csv(X, CHURN, ids, "customer_id"))
        with DevHost(APP_DIR, rig.env, auth=False, lease_seconds=10,
                     log_path=tmp_path / "devhost.log") as host:
            code = cli(["jobs", "submit", "churn", "--input", str(local), "--id", "e2e-fan",
                        "--id-column", "customer_id", "--wait", "--timeout", "60",
                        "--connection-string", rig.azurite.connection_string,
                        "--queue", rig.settings.score_queue_name,
                        "--results-queue", rig.settings.results_queue_name,
                        "--container", rig.settings.batch_container])
            captured = capsys.readouterr()
            assert code == 0, captured.out + host.log_tail()
            wait_for(lambda: queue_empty(rig, rig.settings.chunk_queue_name), 10,
                     "chunk messages deleted", host)
            log = Path(host.log_path).read_text()
        assert "e2e-fan succeeded: 20,000 rows" in captured.out and "chunks in parallel" in captured.out
        [result] = rig.sent_results()
        assert result["status"] == "succeeded" and result["rows"] == n and result["chunks"] > 20
        header, rows = read_csv(rig.download("predictions/e2e-fan.csv"))
        assert header == ["customer_id", "prediction"] and [r[0] for r in rows] == ids
        assert np.array_equal(np.array([float(r[1]) for r in rows]),
                              reference(demo_models, "churn", X))
        status = read_status(rig.batch, "e2e-fan")
        assert status["chunks_done"] == status["chunks"] == result["chunks"]
        assert "'Functions.score_chunk' (Failed" not in log  # no chunk needed a retry
    finally:
        rig.cleanup()


def test_a_host_killed_mid_job_completes_it_exactly_once_after_restart(azurite, demo_models,
                                                                       tmp_path):
    """SIGKILL the host while chunks are being scored (one at a time, so that the kill lands
    mid-job): their messages come back after the lease, the new host skips chunks already
    done, and one delivery commits: one output, one result."""
    env = {"BATCH_FANOUT_BYTES": "200000", "BATCH_FANOUT_CHUNK_BYTES": "400000",
           "BATCH_CHUNK_ROWS": "1000"}
    rig = make_rig(azurite, demo_models, env, models=("churn",))
    try:
        n = 100_000
        X = sample(8, n, seed=32)
        rig.upload("inputs/big.csv", to_csv(X, CHURN))
        first = DevHost(APP_DIR, {**rig.env, "BATCH_FANOUT_CONCURRENCY": "1"}, auth=False,
                        lease_seconds=3, log_path=tmp_path / "first.log").start()
        try:
            send(rig, {"id": "e2e-fan-kill", "endpoint": "churn", "input": {"blob": "inputs/big.csv"}})
            status = wait_for(lambda: (s := read_status(rig.batch, "e2e-fan-kill"))
                              and s["chunks_done"] >= 3 and s, 60, "some chunks scored", first)
        finally:
            first.kill()
        done_at_kill = read_status(rig.batch, "e2e-fan-kill")["chunks_done"]
        assert done_at_kill < status["chunks"], "the job finished before the kill: make it longer"
        assert rig.sent_results() == []
        out = rig.blobs.get_blob_client(rig.settings.batch_container, "predictions/e2e-fan-kill.csv")
        assert not out.exists()
        started = time.monotonic()
        with DevHost(APP_DIR, rig.env, auth=False, lease_seconds=3,
                     log_path=tmp_path / "second.log") as second:
            wait_for(lambda: rig.sent_results(), 60, "the result", second)
            wait_for(lambda: queue_empty(rig, rig.settings.chunk_queue_name), 15,
                     "chunk messages deleted", second)
            time.sleep(1.0)  # any late duplicate result would show by now
        [result] = rig.sent_results()
        assert result["status"] == "succeeded" and result["rows"] == n
        assert result["chunks"] == status["chunks"]
        _, rows = read_csv(out.download_blob().readall())
        assert np.array_equal(np.array([float(r[0]) for r in rows]),
                              reference(demo_models, "churn", X))
        record = rig.jobs.records.read("e2e-fan-kill")
        assert record["state"] == "done"
        print(f"killed with {done_at_kill}/{status['chunks']} chunks done; finished "
              f"{time.monotonic() - started:.1f} s after the restart")
    finally:
        rig.cleanup()
