"""Whole core path (JSON bytes in -> JSON bytes out) against bare Booster.predict and
LightGBM's fast single-row C API.

Single rows and 1,000-row batches on the reference model, rotating over 4,096 distinct
rows; cases interleaved round by round; medians and tails per case; ratios to the bare
calls measured in the same run. Two core-path cases:

- ``bare``: one model, no router, telemetry off (the OpenTelemetry API's no-op);
- ``as deployed``: a router config (two weighted variants, sticky by a header; both on the
  same model, so that the floor is the same model's: two models would also share the CPU
  caches, which the bare calls do not), metrics
  recorded through the OpenTelemetry SDK (a meter provider with a reader, as in Azure),
  5% of requests traced into a batch span processor: what the issue's target counts;
- ``as deployed, compiled trees``: the same with the app's default settings and the model's
  artifact present beside it (built as ``upload-model`` builds it, cached in ``bench/.cache``):
  the model is served compiled from its first request (``--no-compiled`` leaves it out).
"""

from __future__ import annotations

import ctypes
import importlib.util
import json
import os
import sys

import numpy as np
import orjson

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent.parent))

from bench.common import bench_model_path, bench_rows, interleaved, summary_us  # noqa: E402

ROUTER = {"endpoints": {"bench": {
    "variants": [{"name": "control", "model": "bench", "weight": 50},
                 {"name": "candidate", "model": "bench", "weight": 50}],
    "sticky": {"header": "x-user-id"}}}}


def main() -> None:
    import lightgbm as lgb
    from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    from shared.models.blob_source import BlobContent
    from shared.models.store import ModelStore
    from shared.router import RouterConfigSource, RouterHolder
    from shared.scoring.service import ScoringService
    from shared.settings import Settings
    from shared.telemetry import Telemetry

    path = bench_model_path()
    text = path.read_bytes()
    booster = lgb.Booster(model_file=str(path))
    rows = bench_rows()
    bodies = [orjson.dumps({"rows": [row.tolist()]}) for row in rows]
    headers = [{"x-user-id": f"user-{i}"} for i in range(4096)]
    batches = [rows[i:i + 1000] for i in range(0, 4096 - 1000, 1024)]
    batch_bodies = [orjson.dumps({"rows": b.tolist()}) for b in batches]

    artifact = {}

    class Source:  # the model text is already in memory: this measures the request path
        def fetch(self, p, etag=None):
            if p.startswith(".compiled/"):
                if not artifact:
                    from shared.errors import ModelNotFound

                    raise ModelNotFound(p)
                return BlobContent(artifact["data"], "a1", None)
            return None if etag else BlobContent(text, "v1", None)

        def ping(self):
            pass

    class Discard(SpanExporter):
        def export(self, spans):
            return SpanExportResult.SUCCESS

    settings = Settings.from_env({})
    store = ModelStore(Source(), refresh_seconds=3600)
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(BatchSpanProcessor(Discard()))
    # Exemplars off, as shared/telemetry/setup.py configures the Azure Monitor pipeline.
    deployed_telemetry = Telemetry(MeterProvider(metric_readers=[InMemoryMetricReader()],
                                                 exemplar_filter=AlwaysOffExemplarFilter()),
                                   tracer_provider, trace_sample_ratio=0.05)
    routing = RouterHolder(RouterConfigSource(inline=json.dumps(ROUTER)), refresh_seconds=3600)
    bare = ScoringService(settings, store, telemetry=Telemetry())
    deployed = ScoringService(settings, store, telemetry=deployed_telemetry, routing=routing)
    model, _ = store.get("bench")
    compiled_case = None
    if "--no-compiled" not in sys.argv and importlib.util.find_spec("lleaves") is not None:
        from bench.compiled import cached_artifact, parse
        from shared.models.compiled.loader import ArtifactLoader

        artifact["data"] = cached_artifact(parse(path))[0]
        compiled_store = ModelStore(Source(), refresh_seconds=3600, artifacts=ArtifactLoader(Source()))
        compiled_model, _ = compiled_store.get("bench")
        assert compiled_model.backend == "compiled"
        compiled_case = ScoringService(settings, compiled_store, telemetry=deployed_telemetry,
                                       routing=routing)

    def core(service, i: int, body: bytes) -> bytes:
        return service.score("bench", body, content_type="application/json",
                             headers=headers[i % 4096], request_id="bench").body

    # Same rows through the fast C API directly: LightGBM's own floor for one row.
    from shared.models.native import library
    _LIB = library()
    config = model._new_fast_slot(0)[0]
    out = np.empty(1)
    out_len = ctypes.c_int64()

    def fast_c(i: int) -> None:
        row = rows[i % 4096]
        _LIB.LGBM_BoosterPredictForMatSingleRowFast(
            config, ctypes.c_void_p(row.ctypes.data), ctypes.byref(out_len),
            ctypes.c_void_p(out.ctypes.data))

    cases = {
        "Booster.predict (numpy, 1 thread)":
            lambda i: booster.predict(rows[i % 4096:i % 4096 + 1], num_threads=1),
        "LightGBM fast C API (ctypes)": fast_c,
        "scorefn core path, bare": lambda i: core(bare, i, bodies[i % 4096]),
        "scorefn core path, as deployed": lambda i: core(deployed, i, bodies[i % 4096]),
    }
    if compiled_case is not None:
        cases["as deployed, compiled trees"] = lambda i: core(compiled_case, i, bodies[i % 4096])
    # Warm: every case sees every row (and the router every sticky key) once before timing,
    # so returning users are measured; a key seen for the first time pays ~3 us more for
    # its hashing (see bench/router.py).
    for i in range(4096):
        for case in cases.values():
            case(i)
    single = interleaved(cases, rounds=15, per_round=400)
    batch = interleaved({
        "Booster.predict (numpy, 1 thread)": lambda i: booster.predict(batches[i % 3], num_threads=1),
        "scorefn core path, as deployed": lambda i: core(deployed, i, batch_bodies[i % 3]),
    }, rounds=5, per_round=6)
    deployed_telemetry.flush()

    print(f"\nCore path, {os.cpu_count()} cores; model: 500 trees, 63 leaves, 100 features\n")
    base = summary_us(single["Booster.predict (numpy, 1 thread)"])[0]
    fast = summary_us(single["LightGBM fast C API (ctypes)"])[0]
    print(f"{'single row':34s} {'p50 us':>8s} {'p90 us':>8s} {'p99 us':>8s} "
          f"{'/ predict':>10s} {'/ fast C':>9s}")
    for name, samples in single.items():
        p50, p90, p99 = summary_us(samples)
        print(f"{name:34s} {p50:8.1f} {p90:8.1f} {p99:8.1f} {p50 / base:10.2f} {p50 / fast:9.2f}")
    base = summary_us(batch["Booster.predict (numpy, 1 thread)"])[0]
    print(f"\n{'1,000-row batch':34s} {'p50 ms':>8s} {'p90 ms':>8s} {'rows/s':>8s} {'/ predict':>10s}")
    for name, samples in batch.items():
        p50, p90, _ = summary_us(samples)
        print(f"{name:34s} {p50 / 1e3:8.2f} {p90 / 1e3:8.2f} {1000 / (p50 / 1e6):8.0f} {p50 / base:10.2f}")
    for name in [n for n in single if n.startswith(("scorefn", "as deployed"))]:
        p50, _, p99 = summary_us(single[name])
        print(f"\n{name}: single-row p50 / fast C API p50 = {p50 / fast:.2f}; "
              f"p99 / own p50 = {p99 / p50:.2f}", end="")
    print()
    routing.close()


if __name__ == "__main__":
    main()
