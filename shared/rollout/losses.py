"""Per-row losses of the decision metrics: the terms whose mean is the metric, lower is better.

One definition of each loss, used by the rollout's sequential comparison and by the A/B
report (``scorefn/ab/stats.py``), so the two never disagree on what a metric is.

Predictions ``p`` are what the model answers: for ``binary`` the probability of class 1 (one
value per row), for ``multiclass`` one row of class probabilities per row (``n x k``), for
``regression`` the predicted value. Labels ``y`` are 0/1, the class index, or the value.

- ``log_loss`` (binary, multiclass): ``-log p[y]``, the probability of what happened clipped
  below at ``EPS`` (binary: ``p`` clipped to ``[EPS, 1 - EPS]``), so a sure miss costs ~34.5;
- ``brier`` (binary, multiclass): binary ``(p - y)^2``, multiclass ``sum_k (p_k - [y = k])^2``;
- ``error_rate`` (binary, multiclass): 1 for a wrong decision: ``p >= threshold`` against
  ``y == 1``, the top class (argmax) against ``y``;
- ``squared_error`` (regression): ``(p - y)^2``; its mean is the MSE (decide on the MSE, not
  the RMSE: a mean of per-row terms is what the comparison needs);
- ``absolute_error`` (regression): ``abs(p - y)``.

The binary Brier score is the usual one-class form (scikit-learn's ``brier_score_loss``); the
multiclass one is Brier's original sum over classes, which is twice the binary form when
``k = 2``.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

EPS = 1e-15  # probabilities are clipped to [EPS, 1 - EPS] before the log

LossMetric = Literal["log_loss", "brier", "error_rate", "squared_error", "absolute_error"]

FAMILY_METRICS: dict[str, tuple[LossMetric, ...]] = {
    "binary": ("log_loss", "brier", "error_rate"),
    "regression": ("squared_error", "absolute_error"),
    "multiclass": ("log_loss", "brier", "error_rate"),
}
"""Which metrics fit which objective family (``shared.ablog`` maps LightGBM objectives to families)."""

PRIMARY_METRIC: dict[str, LossMetric] = {
    "binary": "log_loss", "regression": "squared_error", "multiclass": "log_loss",
}
"""The metric a rollout decides on when none is configured."""

METRICS: tuple[LossMetric, ...] = ("log_loss", "brier", "error_rate", "squared_error", "absolute_error")


def per_row_loss(metric: str, y: np.ndarray, p: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """The per-row losses of ``metric`` (float64, one per row; their mean is the metric).

    ``threshold`` is the binary decision threshold of ``error_rate``. ``ValueError`` for an
    unknown metric, a multiclass ``p`` with a regression metric, or rows that do not match.
    """
    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; one of {', '.join(METRICS)}")
    if y.ndim != 1 or p.ndim not in (1, 2) or p.shape[0] != y.shape[0]:
        raise ValueError(f"labels of shape {y.shape} do not match predictions of shape {p.shape}")
    if p.ndim == 2:
        return _multiclass(metric, y, p)
    if metric == "log_loss":
        q = np.clip(p, EPS, 1 - EPS)
        return -(y * np.log(q) + (1 - y) * np.log(1 - q))
    if metric in ("brier", "squared_error"):
        return (p - y) ** 2
    if metric == "absolute_error":
        return np.abs(p - y)
    return ((p >= threshold) != (y == 1)).astype(np.float64)  # error_rate


def _multiclass(metric: str, y: np.ndarray, p: np.ndarray) -> np.ndarray:
    label = y.astype(np.int64)
    if np.any(label != y) or np.any(label < 0) or np.any(label >= p.shape[1]):
        raise ValueError(f"multiclass labels must be class indices 0..{p.shape[1] - 1}")
    rows = np.arange(p.shape[0])
    if metric == "log_loss":
        return -np.log(np.clip(p[rows, label], EPS, 1.0))
    if metric == "brier":
        onehot = np.zeros_like(p)
        onehot[rows, label] = 1.0
        return np.sum((p - onehot) ** 2, axis=1)
    if metric == "error_rate":
        return (p.argmax(axis=1) != label).astype(np.float64)
    raise ValueError(f"{metric} is a regression metric; multiclass predictions take "
                     f"{', '.join(FAMILY_METRICS['multiclass'])}")
