"""Routing overhead per call: ``Router.route`` with and without a sticky key.

Each case is timed over batches of calls (a per-call timer would cost as much as a
route); the figure is the median over rounds of the mean per call, cases interleaved
round by round. Keys rotate over 10,000 distinct strings.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from shared.router import Router, parse_config, sticky_key  # noqa: E402

CONFIG = {"endpoints": {
    "churn": {"variants": [{"name": "control", "model": "churn/v1.txt", "weight": 90},
                           {"name": "candidate", "model": "churn/v2.txt", "weight": 10}],
              "sticky": {"header": "x-user-id"}, "salt": "exp-2026-11"},
    "churn-shadow": {"variants": [{"name": "control", "model": "churn/v1.txt", "weight": 90},
                                  {"name": "candidate", "model": "churn/v2.txt", "weight": 10}],
                     "shadow": [{"name": "next", "model": "churn/v3.txt", "fraction": 0.5}]},
    "abn": {"variants": [{"name": f"v{i}", "model": f"abn/v{i}.txt", "weight": i + 1} for i in range(8)]},
}}


def per_call_us(cases: dict[str, Callable[[int], object]], *, rounds: int = 15, batch: int = 20_000
                ) -> dict[str, float]:
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, fn in cases.items():
            t0 = time.perf_counter()
            for i in range(batch):
                fn(i)
            samples[name].append((time.perf_counter() - t0) / batch * 1e6)
    return {name: statistics.median(s) for name, s in samples.items()}


def main() -> None:
    router = Router(parse_config(json.dumps(CONFIG)))
    keys = [f"user-{i}" for i in range(10_000)]
    churn = router.endpoint("churn")
    headers = [{"content-type": "application/json", "x-user-id": k} for k in keys]
    cases: dict[str, Callable[[int], object]] = {
        "baseline: empty call": lambda i: None,
        "single-model mode (no config)": lambda i: router.route("price"),
        "2 variants, no key (weighted random)": lambda i: router.route("churn"),
        "2 variants, sticky key": lambda i: router.route("churn", key=keys[i % 10_000]),
        "2 variants + 1 shadow, sticky key": lambda i: router.route("churn-shadow", key=keys[i % 10_000]),
        "8 variants, no key": lambda i: router.route("abn"),
        "8 variants, sticky key": lambda i: router.route("abn", key=keys[i % 10_000]),
        "sticky_key() from headers + route()": lambda i: router.route(
            "churn", key=sticky_key(churn, headers[i % 10_000])),
    }
    for fn in cases.values():  # warm up
        for i in range(2000):
            fn(i)
    results = per_call_us(cases)
    print(f"\nRouter.route overhead, Python {sys.version.split()[0]}, {os.cpu_count()} cores "
          f"(median of 15 rounds x 20,000 calls)\n")
    print(f"{'case':42s} {'us/call':>8s}")
    for name, us in results.items():
        print(f"{name:42s} {us:8.2f}")


if __name__ == "__main__":
    main()
