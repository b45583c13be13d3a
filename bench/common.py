"""Helpers shared by the benchmarks: the bench model, Azurite, and robust timing."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "bench" / ".cache"


# The app's timers bind %ROLLOUT_SCHEDULE% and %MONITOR_SCHEDULE%: a host refuses the app
# without them. Benchmarks measure serving, so the timers run once a year.
HOST_SCHEDULES = {"ROLLOUT_SCHEDULE": "0 0 0 1 1 *", "MONITOR_SCHEDULE": "0 0 0 1 1 *"}


def bench_model_path() -> Path:
    """The reference model (500 trees, 63 leaves, 100 features), trained once and cached."""
    from scorefn.demo.models import train_bench_model

    path = CACHE / "bench_500x63x100.txt"
    if not path.exists():
        shipped = Path(__file__).resolve().parent.parent / "scorefn" / "reference_model.txt.gz"
        if shipped.exists():  # the same model, shipped for the latency check
            import gzip

            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(gzip.decompress(shipped.read_bytes()))
        else:
            print("training the bench model (500 trees, 63 leaves, 100 features)...", flush=True)
            train_bench_model(path)
    return path


def bench_rows(n: int = 4096, features: int = 100, seed: int = 17) -> np.ndarray:
    """Distinct rows to rotate over, so the branch predictor cannot learn one path."""
    return np.random.default_rng(seed).normal(size=(n, features))


def percentile(samples: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(samples), q))


def interleaved(cases: dict[str, Callable[[int], None]], *, rounds: int, per_round: int,
                alternate: bool = False) -> dict[str, list[float]]:
    """Run each case ``per_round`` calls per round, cases interleaved round by round, and
    return per-call latencies in seconds. ``fn(i)`` gets a rotating index. ``alternate``:
    every other round runs the cases in reverse order (a case that always runs second pays
    for what the first left in the caches)."""
    samples: dict[str, list[float]] = {name: [] for name in cases}
    counter = 0
    for r in range(rounds):
        order = list(cases.items())
        if alternate and r % 2:
            order.reverse()
        for name, fn in order:
            out = samples[name]
            for _ in range(per_round):
                t0 = time.perf_counter()
                fn(counter)
                out.append(time.perf_counter() - t0)
                counter += 1
    return samples


def summary_us(samples: Sequence[float]) -> tuple[float, float, float]:
    return (percentile(samples, 50) * 1e6, percentile(samples, 90) * 1e6,
            percentile(samples, 99) * 1e6)


def median(values: Sequence[float]) -> float:
    return statistics.median(values)
