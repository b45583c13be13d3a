"""Telemetry overhead: the single-row core path with telemetry off (the OpenTelemetry API's
no-op) against telemetry on (SDK meter provider with a reader, tracer provider sampling every
request into a batch processor), interleaved in one run; and the cold cost of turning the
Azure Monitor exporter on, measured in fresh processes."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import bench_model_path, bench_rows, interleaved, summary_us  # noqa: E402

COLD = """
import json, time
t = time.perf_counter()
import function_app
imported = time.perf_counter() - t
from shared.telemetry import get_telemetry
get_telemetry()
print(json.dumps({"import": imported, "configured": time.perf_counter() - t}))
"""


def main() -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    from shared.models.blob_source import BlobContent
    from shared.models.store import ModelStore
    from shared.scoring.service import ScoringService
    from shared.settings import Settings
    from shared.telemetry import Telemetry

    path = bench_model_path()

    class Source:  # the model is already in memory: this measures the request path only
        def fetch(self, p, etag=None):
            return None if etag else BlobContent(path.read_bytes(), "v1", None)

        def ping(self):
            pass

    class Discard(SpanExporter):
        def export(self, spans):
            return SpanExportResult.SUCCESS

    store = ModelStore(Source(), refresh_seconds=3600)
    store.get("bench")
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(BatchSpanProcessor(Discard()))
    def on(ratio: float) -> Telemetry:
        return Telemetry(MeterProvider(metric_readers=[InMemoryMetricReader()]), tracer_provider,
                         trace_sample_ratio=ratio)

    services = {"telemetry off": ScoringService(Settings.from_env({}), store, telemetry=Telemetry()),
                "on: metrics, 5% traced (the default)":
                    ScoringService(Settings.from_env({}), store, telemetry=on(0.05)),
                "on: metrics, every request traced":
                    ScoringService(Settings.from_env({}), store, telemetry=on(1.0))}
    rows = bench_rows()
    bodies = [orjson.dumps({"rows": [r.tolist()]}) for r in rows]
    def case(service):
        def run(i):
            service.score("bench", bodies[i % 4096], request_id="r")
        return run

    for service in services.values():
        for i in range(500):
            case(service)(i)
    samples = interleaved({name: case(s) for name, s in services.items()}, rounds=15, per_round=400)
    print(f"\nTelemetry overhead, single row, 500-tree model, {os.cpu_count()} cores\n")
    base = summary_us(samples["telemetry off"])[0]
    base_mean = float(np.mean(samples["telemetry off"])) * 1e6
    print(f"{'case':40s} {'p50 us':>8s} {'p99 us':>8s} {'mean us':>8s} "
          f"{'p50 ratio':>10s} {'mean ratio':>11s}")
    for name, values in samples.items():
        p50, _, p99 = summary_us(values)
        mean = float(np.mean(values)) * 1e6
        print(f"{name:40s} {p50:8.1f} {p99:8.1f} {mean:8.1f} {p50 / base:10.3f} {mean / base_mean:11.3f}")

    env_off = {k: v for k, v in os.environ.items() if not k.startswith("APPLICATIONINSIGHTS")}
    env_on = {**env_off, "APPLICATIONINSIGHTS_CONNECTION_STRING":
              "InstrumentationKey=00000000-0000-0000-0000-000000000000;"
              "IngestionEndpoint=http://127.0.0.1:9/"}
    cold = {"off": [], "on": []}
    for _ in range(5):
        for label, env in (("off", env_off), ("on", env_on)):
            out = subprocess.run([sys.executable, "-c", COLD], cwd=ROOT, env=env,
                                 capture_output=True, text=True, check=True)
            cold[label].append(json.loads(out.stdout.strip().splitlines()[-1]))
    print("\nCold cost (fresh processes, medians of 5)")
    for label in ("off", "on"):
        imp = statistics.median(c["import"] for c in cold[label]) * 1000
        conf = statistics.median(c["configured"] for c in cold[label]) * 1000
        print(f"  telemetry {label:3s}: import function_app {imp:6.1f} ms; "
              f"plus telemetry set up on first use {conf - imp:6.1f} ms")


if __name__ == "__main__":
    main()
