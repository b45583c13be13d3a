"""The equality check: a compiled forest serves only after it predicts what LightGBM does on
sample rows drawn over the model's feature ranges and split thresholds, missing values included."""

from __future__ import annotations

from typing import Any

import numpy as np

from shared.models.compiled.errors import CompileError
from shared.models.compiled.forest import CompiledForest
from shared.models.compiled.traits import split_thresholds

TOLERANCE = 0.0  # predictions and raw scores equal LightGBM's to the bit (NaN where it has NaN)


def sample_rows(text: str, num_features: int, n: int = 256, seed: int = 20260601,
                thresholds: list[list[float]] | None = None) -> np.ndarray:
    """Seeded rows over the model's feature ranges, with values at and next to its split
    thresholds (where a wrong comparison shows), missing values (NaN), zeros and tiny values."""
    rng = np.random.default_rng(seed)
    head = text[: text.find("\nTree=")]
    infos = next((line.split("=", 1)[1].split() for line in head.splitlines()
                  if line.startswith("feature_infos=")), [])
    lo, hi = np.full(num_features, -1.0), np.full(num_features, 1.0)
    for j, info in enumerate(infos[:num_features]):
        if info.startswith("[") and ":" in info:
            a, b = info[1:-1].split(":", 1)
            lo[j], hi[j] = float(a), float(b)
    if thresholds is None:
        thresholds, _ = split_thresholds(text, num_features)
    span = np.maximum(hi - lo, 1e-6)
    X = rng.uniform(lo - 0.1 * span, hi + 0.1 * span, size=(n, num_features))
    kind = rng.random((n, num_features))
    for j in range(num_features):
        if thresholds[j]:
            ts = np.asarray(thresholds[j])
            rows = np.nonzero(kind[:, j] < 0.4)[0]
            picked = ts[rng.integers(0, len(ts), len(rows))]
            step = rng.integers(-1, 2, len(rows))  # the threshold, or the next double either side
            X[rows, j] = np.where(step == 0, picked,
                                  np.nextafter(picked, np.where(step > 0, np.inf, -np.inf)))
    X[(kind >= 0.4) & (kind < 0.5)] = np.nan
    X[(kind >= 0.5) & (kind < 0.54)] = 0.0
    tiny = (kind >= 0.54) & (kind < 0.56)
    X[tiny] = rng.choice([1e-36, -1e-36, -0.0], size=int(tiny.sum()))
    return X


def check(model: Any, forest: CompiledForest, text: str, tolerance: float = TOLERANCE,
          rows: np.ndarray | None = None) -> None:
    """Raise :class:`CompileError` unless ``forest`` predicts what LightGBM does on sample rows:
    predictions and raw scores, same shapes, within ``tolerance`` (absolute), as a batch (one
    and two threads) and row by row through the single-row path. ``rows``: the sample rows of
    ``text``, when made already."""
    X = sample_rows(text, forest.traits.num_features) if rows is None else rows
    for raw in (False, True):
        expected = model.predict_lightgbm(X, raw_score=raw, num_threads=1)
        for threads in (1, 2):
            _compare(forest.predict(X, raw_score=raw, num_threads=threads), expected, tolerance,
                     f"{'raw scores' if raw else 'predictions'}, batch, {threads} thread(s)")
        for i in range(16):
            one = X[i:i + 1]
            _compare(forest.predict(one, raw_score=raw), model.predict_lightgbm(one, raw_score=raw),
                     tolerance, f"{'raw scores' if raw else 'predictions'}, single row {i}")


def _compare(got: np.ndarray, expected: np.ndarray, tolerance: float, what: str) -> None:
    if got.shape != expected.shape:
        raise CompileError("check_failed", f"{what}: shape {got.shape}, LightGBM {expected.shape}")
    if not np.array_equal(np.isnan(got), np.isnan(expected)):
        raise CompileError("check_failed", f"{what}: missing values differ from LightGBM's")
    diff = np.abs(np.nan_to_num(got) - np.nan_to_num(expected))
    worst = float(diff.max()) if diff.size else 0.0
    if not worst <= tolerance:
        raise CompileError("check_failed", f"{what}: differs from LightGBM by {worst:.3g} "
                                           f"(tolerance {tolerance:g})")
