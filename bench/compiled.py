"""Compiled trees against LightGBM, in the same run.

- the reference model (500 trees, 63 leaves, 100 features): its artifact built as
  ``upload-model`` builds it (cached in ``bench/.cache/compiled/``; later runs report the
  compile time recorded in it), uploaded to Azurite and loaded the way an instance loads it
  (``ArtifactLoader``: served compiled from the first request);
- single rows: LightGBM's fast single-row path and the compiled forest, bare and through the
  whole core path (JSON bytes in -> JSON bytes out); 4,096 distinct rows rotating, cases
  interleaved round by round;
- a batch of 100,000 rows on one thread: ``Booster.predict`` vs the compiled forest;
- ``--big``: a big model (2,000 trees, 255 leaves, 100 features; trained and compiled once,
  cached; both take minutes): single rows, LightGBM's fast path vs the compiled forest;
- ``--compile-times``: compile 100, 500 and 2,000 trees of 63 leaves and 100 trees of 255
  leaves on every core (nothing cached), to show how compile time grows.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import CACHE, bench_model_path, bench_rows, interleaved, summary_us  # noqa: E402

BIG = CACHE / "bench_2000x255x100.txt"


def parse(path: Path, name: str = "bench"):
    from shared.models.model import parse_model

    return parse_model(path.read_bytes(), name=name, path=f"{name}.txt", version="", last_modified=None)


def cached_artifact(model, parts: int | None = None) -> tuple[bytes, str, str]:
    """The artifact of ``model`` (built as upload-model builds it, cached): data, key, origin."""
    from shared.models.compiled.build import artifact_key, build_artifact
    from shared.models.compiled.caches import LocalCache

    key, _ = artifact_key(model.info.sha256)
    cache = LocalCache(CACHE / "compiled")
    data = cache.read(key)
    if data is not None:
        return data, key, "cached artifact"
    print(f"compiling {model.info.name} (cached afterwards)...", flush=True)
    artifact = build_artifact(model, parts=parts, nice=0)
    cache.write(key, artifact.data)
    return artifact.data, key, "compiled in this run"


def forest_of(model, data: bytes, key: str):
    from shared.models.compiled.artifact import unpack
    from shared.models.compiled.build import artifact_key, load_forest, model_text, traits_of

    objects, header = unpack(data, key, artifact_key(model.info.sha256)[1])
    return load_forest(objects, traits_of(model, model_text(model))), header


def train_big() -> Path:
    """2,000 trees of 255 leaves on 100 features (trained once, cached)."""
    if not BIG.exists():
        import lightgbm as lgb

        print("training the big model (2,000 trees, 255 leaves; cached afterwards)...", flush=True)
        rng = np.random.default_rng(41)
        X = rng.normal(size=(50_000, 100))
        y = (X[:, :10].sum(axis=1) + rng.normal(size=50_000) > 0).astype(float)
        booster = lgb.train({"objective": "binary", "num_leaves": 255, "min_data_in_leaf": 5,
                             "learning_rate": 0.05, "verbosity": -1, "seed": 3,
                             "force_col_wise": True}, lgb.Dataset(X, y), num_boost_round=2000)
        BIG.parent.mkdir(parents=True, exist_ok=True)
        booster.save_model(str(BIG))
    return BIG


def compile_times() -> None:
    """Compile time by model size, on every core (nothing cached): 100, 500 and 2,000 trees of
    63 leaves (2,000: the reference's trees four times), and 100 trees of 255 leaves."""
    import lightgbm as lgb

    from shared.models.compiled.build import compile_forest, default_parts

    ref = lgb.Booster(model_file=str(bench_model_path()))
    cases = [(f"{trees} trees x 63 leaves", ref.model_to_string(num_iteration=trees))
             for trees in (100, 500)]
    cases.append(("2000 trees x 63 leaves", _repeat_trees(ref.model_to_string(), 4)))
    rng = np.random.default_rng(41)
    X = rng.normal(size=(50_000, 100))
    wide = lgb.train({"objective": "binary", "num_leaves": 255, "min_data_in_leaf": 5,
                      "verbosity": -1, "seed": 3},
                     lgb.Dataset(X, (X[:, :10].sum(axis=1) > 0).astype(float)), num_boost_round=100)
    cases.append(("100 trees x 255 leaves", wide.model_to_string()))
    cores = default_parts()
    print(f"\n{'model':26s} {f'compile s, {cores} processes':>24s}")
    for label, text in cases:
        start = time.perf_counter()
        compile_forest(text, parts=cores, timeout=7200, nice=0)
        print(f"{label:26s} {time.perf_counter() - start:24.1f}", flush=True)


def _repeat_trees(text: str, times: int) -> str:
    """The model's trees ``times`` over (renumbered): the same shapes, ``times`` as many."""
    import re

    head, sep, tail = text.partition("end of trees")
    first = head.index("\nTree=") + 1
    trees = [t.strip("\n") for t in re.split(r"\n(?=Tree=)", head[first:]) if t.strip()]
    out = [f"Tree={i}\n" + trees[i % len(trees)].split("\n", 1)[1]
           for i in range(len(trees) * times)]
    header = "\n".join(line for line in head[:first].splitlines() if not line.startswith("tree_sizes="))
    return header + "\n\n" + "\n\n\n".join(out) + "\n\n\n" + sep + tail


def main() -> None:
    if "--compile-times" in sys.argv:
        compile_times()
        return
    import lightgbm as lgb
    from azure.storage.blob import BlobServiceClient

    from devhost.azurite import Azurite
    from shared.models.blob_source import BlobSource
    from shared.models.compiled.artifact import blob_path
    from shared.models.compiled.loader import ArtifactLoader
    from shared.models.store import ModelStore
    from shared.scoring.service import ScoringService
    from shared.settings import Settings

    path = bench_model_path()
    booster = lgb.Booster(model_file=str(path))
    rows = bench_rows()
    bodies = [orjson.dumps({"rows": [row.tolist()]}) for row in rows]
    batch = np.random.default_rng(23).normal(size=(100_000, 100))
    model = parse(path)
    data, key, origin = cached_artifact(model)
    forest, header = forest_of(model, data, key)

    with Azurite() as azurite:
        container = BlobServiceClient.from_connection_string(
            azurite.connection_string).get_container_client("models")
        container.create_container()
        container.upload_blob("bench.txt", path.read_bytes())
        container.upload_blob(blob_path("bench.txt", key), data)
        settings = Settings.from_env({})
        # Two stores over the same blob: LightGBM, and the app's default (its artifact loaded
        # with the model, as an instance loads it).
        lgb_store = ModelStore(BlobSource(container, 512 << 20), refresh_seconds=3600)
        loader = ArtifactLoader(BlobSource(container, 512 << 20))
        cmp_store = ModelStore(BlobSource(container, 512 << 20), refresh_seconds=3600, artifacts=loader)
        lgb_service, cmp_service = ScoringService(settings, lgb_store), ScoringService(settings, cmp_store)
        lgb_model, _ = lgb_store.get("bench")
        start = time.perf_counter()
        cmp_store.get("bench")
        load_s = time.perf_counter() - start
        assert cmp_service.score("bench", bodies[0]).backend == "compiled", loader.counts
        assert lgb_service.score("bench", bodies[0]).backend == "lightgbm"

        def core(service):
            def run(i: int) -> bytes:
                return service.score("bench", bodies[i % 4096], content_type="application/json",
                                     request_id="bench").body
            return run

        for i in range(300):
            core(lgb_service)(i)
            core(cmp_service)(i)
        single = interleaved({
            "bare LightGBM fast path": lambda i: lgb_model.predict_lightgbm(rows[i % 4096:i % 4096 + 1]),
            "bare compiled forest": lambda i: forest.predict(rows[i % 4096:i % 4096 + 1]),
            "core path, LightGBM": core(lgb_service),
            "core path, compiled": core(cmp_service),
        }, rounds=15, per_round=400)
        one_equal = all(np.array_equal(forest.predict(rows[i:i + 1]), booster.predict(rows[i:i + 1]))
                        for i in range(0, 4096, 8))
        cmp_store.close()

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
    equal = np.array_equal(outputs["compiled (1 thread)"], outputs["Booster.predict (1 thread)"])
    raw_equal = np.array_equal(forest.predict(batch, raw_score=True),
                               booster.predict(batch, raw_score=True, num_threads=1))

    print(f"\nCompiled trees, {os.cpu_count()} cores; model: 500 trees, 63 leaves, 100 features\n")
    print(f"artifact: compiled in {header['compile_seconds']:.1f} s ({origin}) on "
          f"{len(header['sizes']) - (len(header['sizes']) > 1)} process(es); objects "
          f"{sum(header['sizes']) / 1e6:.1f} MB; model load with its artifact (download, parse, "
          f"load, check) {load_s * 1000:.0f} ms")
    _single_table(single, "bare LightGBM fast path")
    print(f"\n{'100,000 rows, 1 thread':32s} {'median s':>9s} {'rows/s':>9s} {'speed-up':>9s}")
    base = statistics.median(times["Booster.predict (1 thread)"])
    for name, samples in times.items():
        med = statistics.median(samples)
        print(f"{name:32s} {med:9.3f} {100_000 / med:9.0f} {base / med:9.2f}")
    print(f"\nequal to Booster.predict bit for bit: predictions {equal}, raw scores {raw_equal}, "
          f"single rows {one_equal}")
    if "--big" in sys.argv:
        big_model()


def big_model() -> None:
    """2,000 trees x 255 leaves: single rows, LightGBM's fast path vs the compiled forest."""
    model = parse(train_big(), "big")
    data, key, origin = cached_artifact(model)
    forest, header = forest_of(model, data, key)
    rows = bench_rows()
    for i in range(200):
        model.predict_lightgbm(rows[i:i + 1])
        forest.predict(rows[i:i + 1])
    single = interleaved({
        "bare LightGBM fast path": lambda i: model.predict_lightgbm(rows[i % 4096:i % 4096 + 1]),
        "bare compiled forest": lambda i: forest.predict(rows[i % 4096:i % 4096 + 1]),
    }, rounds=10, per_round=200)
    equal = all(np.array_equal(forest.predict(rows[i:i + 1]), model.predict_lightgbm(rows[i:i + 1]))
                for i in range(0, 4096, 16))
    print(f"\nBig model: 2,000 trees, 255 leaves, 100 features; artifact compiled in "
          f"{header['compile_seconds']:.1f} s ({origin}), objects {sum(header['sizes']) / 1e6:.1f} MB; "
          f"equal bit for bit: {equal}")
    _single_table(single, "bare LightGBM fast path")


def _single_table(single: dict[str, list[float]], base_name: str) -> None:
    base = summary_us(single[base_name])[0]
    print(f"\n{'single row':32s} {'p50 us':>9s} {'p90 us':>9s} {'p99 us':>9s} {'p50 ratio':>10s}")
    for name, samples in single.items():
        p50, p90, p99 = summary_us(samples)
        print(f"{name:32s} {p50:9.1f} {p90:9.1f} {p99:9.1f} {p50 / base:10.2f}")


if __name__ == "__main__":
    main()
