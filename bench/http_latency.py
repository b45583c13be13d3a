"""HTTP latency and throughput: the local Functions host serving function_app.py against a
bare baseline server calling Booster.predict, side by side in one run.

Single-row requests rotating over 4,096 distinct rows; concurrency 1 for latency
(p50/p99), 1/4/16 for throughput; the two servers measured in alternating rounds. The
client is ``bench/loadgen.py`` (raw asyncio streams), light enough that at concurrency 16 the
servers, not the client, are what runs out of CPU.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import HOST_SCHEDULES, bench_model_path, bench_rows  # noqa: E402
from bench.loadgen import load  # noqa: E402

KEY = "bench-key"
ROUNDS = 5


def main() -> None:
    from azure.storage.blob import BlobServiceClient

    from devhost.azurite import Azurite
    from devhost.process import DevHost

    model = bench_model_path()
    rows = bench_rows()
    bodies = [orjson.dumps({"rows": [r.tolist()]}) for r in rows]
    headers = {"content-type": "application/json", "x-functions-key": KEY}
    with Azurite() as azurite, tempfile.TemporaryDirectory() as tmp:
        container = BlobServiceClient.from_connection_string(
            azurite.connection_string).get_container_client("models")
        container.create_container()
        container.upload_blob("bench.txt", model.read_bytes())
        port_file = Path(tmp) / "port"
        baseline = subprocess.Popen([sys.executable, str(ROOT / "bench" / "baseline_server.py"),
                                     str(model), str(port_file)])
        try:
            env = {"AzureWebJobsStorage": azurite.connection_string, "DEVHOST_FUNCTION_KEY": KEY,
                   "SCORE_QUEUE_NAME": "bench", "RESULTS_QUEUE_NAME": "bench-results",
                   **HOST_SCHEDULES}
            with DevHost(ROOT, env, queues=False) as host:
                deadline = time.time() + 60
                while not port_file.exists() or not port_file.read_text():
                    if time.time() > deadline:
                        raise RuntimeError("baseline server did not start")
                    time.sleep(0.1)
                urls = {"baseline (Booster.predict)": f"http://127.0.0.1:{port_file.read_text()}/",
                        "scorefn local host": f"{host.url}/api/score/bench"}
                for url in urls.values():  # warm up: load the model, open connections
                    asyncio.run(load(url, bodies, 1, 300, headers))
                latency = {name: [] for name in urls}
                round_p50 = {name: [] for name in urls}
                throughput = {name: {c: [] for c in (1, 4, 16)} for name in urls}
                for _ in range(ROUNDS):
                    for name, url in urls.items():
                        lat, _ = asyncio.run(load(url, bodies, 1, 1000, headers))
                        latency[name] += lat
                        round_p50[name].append(float(np.percentile(lat, 50)))
                        for c in (1, 4, 16):
                            # ~2 s per measurement: shorter ones swung 0.7-1.3x round to round
                            _, rps = asyncio.run(load(url, bodies, c, 6000, headers))
                            throughput[name][c].append(rps)
        finally:
            baseline.terminate()
            baseline.wait()
    print(f"\nHTTP, single-row requests, {os.cpu_count()} cores, client on the same machine\n")
    print(f"{'server':28s} {'p50 ms':>7s} {'p99 ms':>7s} {'rps c=1':>8s} {'rps c=4':>8s} {'rps c=16':>9s}")
    base = "baseline (Booster.predict)"
    for name in urls:
        p50, p99 = np.percentile(latency[name], [50, 99]) * 1000
        rps = [float(np.median(throughput[name][c])) for c in (1, 4, 16)]
        print(f"{name:28s} {p50:7.2f} {p99:7.2f} {rps[0]:8.0f} {rps[1]:8.0f} {rps[2]:9.0f}")
    ours = "scorefn local host"
    # Ratios within each round (the two servers ran back to back), then their median: a
    # burst of load from elsewhere on this shared machine hits one round, not the figure.
    p50_ratio = np.median(np.divide(round_p50[ours], round_p50[base]))
    c16 = np.median(np.divide(throughput[ours][16], throughput[base][16]))
    print(f"\nscorefn / baseline (median of {ROUNDS} per-round ratios): p50 at c=1 "
          f"{p50_ratio:.2f}x, throughput at c=16 {c16:.2f}x")
    print("per round, throughput at c=16: " + ", ".join(
        f"{o:.2f}" for o in np.divide(throughput[ours][16], throughput[base][16])))


if __name__ == "__main__":
    main()
