"""Runs a parsed request through a model, choosing the thread count by request size."""

from __future__ import annotations

import os

import numpy as np

from shared.models.model import LoadedModel
from shared.payloads import ScoringInput


def threads_for(rows: int, parallel_min_rows: int, max_threads: int) -> int:
    """One thread below ``parallel_min_rows`` (OpenMP start-up dominates small requests and
    its spinning threads hurt tail latency on a shared box); otherwise ``max_threads``, or
    one per core when that is 0."""
    if rows < parallel_min_rows:
        return 1
    return max_threads or (os.cpu_count() or 1)


def predict(model: LoadedModel, request: ScoringInput, *, parallel_min_rows: int,
            max_threads: int) -> np.ndarray:
    """Predictions for ``request``, equal to ``Booster.predict`` on the same matrix (also when
    the model's compiled trees serve it: they are checked bit for bit first)."""
    return predict_with_backend(model, request, parallel_min_rows=parallel_min_rows,
                                max_threads=max_threads)[0]


def predict_with_backend(model: LoadedModel, request: ScoringInput, *, parallel_min_rows: int,
                         max_threads: int) -> tuple[np.ndarray, str]:
    """Predictions for ``request`` and the backend that made them (``lightgbm``/``compiled``)."""
    options = request.options
    return model.predict_with_backend(
        request.X, raw_score=options.raw_score, pred_contrib=options.pred_contrib,
        num_threads=threads_for(request.X.shape[0], parallel_min_rows, max_threads))
