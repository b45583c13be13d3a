"""What drift monitoring costs a request: the core path as deployed with and without the
in-process counts (``MONITOR_ENABLED``), cases interleaved round by round, ratios of medians
measured in the same run. Target: at most 5% at p50 on single rows.

Three cases, run in alternating order round by round: off, on, and off again (an A/A pair:
the difference between the two "off" services is the measurement's own noise). The counts are
real (the collector's thread counts the rows under the reference model's bins
as the app does, every 10 s or 8,192 rows); its writes go to a container that keeps the last
blob in memory (storage is not what is measured here). Also printed: the served blob's size
for the 100-feature reference model, and the counting's own cost per row beside LightGBM's
prediction of the same rows (batch jobs count each unit in line).
"""

from __future__ import annotations

import json
import os
import sys
import time

import orjson

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent.parent))

from bench.common import bench_model_path, bench_rows, interleaved, summary_us  # noqa: E402

ROUTER = {"endpoints": {"bench": {
    "variants": [{"name": "control", "model": "bench", "weight": 50},
                 {"name": "candidate", "model": "bench", "weight": 50}],
    "sticky": {"header": "x-user-id"}}}}


class MemoryContainer:
    """Keeps what is written in memory: the collector's writes cost no storage round trip."""

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}

    def get_blob_client(self, name: str) -> MemoryContainer._Blob:
        return MemoryContainer._Blob(self, name)

    class _Blob:
        def __init__(self, owner: MemoryContainer, name: str) -> None:
            self.owner, self.name = owner, name

        def upload_blob(self, data: bytes, overwrite: bool = False) -> None:
            self.owner.blobs[self.name] = data


def main() -> None:
    from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider

    from shared.models.blob_source import BlobContent
    from shared.models.store import ModelStore
    from shared.monitoring.binning import reference_binning
    from shared.monitoring.collector import Collector
    from shared.monitoring.profile import count
    from shared.router import RouterConfigSource, RouterHolder
    from shared.scoring.service import ScoringService
    from shared.settings import Settings
    from shared.telemetry import Telemetry

    path = bench_model_path()
    text = path.read_bytes()
    rows = bench_rows()
    bodies = [orjson.dumps({"rows": [row.tolist()]}) for row in rows]
    headers = [{"x-user-id": f"user-{i}"} for i in range(4096)]

    class Source:
        def fetch(self, p, etag=None):
            if p.startswith(".compiled/"):
                from shared.errors import ModelNotFound

                raise ModelNotFound(p)
            return None if etag else BlobContent(text, "v1", None)

        def ping(self):
            pass

    settings = Settings.from_env({})
    store = ModelStore(Source(), refresh_seconds=3600)
    model, _ = store.get("bench")
    binning = reference_binning(model.info, rows, model.predict(rows))

    class Binnings:  # the reference's bins, as the app reads them beside the model
        def get(self, info):
            return binning

    telemetry = Telemetry(MeterProvider(metric_readers=[InMemoryMetricReader()],
                                        exemplar_filter=AlwaysOffExemplarFilter()),
                          TracerProvider(), trace_sample_ratio=0.0)
    routing = RouterHolder(RouterConfigSource(inline=json.dumps(ROUTER)), refresh_seconds=3600)
    target = MemoryContainer()
    collector = Collector(lambda: target, Binnings(), flush_seconds=settings.monitor_flush_seconds,
                          max_pending_rows=settings.monitor_max_pending_rows)  # type: ignore[arg-type]
    off = ScoringService(settings, store, telemetry=telemetry, routing=routing)
    off_again = ScoringService(settings, store, telemetry=telemetry, routing=routing)
    on = ScoringService(settings, store, telemetry=telemetry, routing=routing, monitor=collector)

    def core(service, i: int) -> bytes:
        return service.score("bench", bodies[i % 4096], content_type="application/json",
                             headers=headers[i % 4096], request_id="bench").body

    # The same "off" service twice: the difference between the two is the measurement's noise.
    cases = {"as deployed, monitoring off": lambda i: core(off, i),
             "as deployed, monitoring on": lambda i: core(on, i),
             "as deployed, monitoring off (A/A)": lambda i: core(off_again, i)}
    for i in range(4096):
        for case in cases.values():
            case(i)
    single = interleaved(cases, rounds=24, per_round=400, alternate=True)
    print(f"\nMonitoring overhead, {os.cpu_count()} cores; model: 500 trees, 63 leaves, "
          f"100 features\n")
    base = summary_us(single["as deployed, monitoring off"])[0]
    print(f"{'single row':38s} {'p50 us':>8s} {'p90 us':>8s} {'p99 us':>8s} {'/ off':>7s}")
    for name, samples in single.items():
        p50, p90, p99 = summary_us(samples)
        print(f"{name:38s} {p50:8.1f} {p90:8.1f} {p99:8.1f} {p50 / base:7.3f}")

    # The counting's own work per row, in 4,096-row groups, beside the model's own time for the
    # same rows (a batch job counts each unit in line: this is what it adds to one).
    X = rows
    predictions = model.predict(X)
    counted, predicted = [], []
    for _ in range(7):
        start = time.perf_counter()
        count(binning, X, predictions)
        counted.append(time.perf_counter() - start)
        start = time.perf_counter()
        model.predict(X)
        predicted.append(time.perf_counter() - start)
    per_row_us = sorted(counted)[3] / len(X) * 1e6
    predict_us = sorted(predicted)[3] / len(X) * 1e6
    collector.flush()
    size = max((len(v) for v in target.blobs.values()), default=0)
    print(f"\ncounting: {per_row_us:.2f} us per row (100 features, vectorised); LightGBM "
          f"predict, 1 thread: {predict_us:.2f} us per row; counting / predict = "
          f"{per_row_us / predict_us:.3f} (what a batch job's unit pays)")
    print(f"served blob for one endpoint and hour (one variant): {size:,} bytes; counted "
          f"{collector.stats.counted_rows:,} rows, dropped {sum(collector.stats.dropped.values())}")
    on_p50 = summary_us(single["as deployed, monitoring on"])[0]
    again = summary_us(single["as deployed, monitoring off (A/A)"])[0]
    print(f"\nsingle-row p50, monitoring on / the two offs' mean: "
          f"{on_p50 / ((base + again) / 2):.3f} (target at most 1.05); the two offs differ by "
          f"{again / base:.3f} (noise: the same service built twice)")
    collector.close()
    routing.close()


if __name__ == "__main__":
    main()
