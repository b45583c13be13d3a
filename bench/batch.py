"""Batch jobs: rows/s of a CSV blob job end to end against bare Booster.predict, and the memory
a 1,000,000-row job takes against the file's size as Python objects.

1. Throughput: a 100,000-row, 100-feature CSV blob (4 decimals, 2% empty cells) scored by
   ``BatchJobs.handle`` in this process (download, parse, predict, stage, commit, result
   message), against ``Booster.predict`` on the same rows as a numpy array with the same
   thread count, for one predict thread (``PREDICT_MAX_THREADS=1``) and one per core (the
   default); all four interleaved round by round, medians compared. Also the CPU seconds of
   parsing, of predicting, of the whole job and of Azurite serving the input: on a machine
   where every core predicts, they bound the ratio. Optionally the same job sent through the
   job queue to the local Functions host (send -> result message).
2. Memory: a 1,000,000-row CSV job in a fresh child process, peak RSS sampled every 10 ms,
   against the input's size as bytes, as a float64 array and as Python lists of floats.

Run: ``.venv/bin/python bench/batch.py [--rows N] [--repeats R] [--memory-rows N] [--no-queue]``
"""

from __future__ import annotations

import argparse
import base64
import importlib.util
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import HOST_SCHEDULES, bench_model_path  # noqa: E402

FEATURES = 100


def csv_blocks(n: int, seed: int, block_rows: int = 50_000):
    """The CSV file (header, then rows of 4-decimal values, 2% empty), in blocks, and the
    exact matrix it holds (NaN for empty cells) when ``collect``."""
    rng = np.random.default_rng(seed)
    yield (",".join(f"f{i}" for i in range(FEATURES)) + "\n").encode(), None
    for start in range(0, n, block_rows):
        X = np.round(rng.normal(size=(min(block_rows, n - start), FEATURES)), 4)
        X[rng.random(X.shape) < 0.02] = np.nan
        text = orjson.dumps(X, option=orjson.OPT_SERIALIZE_NUMPY)
        body = text[2:-2].replace(b"],[", b"\n").replace(b"null", b"") + b"\n"
        yield body, X


def upload_csv(blob, n: int, seed: int, keep: bool) -> tuple[int, np.ndarray | None]:
    """Stage the CSV in blocks (never whole in memory); returns its size and, if ``keep``,
    the matrix."""
    from azure.storage.blob import BlobBlock

    ids, size, parts = [], 0, []
    for i, (data, X) in enumerate(csv_blocks(n, seed)):
        block_id = base64.b64encode(f"{i:08d}".encode()).decode()
        blob.stage_block(block_id, data)
        ids.append(BlobBlock(block_id=block_id))
        size += len(data)
        if keep and X is not None:
            parts.append(X)
    blob.commit_block_list(ids)
    return size, (np.vstack(parts) if keep else None)


def build_jobs(conn: str, settings_env: dict[str, str]):
    from azure.storage.blob import BlobServiceClient
    from azure.storage.queue import QueueServiceClient

    from shared.app import compiled_trees
    from shared.batch.runner import BatchJobs
    from shared.models.blob_source import BlobSource
    from shared.models.store import ModelStore
    from shared.scoring.service import ScoringService
    from shared.settings import Settings
    from shared.telemetry import get_telemetry

    settings = Settings.from_env(settings_env)
    blobs = BlobServiceClient.from_connection_string(conn)
    queues = QueueServiceClient.from_connection_string(conn)
    container = blobs.get_container_client(settings.model_container)
    # Compiled trees as the app builds them (its default: on, where an artifact exists).
    artifacts, _ = compiled_trees(settings, container, get_telemetry())
    store = ModelStore(BlobSource(container, 1 << 30), refresh_seconds=3600, artifacts=artifacts)
    return BatchJobs(settings, ScoringService(settings, store), blobs, queues), settings


def job_message(job_id: str, blob: str) -> bytes:
    return orjson.dumps({"id": job_id, "endpoint": "bench", "input": {"blob": blob}})


def memory_child(conn: str, blob: str) -> None:
    """Run one job here, print peak RSS above the warmed-up baseline (in the child process)."""
    import psutil

    jobs, _ = build_jobs(conn, {"BATCH_FANOUT_BYTES": "0"})
    jobs.service.model("bench")  # load the model first: its memory is not the job's
    proc = psutil.Process()
    baseline = proc.memory_info().rss
    peak = [baseline]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.01):
            peak[0] = max(peak[0], proc.memory_info().rss)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    outcome = jobs.handle(job_message("bench-memory", blob), message_id="mem")
    elapsed = time.perf_counter() - start
    stop.set()
    sampler.join()
    print(orjson.dumps({"baseline": baseline, "peak": peak[0], "elapsed": elapsed,
                        "rows": outcome.result["rows"], "status": outcome.status}).decode())


def through_queue(conn: str, env: dict[str, str], settings, message: bytes,
                  repeats: int) -> list[tuple[float, float]]:
    """Seconds from sending the job message to its result message, via the local host, and
    the job's own time inside the host (the result's ``elapsed_ms``)."""
    from azure.storage.queue import QueueClient

    from devhost.process import DevHost

    jobs_q = QueueClient.from_connection_string(conn, settings.score_queue_name)
    results_q = QueueClient.from_connection_string(conn, settings.results_queue_name)
    times = []
    with tempfile.TemporaryDirectory() as tmp, \
            DevHost(ROOT, {**env, **HOST_SCHEDULES}, auth=False,
                    log_path=Path(tmp) / "devhost.log") as host:
        for r in range(repeats + 1):  # the first run loads the model in the host: not counted
            job_id = f"bench-queue-{r}"
            doc = orjson.loads(message)
            doc.update(id=job_id, output={"blob": f"predictions/{job_id}.csv"})
            start = time.perf_counter()
            jobs_q.send_message(base64.b64encode(orjson.dumps(doc)).decode())
            while True:
                found = [doc for m in results_q.receive_messages(max_messages=32)
                         if (doc := orjson.loads(base64.b64decode(m.content))).get("id") == job_id]
                if found:
                    break
                if time.perf_counter() - start > 600:
                    raise RuntimeError(f"no result through the queue; log:\n{host.log_tail()}")
                time.sleep(0.02)
            if r:
                times.append((time.perf_counter() - start, found[0]["elapsed_ms"] / 1000))
    return times


def parse_seconds(body: bytes, feature_names: list[str]) -> float:
    """CPU seconds one thread takes to split and parse the whole CSV as a job does."""
    from shared.batch.csv_layout import csv_layout
    from shared.batch.lines import split_first_line
    from shared.batch.units import parse_units

    start = time.thread_time()
    header, rest = split_first_line([body])
    layout = csv_layout(header, feature_names, None)
    for _ in parse_units(rest, 50_000, layout=layout, feature_names=tuple(feature_names),
                         id_column=None, first_line=2):
        pass
    return time.thread_time() - start


def process_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def machine_busy() -> float | None:
    """CPU seconds all processes on this (Linux) machine have used so far."""
    try:
        with open("/proc/stat") as f:
            ticks = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    return (sum(ticks[:8]) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def _cpu(proc) -> float:
    times = proc.cpu_times()
    return times.user + times.system


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--memory-rows", type=int, default=1_000_000, help="0 to skip")
    parser.add_argument("--no-queue", action="store_true", help="skip the run through the host")
    parser.add_argument("--no-compiled", action="store_true",
                        help="skip the compiled-trees case (run only when lleaves is installed)")
    parser.add_argument("--memory-child", nargs=2, metavar=("CONN", "BLOB"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        return memory_child(*args.memory_child)

    import lightgbm as lgb
    import psutil
    from azure.storage.blob import BlobServiceClient

    from devhost.azurite import Azurite
    from shared.batch.units import UNIT_ROWS
    from shared.scoring.predict import threads_for

    model_path = bench_model_path()
    booster = lgb.Booster(model_file=str(model_path))
    with Azurite() as azurite:
        conn = azurite.connection_string
        env = {"AzureWebJobsStorage": conn, "SCORE_QUEUE_NAME": "score-requests",
               "RESULTS_QUEUE_NAME": "score-results", "MODEL_CONTAINER": "models",
               "BATCH_CONTAINER": "batch", "CHUNK_QUEUE_NAME": "score-chunks",
               "BATCH_FANOUT_BYTES": "0"}  # one invocation, however large the input
        blobs = BlobServiceClient.from_connection_string(conn)
        blobs.create_container("models").upload_blob("bench.txt", model_path.read_bytes())
        batch = blobs.create_container("batch")
        size, X = upload_csv(batch.get_blob_client("inputs/bench.csv"), args.rows, 1, keep=True)
        cores = os.cpu_count() or 1
        configs = {}  # predict threads -> job runner: PREDICT_MAX_THREADS=1, then 0 (all cores)
        for max_threads in ("1", "0"):
            jobs, settings = build_jobs(conn, {**env, "PREDICT_MAX_THREADS": max_threads})
            threads = threads_for(UNIT_ROWS, settings.predict_parallel_min_rows,
                                  settings.predict_max_threads)
            jobs.handle(job_message(f"bench-warm-{threads}", "inputs/bench.csv"),
                        message_id=f"warm-{threads}")  # loads the model
            configs[threads] = jobs
        compiled_jobs = None
        if not args.no_compiled and importlib.util.find_spec("lleaves") is not None:
            from bench.compiled import cached_artifact, parse
            from shared.models.compiled.artifact import blob_path

            # All cores, the app's defaults, with the model's artifact uploaded beside it (as
            # upload-model does; cached in bench/.cache): the job runner's model loads compiled.
            data, key, _ = cached_artifact(parse(model_path))
            blobs.get_container_client("models").upload_blob(blob_path("bench.txt", key), data)
            compiled_jobs, _ = build_jobs(conn, {**env, "PREDICT_MAX_THREADS": "0"})
            model, _ = compiled_jobs.service.store.get("bench")
            assert model.backend == "compiled"
            compiled_jobs.handle(job_message("bench-warm-c", "inputs/bench.csv"), message_id="warm-c")
        print(f"input: {args.rows:,} rows x {FEATURES} features, CSV {size / 1e6:.1f} MB; parsed "
              f"and predicted in units of <= {UNIT_ROWS:,} rows, output blocks of "
              f"{settings.batch_chunk_rows:,} rows; {cores} cores; {args.repeats} rounds, "
              f"cases interleaved")
        body = blobs.get_blob_client("batch", "inputs/bench.csv").download_blob().readall()
        azurite_proc = psutil.Process(azurite.process.pid)
        runs: dict[int, dict[str, list[float]]] = {t: {} for t in configs}
        parse_cpu: list[float] = []
        compiled_runs: list[float] = []
        compiled_diff = 0.0
        before = machine_busy(), process_cpu(), _cpu(azurite_proc), time.time()
        for r in range(args.repeats):
            parse_cpu.append(parse_seconds(body, booster.feature_name()))
            for threads, jobs in configs.items():
                figures = runs[threads]
                job_id = f"bench-{threads}-{r}"
                cpu0, az0 = process_cpu(), _cpu(azurite_proc)
                start = time.perf_counter()
                outcome = jobs.handle(job_message(job_id, "inputs/bench.csv"), message_id=job_id)
                figures.setdefault("job", []).append(time.perf_counter() - start)
                figures.setdefault("job_cpu", []).append(process_cpu() - cpu0)
                figures.setdefault("azurite_cpu", []).append(_cpu(azurite_proc) - az0)
                assert outcome.status == "succeeded", outcome.result
                cpu0, start = process_cpu(), time.perf_counter()
                expected = booster.predict(X, num_threads=threads)
                figures.setdefault("predict", []).append(time.perf_counter() - start)
                figures.setdefault("predict_cpu", []).append(process_cpu() - cpu0)
                if r == 0:
                    got = np.array([float(x) for x in blobs.get_blob_client(
                        "batch", f"predictions/{job_id}.csv").download_blob().readall()
                        .split(b"\n")[1:-1]])
                    assert np.array_equal(got, expected), "output differs from Booster.predict"
            if compiled_jobs is not None:
                job_id = f"bench-c-{r}"
                start = time.perf_counter()
                outcome = compiled_jobs.handle(job_message(job_id, "inputs/bench.csv"),
                                               message_id=job_id)
                compiled_runs.append(time.perf_counter() - start)
                assert outcome.status == "succeeded", outcome.result
                if r == 0:
                    got = np.array([float(x) for x in blobs.get_blob_client(
                        "batch", f"predictions/{job_id}.csv").download_blob().readall()
                        .split(b"\n")[1:-1]])
                    compiled_diff = float(np.max(np.abs(got - expected)))
                    assert np.array_equal(got, expected), compiled_diff
        del body
        after = machine_busy(), process_cpu(), _cpu(azurite_proc), time.time()
        if before[0] is not None and after[0] is not None:
            busy, ours, az, wall = (b - a for a, b in zip(before, after))
            print(f"other work on the machine during the rounds: "
                  f"{max(0.0, busy - ours - az) / wall:.2f} "
                  f"of {cores} cores on average")
        med = {t: {k: statistics.median(v) for k, v in f.items()} for t, f in runs.items()}
        print(f"{'predict threads':<16}{'Booster.predict rows/s':>24}{'blob job rows/s':>17}"
              f"{'ratio':>7}   job seconds (all rounds)")
        for threads, m in med.items():
            print(f"{threads:<16}{args.rows / m['predict']:>24,.0f}{args.rows / m['job']:>17,.0f}"
                  f"{m['predict'] / m['job']:>7.2f}   "
                  f"{', '.join(f'{t:.2f}' for t in runs[threads]['job'])}")
        print("outputs identical to Booster.predict: yes (both cases)")
        if compiled_runs:
            c_med = statistics.median(compiled_runs)
            print(f"{max(med)} threads, compiled trees: blob job {args.rows / c_med:,.0f} rows/s, "
                  f"{med[max(med)]['predict'] / c_med:.2f}x Booster.predict with {max(med)} threads "
                  f"(rounds: {', '.join(f'{t:.2f}' for t in compiled_runs)} s); largest difference "
                  f"to Booster.predict {compiled_diff:.1e}")
        parse_med = statistics.median(parse_cpu)
        one, full = med[1], med[max(med)]
        print(f"CPU seconds per job (medians): parse {parse_med:.2f} (one thread, alone), "
              f"Booster.predict {one['predict_cpu']:.2f} (1 thread) / {full['predict_cpu']:.2f} "
              f"({max(med)} threads); the whole job in process {one['job_cpu']:.2f} / "
              f"{full['job_cpu']:.2f}, plus Azurite serving the input {one['azurite_cpu']:.2f} / "
              f"{full['azurite_cpu']:.2f}")
        if cores > 1:
            floor = (full["job_cpu"] + full["azurite_cpu"]) / cores
            print(f"ceiling with all {cores} cores predicting: the job's CPU (its own and "
                  f"Azurite's) needs >= {floor:.2f} s on {cores} cores, Booster.predict takes "
                  f"{full['predict']:.2f} s, so at most {full['predict'] / floor:.2f}x; with 1 "
                  f"predict thread the parser has a core of its own (parse {parse_med:.2f} s "
                  f"< predict {one['predict']:.2f} s)")
        threads, pred_med = max(configs), full["predict"]
        if not args.no_queue:
            queue_s = through_queue(conn, env, settings, job_message("q", "inputs/bench.csv"),
                                    max(1, args.repeats - 1))
            q_med = statistics.median(t for t, _ in queue_s)
            in_host = statistics.median(j for _, j in queue_s)
            print(f"through the queue (local host, {threads} predict threads, send -> result "
                  f"message): {args.rows / q_med:,.0f} rows/s (median {q_med:.2f} s of "
                  f"{len(queue_s)}); "
                  f"ratio to Booster.predict {pred_med / q_med:.2f}")
            print(f"  of which the job inside the host: {in_host:.2f} s "
                  f"({args.rows / in_host:,.0f} rows/s); the rest is the queue: the host polls "
                  f"at most every maxPollingInterval (host.json: 2 s) once idle")
        del X, expected

        if args.memory_rows:
            n = args.memory_rows
            size, _ = upload_csv(batch.get_blob_client("inputs/memory.csv"), n, 2, keep=False)
            out = subprocess.run([sys.executable, __file__, "--memory-child", conn,
                                  "inputs/memory.csv"], capture_output=True, text=True, check=True)
            report = orjson.loads(out.stdout.strip().splitlines()[-1])
            grown = report["peak"] - report["baseline"]
            as_array = n * FEATURES * 8
            as_lists = n * (sys.getsizeof([0.0] * FEATURES) + FEATURES * sys.getsizeof(1.5))
            print(f"memory, {n:,}-row CSV job ({size / 1e6:,.0f} MB file, {report['elapsed']:.1f} s, "
                  f"{n / report['elapsed']:,.0f} rows/s): peak RSS {report['peak'] / 1e6:,.0f} MB, "
                  f"{grown / 1e6:,.0f} MB above the process with the model loaded")
            print(f"  the input as Python lists of floats: {as_lists / 1e6:,.0f} MB "
                  f"({as_lists / grown:.0f}x the job's growth); as one float64 array "
                  f"{as_array / 1e6:,.0f} MB; as bytes {size / 1e6:,.0f} MB")


if __name__ == "__main__":
    main()
