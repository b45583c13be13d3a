"""Fanned-out batch jobs: rows/s of one large CSV job scored by 1 worker process versus 2 worker
processes consuming the same chunk queue, in the same run, on this machine.

Each worker is a local Functions host (devhost) serving this app, pinned to its own core
(``taskset``) with ``PREDICT_MAX_THREADS=1``: a stand-in for one single-core instance. The job
(100 features, the 500-tree bench model) is sent to the job queue; one of the hosts plans it,
both score its chunks. Runs alternate 1 worker / 2 workers; medians are compared. Azurite (the
storage emulator) runs on the same 2 cores, unpinned: with 2 workers it competes with them, which
real Blob Storage would not.

Timed: from sending the job message to receiving its result message ("send -> result"), and the
job's own time from planning to commit (the result's ``elapsed_ms``). Hosts are started and
warmed (imports and model load, through one HTTP request each) before the clock starts; the app
copy polls its queues every 0.2 s at most (host.json ``maxPollingInterval``) so that polling
back-off does not dominate a run of a few seconds, and takes ``--batch-size`` messages at a time
(default 2, as many as a worker scores at once: with the shipped 16 one worker holds up to 24
chunks and the other idles at the end of a job this small).

Run: ``.venv/bin/python bench/batch_fanout.py [--rows N] [--rounds R] [--chunk-mib M]
[--batch-size B]``
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.batch import FEATURES, upload_csv  # noqa: E402
from bench.common import bench_model_path  # noqa: E402
from devhost.process import DevHost  # noqa: E402


class PinnedHost(DevHost):
    """A devhost restricted to one CPU."""

    def __init__(self, *args, cpu: int, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.cpu = cpu

    def command(self) -> list[str]:
        return ["taskset", "-c", str(self.cpu), *super().command()]


def app_copy(tmp: Path, batch_size: int) -> Path:
    """This app with faster queue polling and the given queue batch size (host.json), the code
    symlinked."""
    app = tmp / f"app-{batch_size}"
    app.mkdir()
    for name in ("function_app.py", "shared", "score_function"):
        (app / name).symlink_to(ROOT / name)
    host = json.loads((ROOT / "host.json").read_text())
    host["extensions"]["queues"].update(maxPollingInterval="00:00:00.2", batchSize=batch_size,
                                        newBatchThreshold=batch_size // 2)
    (app / "host.json").write_text(json.dumps(host))
    return app


def warm(host: DevHost) -> None:
    import httpx

    row = [0.0] * FEATURES
    response = httpx.post(f"{host.url}/api/score/bench", json={"rows": [row]}, timeout=60)
    response.raise_for_status()


def run_job(app: Path, env: dict[str, str], workers: int, job_id: str, queues, tmp: Path) -> dict:
    hosts = [PinnedHost(app, env, auth=False, lease_seconds=30, cpu=cpu,
                        log_path=tmp / f"{job_id}-w{cpu}.log") for cpu in range(workers)]
    try:
        for host in hosts:
            host.start()
            warm(host)
        jobs_q = queues.get_queue_client(env["SCORE_QUEUE_NAME"])
        results_q = queues.get_queue_client(env["RESULTS_QUEUE_NAME"])
        message = {"id": job_id, "endpoint": "bench", "input": {"blob": "inputs/fanout.csv"},
                   "output": {"blob": f"predictions/{job_id}.csv"}}
        import psutil

        procs = [psutil.Process(host.pid) for host in hosts]
        cpu_before = [sum(p.cpu_times()[:2]) for p in procs]
        start = time.perf_counter()
        jobs_q.send_message(base64.b64encode(orjson.dumps(message)).decode())
        while True:
            for m in results_q.receive_messages(max_messages=32):
                doc = orjson.loads(base64.b64decode(m.content))
                results_q.delete_message(m)
                if doc.get("id") == job_id:
                    doc["wall_s"] = time.perf_counter() - start
                    doc["cpu_s"] = [sum(p.cpu_times()[:2]) - b for p, b in zip(procs, cpu_before)]
                    return doc
            if time.perf_counter() - start > 900:
                raise RuntimeError(f"no result; log:\n{hosts[0].log_tail()}")
            time.sleep(0.05)
    finally:
        for host in hosts:
            host.stop()


def chunks_per_worker(tmp: Path, job_id: str, workers: int) -> list[int]:
    """How many chunks each worker scored (from its log)."""
    counts = []
    for cpu in range(workers):
        path = tmp / f"{job_id}-w{cpu}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        counts.append(sum(1 for line in text.splitlines() if f"job {job_id}: chunk" in line
                          and " scored, " in line))
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=300_000)
    parser.add_argument("--rounds", type=int, default=2, help="pairs of (1 worker, 2 workers) runs")
    parser.add_argument("--chunk-mib", type=float, default=8.0, help="BATCH_FANOUT_CHUNK_BYTES")
    parser.add_argument("--batch-size", type=int, default=2,
                        help="host.json queues.batchSize of the workers (the shipped host.json has "
                             "16: a worker then takes up to 24 chunks at once and the others may "
                             "idle at the end)")
    args = parser.parse_args()
    if (os.cpu_count() or 1) < 2:
        raise SystemExit("needs 2 cores")

    import lightgbm as lgb
    from azure.storage.blob import BlobServiceClient
    from azure.storage.queue import QueueServiceClient

    from devhost.azurite import Azurite

    model_path = bench_model_path()
    with Azurite() as azurite, tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        conn = azurite.connection_string
        chunk_bytes = int(args.chunk_mib * 1024 * 1024)
        env = {"AzureWebJobsStorage": conn, "SCORE_QUEUE_NAME": "score-requests",
               "RESULTS_QUEUE_NAME": "score-results", "CHUNK_QUEUE_NAME": "score-chunks",
               "MODEL_CONTAINER": "models", "BATCH_CONTAINER": "batch",
               "BATCH_FANOUT_BYTES": str(4 * 1024 * 1024),
               "BATCH_FANOUT_CHUNK_BYTES": str(chunk_bytes), "BATCH_CHUNK_ROWS": "10000",
               "BATCH_FANOUT_CONCURRENCY": "2", "PREDICT_MAX_THREADS": "1",
               "PYTHON_THREADPOOL_THREAD_COUNT": "4"}
        blobs = BlobServiceClient.from_connection_string(conn)
        queues = QueueServiceClient.from_connection_string(conn)
        blobs.create_container("models").upload_blob("bench.txt", model_path.read_bytes())
        queues.create_queue(env["RESULTS_QUEUE_NAME"])
        batch = blobs.create_container("batch")
        size, X = upload_csv(batch.get_blob_client("inputs/fanout.csv"), args.rows, 5, keep=True)
        app = app_copy(tmp, args.batch_size)
        print(f"input: {args.rows:,} rows x {FEATURES} features, CSV {size / 1e6:.1f} MB, "
              f"~{size / chunk_bytes:.0f} chunks of {args.chunk_mib:g} MiB; workers pinned to "
              f"one core each, 1 predict thread, 2 chunks at a time per worker, queue batchSize "
              f"{args.batch_size}", flush=True)
        print(f"load average before (1/5/15 min): {' / '.join(f'{x:.2f}' for x in os.getloadavg())}")
        runs: dict[int, list[dict]] = {1: [], 2: []}
        for r in range(args.rounds):
            for workers in (1, 2):
                result = run_job(app, env, workers, f"fan-{r}-{workers}w", queues, tmp)
                assert result["status"] == "succeeded", result
                runs[workers].append(result)
                print(f"  round {r + 1}, {workers} worker(s): {result['rows'] / result['wall_s']:>9,.0f} "
                      f"rows/s send->result ({result['wall_s']:.2f} s), "
                      f"{result['rows_per_second']:>9,.0f} rows/s plan->commit "
                      f"({result['elapsed_ms'] / 1000:.2f} s, {result['chunks']} chunks; per worker "
                      f"{chunks_per_worker(tmp, result['id'], workers)}); worker CPU "
                      f"{sum(result['cpu_s']):.1f} s = {result['rows'] / sum(result['cpu_s']):,.0f} "
                      f"rows per CPU-second, {sum(result['cpu_s']) / (result['wall_s'] * workers):.0%} "
                      f"of the pinned cores", flush=True)
        first = runs[1][0]["id"]
        got = np.array([float(x) for x in blobs.get_blob_client("batch", f"predictions/{first}.csv")
                        .download_blob().readall().split(b"\n")[1:-1]])
        expected = lgb.Booster(model_file=str(model_path)).predict(X, num_threads=2)
        assert np.array_equal(got, expected), "fanned-out output differs from Booster.predict"
        print("output identical to Booster.predict: yes")
        print(f"load average at the end (1/5/15 min, other work on the machine included): "
              f"{' / '.join(f'{x:.2f}' for x in os.getloadavg())}")

        def med(workers: int, key: str) -> float:
            if key == "wall":
                return statistics.median(r["rows"] / r["wall_s"] for r in runs[workers])
            return statistics.median(r["rows_per_second"] for r in runs[workers])

        for key, label in (("wall", "send -> result"), ("job", "plan -> commit")):
            one, two = med(1, key), med(2, key)
            print(f"{label:>15}: 1 worker {one:>9,.0f} rows/s, 2 workers {two:>9,.0f} rows/s, "
                  f"ratio {two / one:.2f}")
        for workers in (1, 2):
            cpu = statistics.median(r["rows"] / sum(r["cpu_s"]) for r in runs[workers])
            share = statistics.median(sum(r["cpu_s"]) / (r["wall_s"] * workers) for r in runs[workers])
            print(f"{workers} worker(s): {cpu:,.0f} rows per worker CPU-second; the workers got "
                  f"{share:.0%} of their pinned cores (the rest went to other processes)")
        wall_rate = med(1, "job")
        per_core = statistics.median(r["rows"] / sum(r["cpu_s"]) for r in runs[1] + runs[2])
        print(f"per-core rate: {per_core:,.0f} rows per worker CPU-second (all runs; what one "
              f"uncontended core does, storage emulator not counted); 1 worker wall rate "
              f"{wall_rate:,.0f} rows/s")
        for instances, cores in ((10, 1), (40, 1), (100, 1), (40, 2), (100, 2)):
            seconds = 100e6 / (per_core * instances * cores)
            print(f"  100M rows on {instances:>3} instances x {cores} core(s), linear: "
                  f"{seconds / 60:5.1f} min")


if __name__ == "__main__":
    main()
