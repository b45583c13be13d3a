"""Whole core path (JSON bytes in -> JSON bytes out) against bare Booster.predict.

Single rows and 1,000-row batches on the reference model, rotating over 4,096 distinct
rows; cases interleaved round by round; medians and tails per case; ratios to
``Booster.predict(num_threads=1)`` on an already-built numpy array measured in the same run.
"""

from __future__ import annotations

import ctypes
import os
import sys

import numpy as np
import orjson

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent.parent))

from bench.common import bench_model_path, bench_rows, interleaved, summary_us  # noqa: E402


def main() -> None:
    import lightgbm as lgb
    from azure.storage.blob import BlobServiceClient

    from devhost.azurite import Azurite
    from shared.blob_source import BlobSource
    from shared.model_store import ModelStore
    from shared.payloads import encode_score_response
    from shared.service import ScoringService
    from shared.settings import Settings

    path = bench_model_path()
    booster = lgb.Booster(model_file=str(path))
    rows = bench_rows()
    bodies = [orjson.dumps({"rows": [row.tolist()]}) for row in rows]
    batches = [rows[i:i + 1000] for i in range(0, 4096 - 1000, 1024)]
    batch_bodies = [orjson.dumps({"rows": b.tolist()}) for b in batches]

    with Azurite() as azurite:
        container = BlobServiceClient.from_connection_string(
            azurite.connection_string).get_container_client("models")
        container.create_container()
        container.upload_blob("bench.txt", path.read_bytes())
        store = ModelStore(BlobSource(container, 512 << 20), refresh_seconds=3600)
        service = ScoringService(Settings.from_env({}), store)
        model, _ = store.get("bench")

        def core(body: bytes) -> bytes:
            result = service.score("bench", body, content_type="application/json")
            return encode_score_response(result.predictions, result.model.to_dict(), "bench")

        # Same rows through the fast C API directly: LightGBM's own floor for one row.
        from lightgbm.basic import _LIB
        config = model._new_fast_slot(0)[0]
        out = np.empty(1)
        out_len = ctypes.c_int64()

        def fast_c(i: int) -> None:
            row = rows[i % 4096]
            _LIB.LGBM_BoosterPredictForMatSingleRowFast(
                config, ctypes.c_void_p(row.ctypes.data), ctypes.byref(out_len),
                ctypes.c_void_p(out.ctypes.data))

        for body in bodies[:200]:
            core(body)
        single = interleaved({
            "Booster.predict (numpy, 1 thread)": lambda i: booster.predict(rows[i % 4096:i % 4096 + 1], num_threads=1),
            "LightGBM fast C API (ctypes)": fast_c,
            "scorefn core path (JSON in/out)": lambda i: core(bodies[i % 4096]),
        }, rounds=15, per_round=400)
        batch = interleaved({
            "Booster.predict (numpy, 1 thread)": lambda i: booster.predict(batches[i % 3], num_threads=1),
            "scorefn core path (JSON in/out)": lambda i: core(batch_bodies[i % 3]),
        }, rounds=5, per_round=6)

    print(f"\nCore path, {os.cpu_count()} cores; model: 500 trees, 63 leaves, 100 features\n")
    base = summary_us(single["Booster.predict (numpy, 1 thread)"])[0]
    print(f"{'single row':38s} {'p50 us':>9s} {'p90 us':>9s} {'p99 us':>9s} {'p50 ratio':>10s}")
    for name, samples in single.items():
        p50, p90, p99 = summary_us(samples)
        print(f"{name:38s} {p50:9.1f} {p90:9.1f} {p99:9.1f} {p50 / base:10.2f}")
    base = summary_us(batch["Booster.predict (numpy, 1 thread)"])[0]
    print(f"\n{'1,000-row batch':38s} {'p50 ms':>9s} {'p90 ms':>9s} {'rows/s':>9s} {'p50 ratio':>10s}")
    for name, samples in batch.items():
        p50, p90, _ = summary_us(samples)
        print(f"{name:38s} {p50 / 1e3:9.2f} {p90 / 1e3:9.2f} {1000 / (p50 / 1e6):9.0f} {p50 / base:10.2f}")
    fast = summary_us(single["LightGBM fast C API (ctypes)"])[0]
    core_p50, _, core_p99 = summary_us(single["scorefn core path (JSON in/out)"])
    print(f"\ncore single-row p50 / fast C API p50 = {core_p50 / fast:.2f}; "
          f"core p99 / own p50 = {core_p99 / core_p50:.2f}")


if __name__ == "__main__":
    main()
