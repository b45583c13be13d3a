"""Shadow traffic's effect on the answering variant: the single-row core path with no shadow
against a shadow on every request (fraction 1.0, scored in the background pool), interleaved
in one run. The shadow must not add to the primary's latency beyond a small bound."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import bench_model_path, bench_rows, interleaved, summary_us  # noqa: E402


def main() -> None:
    from shared.models.blob_source import BlobContent
    from shared.models.store import ModelStore
    from shared.router import RouterConfigSource, RouterHolder, ShadowRunner
    from shared.scoring.service import ScoringService
    from shared.settings import Settings
    from shared.telemetry import Telemetry

    data = bench_model_path().read_bytes()

    class Source:
        def fetch(self, p, etag=None):
            return None if etag else BlobContent(data, "v1", None)

        def ping(self):
            pass

    def service(shadow: bool) -> ScoringService:
        endpoint = {"variants": [{"name": "control", "model": "a.txt"}]}
        if shadow:
            endpoint["shadow"] = [{"name": "next", "model": "b.txt", "fraction": 1.0}]
        routing = RouterHolder(RouterConfigSource(inline=orjson.dumps(
            {"endpoints": {"bench": endpoint}}).decode()))
        store = ModelStore(Source(), refresh_seconds=3600)
        store.get("a.txt")
        store.get("b.txt")
        return ScoringService(Settings.from_env({}), store, telemetry=Telemetry(),
                              routing=routing, shadows=ShadowRunner(workers=1, max_pending=64))

    plain, shadowed = service(False), service(True)
    bodies = [orjson.dumps({"rows": [r.tolist()]}) for r in bench_rows()]
    cases = {"no shadow": lambda i: plain.score("bench", bodies[i % 4096]),
             "shadow on every request": lambda i: shadowed.score("bench", bodies[i % 4096])}
    for fn in cases.values():
        for i in range(300):
            fn(i)
    samples = interleaved(cases, rounds=15, per_round=300)
    stats = shadowed.shadows.stats
    print(f"\nShadow traffic, single row, 500-tree model (both variants), {os.cpu_count()} cores\n")
    base_p50, _, base_p99 = summary_us(samples["no shadow"])
    print(f"{'primary latency':28s} {'p50 us':>8s} {'p99 us':>8s} {'p50 ratio':>10s} {'p99 ratio':>10s}")
    for name, values in samples.items():
        p50, _, p99 = summary_us(values)
        print(f"{name:28s} {p50:8.1f} {p99:8.1f} {p50 / base_p50:10.2f} {p99 / base_p99:10.2f}")
    print(f"\nshadows submitted {stats.submitted}, completed {stats.completed}, "
          f"dropped (pool full) {stats.dropped}, failed {stats.failed}")
    plain.close()
    shadowed.close()


if __name__ == "__main__":
    main()
