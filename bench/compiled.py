"""Compiled trees (lleaves) against LightGBM on the reference model, in the same run.

- compile time of the 500-tree model (compiled once, the artifact cached in
  ``bench/.cache/compiled/``; later runs report the time recorded in the artifact);
- single rows through the scorefn core path (JSON bytes in -> JSON bytes out), LightGBM's fast
  single-row path vs the compiled forest, and the two backends called bare; 4,096 distinct rows
  rotating, cases interleaved round by round;
- a batch of 100,000 rows on one thread: ``Booster.predict`` vs the compiled forest, 5 interleaved
  repeats (medians), with the largest absolute difference of predictions and raw scores.
"""

from __future__ import annotations

import hashlib
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import CACHE, bench_model_path, bench_rows, interleaved, summary_us  # noqa: E402


def compiled_forest(path: Path, model):
    """The checked compiled forest of the bench model, and its compile time (cached)."""
    from shared.models.compiled.artifact import cache_key, pack, unpack
    from shared.models.compiled.caches import LocalCache
    from shared.models.compiled.check import check
    from shared.models.compiled.compiler import compile_in_child
    from shared.models.compiled.forest import CompiledForest
    from shared.models.compiled.target import host_target, versions
    from shared.models.compiled.traits import analyse

    text = model.booster.model_to_string(num_iteration=model.num_iteration)
    traits = analyse(text, model.info.num_features, model.info.num_outputs)
    assert traits.unsupported is None, traits.unsupported
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    key, inputs = cache_key(source="bench", path=path.name, version=digest,
                            target=host_target(), tool_versions=versions())
    cache = LocalCache(CACHE / "compiled")
    data = cache.read(key)
    origin = "cached artifact"
    if data is None:
        print("compiling the bench model with lleaves (takes a while; cached afterwards)...", flush=True)
        obj, seconds = compile_in_child(text, host_target(), timeout=3600)
        data = pack(obj, key, inputs, seconds)
        cache.write(key, data)
        origin = "compiled in this run"
    obj, header = unpack(data, key, inputs)
    start = time.perf_counter()
    forest = CompiledForest(obj, traits)
    load_ms = (time.perf_counter() - start) * 1000
    start = time.perf_counter()
    check(model, forest, text)
    check_ms = (time.perf_counter() - start) * 1000
    return forest, header["compile_seconds"], origin, len(obj), load_ms, check_ms


def main() -> None:
    import lightgbm as lgb
    from azure.storage.blob import BlobServiceClient

    from devhost.azurite import Azurite
    from shared.models.blob_source import BlobSource
    from shared.models.store import ModelStore
    from shared.scoring.service import ScoringService
    from shared.settings import Settings

    path = bench_model_path()
    booster = lgb.Booster(model_file=str(path))
    rows = bench_rows()
    bodies = [orjson.dumps({"rows": [row.tolist()]}) for row in rows]
    batch = np.random.default_rng(23).normal(size=(100_000, 100))

    with Azurite() as azurite:
        container = BlobServiceClient.from_connection_string(
            azurite.connection_string).get_container_client("models")
        container.create_container()
        container.upload_blob("bench.txt", path.read_bytes())
        settings = Settings.from_env({})
        # Two stores over the same blob: one left on LightGBM, one whose model gets the
        # compiled forest (attached as the background compiler would, after the check).
        lgb_store = ModelStore(BlobSource(container, 512 << 20), refresh_seconds=3600)
        cmp_store = ModelStore(BlobSource(container, 512 << 20), refresh_seconds=3600)
        lgb_service, cmp_service = ScoringService(settings, lgb_store), ScoringService(settings, cmp_store)
        lgb_model, _ = lgb_store.get("bench")
        cmp_model, _ = cmp_store.get("bench")
        forest, compile_s, origin, size, load_ms, check_ms = compiled_forest(path, cmp_model)
        cmp_model.attach_compiled(forest)

        def core(service):
            def run(i: int) -> bytes:
                return service.score("bench", bodies[i % 4096], content_type="application/json",
                                     request_id="bench").body
            return run

        assert cmp_service.score("bench", bodies[0]).backend == "compiled"
        assert lgb_service.score("bench", bodies[0]).backend == "lightgbm"
        for i in range(300):
            core(lgb_service)(i)
            core(cmp_service)(i)
        single = interleaved({
            "core path, LightGBM fast path": core(lgb_service),
            "core path, compiled": core(cmp_service),
            "bare LightGBM fast path": lambda i: lgb_model.predict_lightgbm(rows[i % 4096:i % 4096 + 1]),
            "bare compiled forest": lambda i: forest.predict(rows[i % 4096:i % 4096 + 1]),
        }, rounds=15, per_round=400)

        # Single rows through both: equal within 1e-12 (the service's own path)
        one_diff = max(float(np.max(np.abs(forest.predict(rows[i:i + 1]) - booster.predict(rows[i:i + 1]))))
                       for i in range(0, 4096, 8))

    times: dict[str, list[float]] = {"Booster.predict (1 thread)": [], "compiled (1 thread)": []}
    outputs = {}
    for _ in range(5):  # interleaved repeats
        for name in times:
            start = time.perf_counter()
            if name.startswith("Booster"):
                outputs[name] = booster.predict(batch, num_threads=1)
            else:
                outputs[name] = forest.predict(batch, num_threads=1)
            times[name].append(time.perf_counter() - start)
    diff = float(np.max(np.abs(outputs["compiled (1 thread)"] - outputs["Booster.predict (1 thread)"])))
    raw_diff = float(np.max(np.abs(forest.predict(batch, raw_score=True)
                                   - booster.predict(batch, raw_score=True, num_threads=1))))
    exact = float(np.mean(outputs["compiled (1 thread)"] == outputs["Booster.predict (1 thread)"]))

    print(f"\nCompiled trees, {os.cpu_count()} cores; model: 500 trees, 63 leaves, 100 features\n")
    print(f"compile: {compile_s:.1f} s ({origin}); object {size / 1e6:.1f} MB; "
          f"load {load_ms:.0f} ms; equality check {check_ms:.0f} ms")
    base = summary_us(single["core path, LightGBM fast path"])[0]
    print(f"\n{'single row':32s} {'p50 us':>9s} {'p90 us':>9s} {'p99 us':>9s} {'p50 ratio':>10s}")
    for name, samples in single.items():
        p50, p90, p99 = summary_us(samples)
        print(f"{name:32s} {p50:9.1f} {p90:9.1f} {p99:9.1f} {p50 / base:10.2f}")
    print(f"\n{'100,000 rows, 1 thread':32s} {'median s':>9s} {'rows/s':>9s} {'speed-up':>9s}")
    base = statistics.median(times["Booster.predict (1 thread)"])
    for name, samples in times.items():
        med = statistics.median(samples)
        print(f"{name:32s} {med:9.3f} {100_000 / med:9.0f} {base / med:9.2f}")
    print(f"\nmax abs difference to Booster.predict: predictions {diff:.3g}, raw scores {raw_diff:.3g}, "
          f"single rows {one_diff:.3g}; bit-identical predictions: {exact:.1%}")


if __name__ == "__main__":
    main()
