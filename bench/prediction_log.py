"""Overhead of the prediction log on the request path: the whole core path (JSON bytes in,
route, parse, predict, JSON bytes out) with the log on against the same with it off.

One service, one model (the reference bench model), a router config with three endpoints on
that model that differ only in their ``log`` block; a second service whose log writes to a
storage account that does not answer. Cases interleaved round by round; ratios are to
"log off" measured in the same run. The log is flushed to a real Azurite in the background
meanwhile (every PREDICTION_LOG_FLUSH_SECONDS=5 s, or at 2,500 records), so its writer's
CPU time is part of what is measured.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time

import orjson

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent.parent))

from bench.common import bench_model_path, bench_rows, interleaved, summary_us  # noqa: E402


def config() -> str:
    variant = [{"name": "only", "model": "bench"}]
    return json.dumps({"endpoints": {
        "off": {"variants": variant, "sticky": {"header": "x-user-id"}},
        "on": {"variants": variant, "sticky": {"header": "x-user-id"}, "log": {"sample": 1.0}},
        "features": {"variants": variant, "sticky": {"header": "x-user-id"},
                     "log": {"sample": 1.0, "features": True}},
    }})


def main() -> None:
    from azure.storage.blob import BlobServiceClient

    from devhost.azurite import DEV_ACCOUNT, DEV_KEY, Azurite
    from shared.ablog.blobs import AppendTarget
    from shared.ablog.predictions import PredictionLog
    from shared.ablog.writer import BufferedLogWriter
    from shared.models.blob_source import BlobSource
    from shared.models.store import ModelStore
    from shared.router import RouterConfigSource, RouterHolder
    from shared.scoring.service import ScoringService
    from shared.settings import Settings, StorageConnection
    from shared.storage import blob_service

    path = bench_model_path()
    rows = bench_rows()
    bodies = [orjson.dumps({"rows": [row.tolist()]}) for row in rows]
    batch_bodies = [orjson.dumps({"rows": rows[i:i + 100].tolist()}) for i in range(0, 4000, 100)]
    headers = [{"x-user-id": f"user-{i}"} for i in range(4096)]

    with Azurite() as azurite:
        blobs = BlobServiceClient.from_connection_string(azurite.connection_string)
        container = blobs.get_container_client("models")
        container.create_container()
        container.upload_blob("bench.txt", path.read_bytes())
        store = ModelStore(BlobSource(container, 512 << 20), refresh_seconds=3600)
        settings = Settings.from_env({})

        def service(target) -> ScoringService:
            writer = BufferedLogWriter(lambda: target, flush_seconds=5.0, max_records=10_000)
            return ScoringService(settings, store, routing=RouterHolder(RouterConfigSource(inline=config())),
                                  prediction_log=PredictionLog(writer))

        live = service(AppendTarget(blobs.get_container_client("predictions"), "bench"))
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            dead_port = s.getsockname()[1]
        dead_conn = (f"DefaultEndpointsProtocol=http;AccountName={DEV_ACCOUNT};AccountKey={DEV_KEY};"
                     f"BlobEndpoint=http://127.0.0.1:{dead_port}/{DEV_ACCOUNT};")
        down = service(AppendTarget(blob_service(StorageConnection("dead", connection_string=dead_conn),
                                                 timeout=2).get_container_client("predictions"), "down"))

        def core(svc: ScoringService, endpoint: str, body: bytes, i: int) -> bytes:
            return svc.score(endpoint, body, content_type="application/json",
                             headers=headers[i % 4096], request_id=f"r{i}").body

        for body in bodies[:200]:  # warm up (and load the model)
            core(live, "off", body, 0)
            core(down, "off", body, 0)
        single = interleaved({
            "log off (no log block)": lambda i: core(live, "off", bodies[i % 4096], i),
            "log on (sample 1.0)": lambda i: core(live, "on", bodies[i % 4096], i),
            "log on, with features": lambda i: core(live, "features", bodies[i % 4096], i),
            "log on, storage down": lambda i: core(down, "on", bodies[i % 4096], i),
        }, rounds=15, per_round=400)
        batch = interleaved({
            "log off (no log block)": lambda i: core(live, "off", batch_bodies[i % 40], i),
            "log on (sample 1.0)": lambda i: core(live, "on", batch_bodies[i % 40], i),
            "log on, with features": lambda i: core(live, "features", batch_bodies[i % 40], i),
        }, rounds=10, per_round=40)
        started = time.perf_counter()
        live.close()
        close_s = time.perf_counter() - started
        down.close()
        live_stats = live.prediction_log.writer.stats
        down_stats = down.prediction_log.writer.stats

    print(f"\nPrediction log overhead, {os.cpu_count()} cores; model: 500 trees, 63 leaves, "
          f"100 features\n")
    for title, samples in (("single row", single), ("100-row batch", batch)):
        base = summary_us(samples["log off (no log block)"])[0]
        print(f"{title:30s} {'p50 us':>9s} {'p90 us':>9s} {'p99 us':>9s} {'p50 ratio':>10s}")
        for name, values in samples.items():
            p50, p90, p99 = summary_us(values)
            print(f"{name:30s} {p50:9.1f} {p90:9.1f} {p99:9.1f} {p50 / base:10.3f}")
        print()
    print(f"log to Azurite: {live_stats.enqueued:,} records buffered, {live_stats.written:,} written "
          f"in {live_stats.flushes} flushes, dropped {live_stats.dropped or 0}; close() wrote the "
          f"rest in {close_s * 1000:.0f} ms")
    print(f"log to a dead storage: {down_stats.enqueued:,} records buffered, {down_stats.written:,} "
          f"written, dropped and counted {down_stats.dropped}")


if __name__ == "__main__":
    main()
