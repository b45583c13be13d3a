"""Fault drills against the local Functions host (devhost) and Azurite, each bounded in time.

1. Storage outage under load: Azurite stopped while requests flow. Loaded models keep
   answering with no error and no slowdown; a model never loaded is a 503 with Retry-After;
   when storage returns, everything recovers without restarting the host.
2. A model blob overwritten with garbage, then with a truncated file, then an upload left
   uncommitted, under load: zero failed requests, the old model keeps answering (exact
   predictions), each failure is logged; a good new version is then swapped in.
3. The host SIGKILLed during batch jobs, several times (3 in ``make test``, 10 with
   ``make drills``): every job completes exactly once (one output, one result message).
4. Slow storage: a TCP proxy adds latency in front of the blob endpoint. Requests for
   loaded models are not slowed (p50 with and without the delay), and the refresh checks
   that go through the slow proxy never block scoring.
5. The telemetry exporter's endpoint down (a closed port, 1 s export interval): scoring is
   unaffected and threads and memory stay flat.
"""

from __future__ import annotations

import base64
import math
import os
import time
from collections import Counter
from pathlib import Path

import httpx
import lightgbm as lgb
import numpy as np
import orjson
import pytest

from devhost.azurite import Azurite
from devhost.process import DevHost
from tests.azurite_support import new_container
from tests.batch_support import make_rig, read_csv, reference, sample, to_csv
from tests.hardening.support import (
    FUNCTION_KEY,
    ROOT,
    DelayProxy,
    Load,
    ProcessSampler,
    closed_port,
    free_port,
    host_env,
    json_rows,
    make_models_container,
    percentile,
    report,
)

pytestmark = pytest.mark.hardening

CHURN_ROW = [12, 70.5, 1, 12, 40, 33.2, 0, 5]
CHURN = ("tenure_months", "monthly_charges", "support_calls", "contract_months", "age",
         "usage_gb", "late_payments", "discount_pct")


def scorer(name: str, rows: list, expected: list | None = None):
    """A load function: POST rows to /api/score/{name}; ok when 200 (and equal to expected)."""
    body = orjson.dumps({"rows": rows})

    def call(client):
        start = time.perf_counter()
        response = client.post(f"/api/score/{name}", content=body,
                               headers={"content-type": "application/json"})
        seconds = time.perf_counter() - start
        if response.status_code != 200:
            return False, seconds, (response.status_code, response.text[:200])
        doc = response.json()
        ok = expected is None or doc["predictions"] == expected
        return ok, seconds, (doc["model"]["version"], doc["predictions"])
    return call


def wait_until(probe, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.2)
    pytest.fail(f"{what} did not happen within {timeout} s")


# -- 1. storage outage -----------------------------------------------------------------------

def test_storage_outage_under_load(demo_models, tmp_path, request):
    ports = dict(blob_port=free_port(), queue_port=free_port(), table_port=free_port())
    storage = Azurite(**ports).start()
    host = None
    load = None
    try:
        container = make_models_container(storage.connection_string, demo_models, ("churn", "price"))
        env = host_env(storage.connection_string, container.container_name,
                       MODEL_REFRESH_SECONDS="0.5", STORAGE_TIMEOUT_SECONDS="1")
        host = DevHost(ROOT, env, queues=False, log_path=tmp_path / "devhost.log").start()
        expected = lgb.Booster(model_file=str(demo_models["churn"].path)).predict(
            np.array([CHURN_ROW], dtype=float)).tolist()
        client = httpx.Client(base_url=host.url, timeout=30, headers={"x-functions-key": FUNCTION_KEY})
        assert client.post("/api/score/churn", json={"rows": [CHURN_ROW]}).status_code == 200
        load = Load(host.url, scorer("churn", [CHURN_ROW], expected), threads=4,
                    headers={"x-functions-key": FUNCTION_KEY}).start()
        time.sleep(1.5)
        storage.stop()
        outage_start = time.monotonic() - load.t0
        time.sleep(1.0)
        never_loaded = [client.post("/api/score/price", json={"rows": [[1] * 6]}) for _ in range(3)]
        ready = client.get("/api/v2/health/ready")
        time.sleep(2.0)
        storage.start()  # same ports; in memory, so empty: upload the models again
        outage_end = time.monotonic() - load.t0
        _reupload(storage, container.container_name, demo_models)
        recovered = wait_until(lambda: (r := client.post("/api/score/price", json={"rows": [[1] * 6]}))
                               .status_code == 200 and r, 20, "price to load after the outage")
        time.sleep(1.0)  # churn's refresh sees the re-uploaded blob (a new ETag) and swaps it
        load.stop()
        log = Path(host.log_path).read_text()
        client.close()
    finally:
        if load is not None:
            load.stop()
        if host is not None:
            host.stop()
        storage.stop()
    during = [r for r in load.results if outage_start <= r[0] <= outage_end]
    assert load.failures() == [], load.failures()[:5]
    assert len(during) > 20, "requests flowed during the outage"
    assert max(r[2] for r in during) < 1.0, "a loaded model was slowed by the outage"
    for response in never_loaded:
        assert response.status_code == 503 and response.json()["error"] == "model_unavailable"
        assert int(response.headers["retry-after"]) > 0
    assert ready.status_code == 200 and ready.json()["storage"] != "ok"  # loaded models serve
    assert recovered.json()["model"]["name"] == "price"
    assert "refresh of model churn failed: model_unavailable" in log
    report(request, "drill_storage_outage", requests=len(load.results), during_outage=len(during),
           failed=0, max_ms_during_outage=max(r[2] for r in during) * 1000,
           p50_ms=percentile([r[2] for r in load.results], 50) * 1000)


def _reupload(storage: Azurite, container_name: str, demo_models) -> None:

    container = new_container(storage.connection_string, container_name)
    for name in ("churn", "price"):
        container.upload_blob(f"{name}.txt", demo_models[name].path.read_bytes(), overwrite=True)


# -- 2. a damaged model blob -------------------------------------------------------------------

def test_a_model_overwritten_with_garbage_or_truncated_keeps_the_old_one(azurite, demo_models, tmp_path,
                                                                         request):
    container = make_models_container(azurite.connection_string, demo_models, ("churn",))
    env = host_env(azurite.connection_string, container.container_name, MODEL_REFRESH_SECONDS="0.3")
    X = np.array([CHURN_ROW], dtype=float)
    old = lgb.Booster(model_file=str(demo_models["churn"].path)).predict(X).tolist()
    new = lgb.Booster(model_file=str(demo_models["churn_v1"].path)).predict(X).tolist()
    text = demo_models["churn"].path.read_bytes()
    blob = container.get_blob_client("churn.txt")
    try:
        with DevHost(ROOT, env, queues=False, log_path=tmp_path / "devhost.log") as host:
            httpx.post(f"{host.url}/api/score/churn", json={"rows": [CHURN_ROW]},
                       headers={"x-functions-key": FUNCTION_KEY}).raise_for_status()
            load = Load(host.url, scorer("churn", [CHURN_ROW]), threads=4,
                        headers={"x-functions-key": FUNCTION_KEY}).start()
            try:
                time.sleep(0.5)
                blob.upload_blob(os.urandom(200_000), overwrite=True)  # garbage
                time.sleep(1.2)
                blob.upload_blob(text[: len(text) * 3 // 5], overwrite=True)  # truncated
                time.sleep(1.2)
                # junk inside
                blob.upload_blob(text[:1000] + b"\n\x00\x00garbage" + text[1000:], overwrite=True)
                time.sleep(1.2)
                blob.stage_block(base64.b64encode(b"half").decode(), os.urandom(50_000))  # never committed
                time.sleep(0.8)
                damaged_until = time.monotonic() - load.t0
                blob.upload_blob(demo_models["churn_v1"].path.read_bytes(), overwrite=True)  # a good one
                wait_until(lambda: load.results and load.results[-1][3][0] != load.results[0][3][0], 10,
                           "the good new version to be served")
                time.sleep(0.3)
            finally:
                load.stop()
            log = Path(host.log_path).read_text()
            endpoints = httpx.get(f"{host.url}/api/endpoints",
                                  headers={"x-functions-key": FUNCTION_KEY}).json()
    finally:
        container.delete_container()
    assert load.failures() == [], load.failures()[:5]
    first_version = load.results[0][3][0]
    while_damaged = [r for r in load.results if r[0] <= damaged_until]
    assert {r[3][0] for r in while_damaged} == {first_version}, "the damaged blob replaced the model"
    assert all(r[3][1] == old for r in while_damaged), "the old model's exact predictions"
    assert load.results[-1][3][0] != first_version and load.results[-1][3][1] == new
    refresh_failures = log.count("refresh of model churn failed: invalid_model")
    assert refresh_failures >= 3, log[-3000:]
    assert [m["version"] for m in endpoints["loaded_models"]] == [load.results[-1][3][0]]
    report(request, "drill_damaged_model_blob", requests=len(load.results), failed=0,
           while_damaged=len(while_damaged), refresh_failures_logged=refresh_failures,
           swapped_to_the_good_version=True)


# -- 3. SIGKILL during batch jobs ----------------------------------------------------------------

def kill_cycles() -> int:
    return int(os.environ.get("SCOREFN_KILL_CYCLES", "3"))


def test_the_host_killed_during_batch_jobs_loses_nothing(azurite, demo_models, tmp_path, request):
    """Each cycle starts a host, submits new jobs, waits until they are mid-flight (staged
    blocks, nothing committed) and SIGKILLs the host. Earlier jobs come back after their
    message lease (3 s) and wait for the dead worker's job lease (15 s, the blob lease
    minimum); a cycle only kills when the jobs of three cycles back are done, so no message
    is delivered more than 4 times (maxDequeueCount is 5). A last host finishes everything."""
    cycles = kill_cycles()
    rows, chunk = 60_000, 250
    rig = make_rig(azurite, demo_models, {"BATCH_CHUNK_ROWS": str(chunk)}, models=("churn",))
    jobs: dict[str, dict] = {}
    kills = mid_flight = 0
    started = time.monotonic()
    try:
        X = sample(8, rows, seed=31)
        rig.upload("inputs/big.csv", to_csv(X, CHURN, [f"k{i}" for i in range(rows)], "key"))
        expected_blob = reference(demo_models, "churn", X)
        X_inline = sample(8, 20, seed=32)
        expected_inline = reference(demo_models, "churn", X_inline)
        queue = rig.queues.get_queue_client(rig.settings.score_queue_name)
        queue.create_queue()

        def submit(job_id: str, doc: dict) -> None:
            jobs[job_id] = {"cycle": cycle, **doc}
            queue.send_message(base64.b64encode(orjson.dumps({"id": job_id, **doc})).decode())

        def done(job_id: str) -> bool:
            record = rig.jobs.records.read(job_id)
            return bool(record) and record.get("state") == "done"

        def staged(job_id: str) -> int:
            blob = rig.blobs.get_blob_client(rig.settings.batch_container, f"predictions/{job_id}.csv")
            try:
                return len(blob.get_block_list("uncommitted")[1])
            except Exception:
                return 0

        for cycle in range(cycles + 1):
            host = DevHost(ROOT, rig.env, auth=False, lease_seconds=3,
                           log_path=tmp_path / f"host-{cycle}.log").start()
            try:
                if cycle == cycles:  # the last host finishes every job
                    wait_until(lambda: all(done(j) for j in jobs), 120, "every job to finish")
                    break
                for i in range(2):
                    submit(f"kill-{cycle}-blob-{i}",
                           {"endpoint": "churn", "input": {"blob": "inputs/big.csv"}, "id_column": "key"})
                submit(f"kill-{cycle}-inline", {"endpoint": "churn", "rows": json_rows(X_inline)})
                current = [j for j in jobs if jobs[j]["cycle"] == cycle and "input" in jobs[j]]
                older = [j for j in jobs if jobs[j]["cycle"] <= cycle - 3]
                wait_until(lambda older=older, current=current: all(done(j) for j in older)
                           and all(staged(j) >= 3 or done(j) for j in current),
                           90, f"cycle {cycle}: jobs mid-flight")
                mid_flight += sum(not done(j) for j in current)
            finally:
                if cycle < cycles:
                    host.kill()
                    kills += 1
                else:
                    host.stop()
        results = []
        while batch := list(rig.results.receive_messages(max_messages=32, visibility_timeout=30)):
            for m in batch:
                results.append(orjson.loads(base64.b64decode(m.content)))
                rig.results.delete_message(m)
        by_id = Counter(r["id"] for r in results)
        assert set(by_id) == set(jobs), set(jobs) ^ set(by_id)
        assert all(n == 1 for n in by_id.values()), {j: n for j, n in by_id.items() if n != 1}
        attempts = []
        for result in results:
            assert result["status"] == "succeeded", result
            record = rig.jobs.records.read(result["id"])
            assert record["state"] == "done"
            attempts.append(record["attempts"])
            if "input" in jobs[result["id"]]:
                assert result["rows"] == rows
                out = rig.blobs.get_blob_client(rig.settings.batch_container, result["output_blob"])
                header, lines = read_csv(out.download_blob().readall())
                assert header == ["key", "prediction"] and lines[0][0] == "k0" and len(lines) == rows
                assert np.array_equal(np.array([float(r[1]) for r in lines]), expected_blob)
                assert len(out.get_block_list("committed")[0]) == math.ceil(rows / chunk)
            else:
                assert np.array_equal(np.array(result["predictions"]), expected_inline)
        from azure.core.exceptions import ResourceNotFoundError
        try:
            poisoned = rig.queues.get_queue_client(rig.settings.score_queue_name + "-poison") \
                .get_queue_properties().approximate_message_count
        except ResourceNotFoundError:
            poisoned = 0
        assert poisoned == 0
        assert queue.get_queue_properties().approximate_message_count == 0
        assert mid_flight >= cycles, "at least one job per cycle was killed mid-flight"
    finally:
        rig.cleanup()
    report(request, "drill_sigkill_batch", kills=kills, jobs=len(jobs), killed_mid_flight=mid_flight,
           results=len(results),
           duplicates=0, lost=0, max_attempts=max(attempts), seconds=time.monotonic() - started)


# -- 4. slow storage -------------------------------------------------------------------------------

def test_slow_storage_never_slows_loaded_models(azurite, demo_models, tmp_path, request):
    container = make_models_container(azurite.connection_string, demo_models, ("churn", "price"))
    proxy = DelayProxy(azurite.blob_port).start()
    slow = azurite.connection_string.replace(f":{azurite.blob_port}/", f":{proxy.port}/")
    env = host_env(azurite.connection_string, container.container_name, MODEL_REFRESH_SECONDS="0.2",
                   MODEL_STORAGE_CONNECTION="SlowModels", SlowModels=slow)
    delay = 2.0
    try:
        with DevHost(ROOT, env, queues=False, log_path=tmp_path / "devhost.log") as host:
            with httpx.Client(base_url=host.url, timeout=30, headers={"x-functions-key": FUNCTION_KEY}) as c:
                body = {"rows": [CHURN_ROW]}

                def timed(seconds: float) -> list[float]:
                    out = []
                    until = time.monotonic() + seconds
                    while time.monotonic() < until:
                        start = time.perf_counter()
                        assert c.post("/api/score/churn", json=body).status_code == 200
                        out.append(time.perf_counter() - start)
                        time.sleep(0.005)
                    return out

                timed(0.5)  # warm
                fast = timed(2.5)
                proxy.delay = delay
                held_before = proxy.requests_delayed
                slowed = timed(4.5)  # two refresh checks (2 s each, one at a time) or more
                refresh_checks = proxy.requests_delayed - held_before
                start = time.perf_counter()  # a model never loaded does wait for storage
                assert c.post("/api/score/price", json={"rows": [[1] * 6]}).status_code == 200
                cold = time.perf_counter() - start
    finally:
        proxy.stop()
        container.delete_container()
    p50_fast, p50_slow = percentile(fast, 50), percentile(slowed, 50)
    assert refresh_checks >= 2, "refresh checks went through the slow proxy meanwhile"
    assert cold >= delay, "the proxy does slow storage down"
    assert max(slowed) < delay / 2, f"a request waited on slow storage ({max(slowed):.3f} s)"
    report(request, "drill_slow_storage", delay_s=delay, p50_ms_without=p50_fast * 1000,
           p50_ms_with=p50_slow * 1000, max_ms_with=max(slowed) * 1000,
           refresh_checks_while_slow=refresh_checks, cold_load_s=cold)


# -- 5. telemetry exporter down ----------------------------------------------------------------------

def test_a_dead_telemetry_endpoint_does_not_affect_scoring(azurite, demo_models, tmp_path, request):
    container = make_models_container(azurite.connection_string, demo_models, ("churn",))
    dead = closed_port()
    telemetry = {"APPLICATIONINSIGHTS_CONNECTION_STRING":
                 f"InstrumentationKey=00000000-0000-0000-0000-000000000000;"
                 f"IngestionEndpoint=http://127.0.0.1:{dead}/",
                 "TELEMETRY_EXPORT_INTERVAL_SECONDS": "1",
                 # Anything not meant for 127.0.0.1 goes to a dead proxy, never out.
                 "HTTPS_PROXY": f"http://127.0.0.1:{dead}", "HTTP_PROXY": f"http://127.0.0.1:{dead}",
                 "NO_PROXY": "127.0.0.1,localhost"}
    seconds = 4.0
    figures = {}
    try:
        for name, extra in (("baseline", {}), ("exporter_down", telemetry)):
            env = host_env(azurite.connection_string, container.container_name, **extra)
            with DevHost(ROOT, env, queues=False, log_path=tmp_path / f"{name}.log") as host:
                httpx.post(f"{host.url}/api/score/churn", json={"rows": [CHURN_ROW]},
                           headers={"x-functions-key": FUNCTION_KEY}).raise_for_status()
                load = Load(host.url, scorer("churn", [CHURN_ROW]), threads=4,
                            headers={"x-functions-key": FUNCTION_KEY}).start()
                time.sleep(1.5)  # warm: thread pools and the exporter start
                sampler = ProcessSampler(host.pid, interval=0.5).start()
                time.sleep(seconds)
                sampler.stop()
                end = sampler.sample()
                load.stop()
                log = Path(host.log_path).read_text()
            start = sampler.samples[0]
            latencies = [r[2] for r in load.results if r[0] > 1.5]
            figures[name] = {"requests": len(load.results), "failed": len(load.failures()),
                             "p50_ms": percentile(latencies, 50) * 1000,
                             "threads": (start.threads, end.threads), "rss_mb": (round(start.rss_mb, 1),
                                                                                round(end.rss_mb, 1)),
                             "log": log}
    finally:
        container.delete_container()
    down, base = figures["exporter_down"], figures["baseline"]
    assert "telemetry: exporting to Application Insights" in down["log"]
    assert "Connection refused" in down["log"]  # exports were attempted, and failed
    assert down["failed"] == base["failed"] == 0
    assert down["threads"][1] <= down["threads"][0] + 2, down["threads"]
    assert down["rss_mb"][1] - down["rss_mb"][0] < 15, down["rss_mb"]
    report(request, "drill_telemetry_exporter_down",
           **{f"{k}_{n}": v for n, f in figures.items() for k, v in f.items() if k != "log"})


# -- 6. slow storage and the shared thread pool ------------------------------------------------
# Found by these drills (then strict xfails): readiness probes and queue jobs waiting on slow
# storage held every function pool thread, and scorings of loaded models queued behind them.
# Warm, small scorings now run on the worker's event loop (score_function/dispatch.py).

@pytest.fixture(scope="module")
def slow_host(azurite, demo_models, tmp_path_factory):
    """A host whose blob storage (models and batch) is behind the delaying proxy; queues direct."""
    container = make_models_container(azurite.connection_string, demo_models, ("churn",))
    proxy = DelayProxy(azurite.blob_port).start()
    slow = azurite.connection_string.replace(f":{azurite.blob_port}/", f":{proxy.port}/")
    env = host_env(slow, container.container_name, STORAGE_TIMEOUT_SECONDS="20")
    host = DevHost(ROOT, env, lease_seconds=30,
                   log_path=tmp_path_factory.mktemp("slow") / "devhost.log").start()
    try:
        httpx.post(f"{host.url}/api/score/churn", json={"rows": [CHURN_ROW]},
                   headers={"x-functions-key": FUNCTION_KEY}).raise_for_status()
        yield host, proxy, env
    finally:
        host.kill()  # jobs may still be waiting on the proxy: no graceful stop needed
        proxy.stop()
        container.delete_container()


def scoring_latency_while(host, busy, seconds: float = 3.0) -> list[float]:
    """Latencies of sequential scorings of a loaded model while ``busy()`` runs in threads."""
    import threading

    workers = busy()
    out = []
    with httpx.Client(base_url=host.url, timeout=60, headers={"x-functions-key": FUNCTION_KEY}) as c:
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            start = time.perf_counter()
            assert c.post("/api/score/churn", json={"rows": [CHURN_ROW]}).status_code == 200
            out.append(time.perf_counter() - start)
    for w in workers:
        if isinstance(w, threading.Thread):
            w.join(timeout=120)
    return out


def assert_scoring_stays_fast_while(request, drill: str, host, proxy, delay: float, busy) -> None:
    """Scorings of a loaded model while ``busy()`` makes work that waits on the slowed storage
    (``proxy.delay`` is reset afterwards) all take under 0.5 s; the figures are reported."""
    held_before = proxy.requests_delayed
    try:
        latencies = scoring_latency_while(host, busy)
        held = proxy.requests_delayed - held_before
    finally:
        proxy.delay = 0
    report(request, drill, delay_s=delay, scorings=len(latencies), storage_calls_slowed=held,
           max_ms=max(latencies) * 1000, p50_ms=percentile(latencies, 50) * 1000)
    assert held > 0, "the busy work reached the slowed storage meanwhile"
    assert max(latencies) < 0.5, f"a scoring of a loaded model waited {max(latencies):.2f} s"


def test_readiness_probes_during_slow_storage_do_not_starve_scoring(slow_host, request):
    import threading

    host, proxy, _ = slow_host
    delay = 1.5

    def probes():
        threads = [threading.Thread(target=lambda: httpx.get(f"{host.url}/api/v2/health/ready", timeout=120))
                   for _ in range(8)]
        proxy.delay = delay  # nothing has asked for readiness yet: no cached report
        for t in threads:
            t.start()
        time.sleep(0.2)
        return threads

    assert_scoring_stays_fast_while(request, "drill_readiness_probes_slow_storage", host, proxy,
                                    delay, probes)


def test_queue_jobs_during_slow_storage_do_not_starve_scoring(slow_host, azurite, request):
    from azure.storage.queue import QueueClient

    host, proxy, env = slow_host
    delay = 0.5
    queue = QueueClient.from_connection_string(azurite.connection_string, env["SCORE_QUEUE_NAME"])

    def jobs():
        proxy.delay = delay
        for i in range(8):  # more than the pool's 6 threads (min(32, cores + 4))
            queue.send_message(base64.b64encode(orjson.dumps(
                {"id": f"slow-{i}", "endpoint": "churn", "rows": [CHURN_ROW]})).decode())
        time.sleep(1.0)  # the host polls and starts them
        return []

    assert_scoring_stays_fast_while(request, "drill_queue_jobs_slow_storage", host, proxy, delay,
                                    jobs)
