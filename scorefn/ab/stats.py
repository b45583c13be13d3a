"""Statistics of the A/B report: pure functions on numpy arrays (no storage, no plotting).

- AUC by the rank (Mann-Whitney) statistic, its variance by DeLong's method (Sun & Xu's
  fast algorithm), for one model, for two independent samples (A/B arms) and for two
  models scored on the same rows (a shadow and the answer: paired DeLong).
- Mean-type metrics (log loss, Brier score, MAE, accuracy) by the central limit theorem;
  RMSE by the delta method on the mean squared error. Paired comparisons use per-row
  differences of the influence values, so the correlation between the two models counts.
- Rows are not independent when one user (sticky key) or one multi-row request gives many
  outcomes: with ``groups`` (a cluster id per row) the standard errors are cluster-robust
  (influence values summed per cluster; for AUC, Obuchowski's clustered DeLong), which is
  what keeps an A/A test's false positives at the nominal rate. Without ``groups``, or
  when every cluster has one row, they are the usual independent-rows errors.
- Normal-approximation intervals and two-sided z tests; the outcomes still needed for a
  decision come from the observed difference and its standard error (80% power, 5% level).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Any

import numpy as np

from shared.rollout import losses

_NORMAL = NormalDist()
EPS = losses.EPS
ALPHA = 0.05
POWER = 0.8
MIN_OUTCOMES = 30        # per variant, before any verdict
MIN_PER_CLASS = 5        # binary: positives and negatives per variant


@dataclass(frozen=True)
class Metric:
    name: str
    label: str
    higher_is_better: bool


METRICS: dict[str, Metric] = {
    "auc": Metric("auc", "AUC", True),
    "log_loss": Metric("log_loss", "log loss", False),
    "brier": Metric("brier", "Brier score", False),
    "accuracy": Metric("accuracy", "accuracy", True),
    "rmse": Metric("rmse", "RMSE", False),
    "mae": Metric("mae", "MAE", False),
}
OBJECTIVE_METRICS: dict[str, tuple[str, ...]] = {
    "binary": ("auc", "log_loss", "brier"),
    "regression": ("rmse", "mae"),
    "multiclass": ("log_loss", "accuracy"),
}
PRIMARY: dict[str, str] = {"binary": "auc", "regression": "rmse", "multiclass": "log_loss"}


@dataclass(frozen=True)
class Estimate:
    """A metric's value with its standard error and a 95% interval, on ``n`` outcomes."""

    value: float
    se: float
    low: float
    high: float
    n: int

    def to_dict(self) -> dict[str, Any]:
        return {k: _clean(v) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class Comparison:
    """``candidate - control`` of one metric: difference, its 95% interval and p value."""

    metric: str
    delta: float
    se: float
    low: float
    high: float
    z: float
    p_value: float
    n_control: int
    n_candidate: int
    paired: bool

    @property
    def n(self) -> int:
        return self.n_candidate if self.paired else self.n_control + self.n_candidate

    def improves(self) -> bool:
        """Whether the candidate's value is the better one (by the point estimate)."""
        return (self.delta > 0) == METRICS[self.metric].higher_is_better and self.delta != 0

    def to_dict(self) -> dict[str, Any]:
        return {k: _clean(v) for k, v in asdict(self).items()}


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def z_quantile(p: float) -> float:
    return _NORMAL.inv_cdf(p)


def two_sided_p(z: float) -> float:
    if not math.isfinite(z):
        return float("nan") if math.isnan(z) else 0.0
    return 2.0 * (1.0 - _NORMAL.cdf(abs(z)))


# -- AUC -------------------------------------------------------------------------------


def midranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n of ``x``, ties sharing their average rank."""
    x = np.asarray(x, dtype=np.float64)
    n = x.size
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    edges = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1], True])
    starts, ends = edges[:-1], edges[1:]
    ranks = np.empty(n, dtype=np.float64)
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    return ranks


def auc(y: np.ndarray, p: np.ndarray) -> float:
    """Area under the ROC curve: the probability that a random positive scores above a
    random negative (ties count half). NaN without both classes."""
    y = np.asarray(y) == 1
    m, n = int(y.sum()), int((~y).sum())
    if m == 0 or n == 0:
        return float("nan")
    r = midranks(p)
    return float((r[y].sum() - m * (m + 1) / 2.0) / (m * n))


def _delong_parts(y: np.ndarray, p: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """AUC and DeLong's structural components (one per positive, one per negative)."""
    y = np.asarray(y) == 1
    pos, neg = np.asarray(p, dtype=np.float64)[y], np.asarray(p, dtype=np.float64)[~y]
    m, n = pos.size, neg.size
    tz = midranks(np.concatenate([pos, neg]))
    tx, ty = midranks(pos), midranks(neg)
    value = (tz[:m].sum() - m * (m + 1) / 2.0) / (m * n)
    v10 = (tz[:m] - tx) / n          # per positive: share of negatives it beats
    v01 = 1.0 - (tz[m:] - ty) / m    # per negative: share of positives that beat it
    return float(value), v10, v01


def clusters(groups: np.ndarray | None) -> tuple[np.ndarray, int] | None:
    """``groups`` as dense ids 0..k-1 and k; ``None`` when there are none or every row is
    its own cluster (then the independent-rows formulas apply as they are)."""
    if groups is None:
        return None
    ids, dense = np.unique(np.asarray(groups), return_inverse=True)
    return None if ids.size == dense.size else (dense.reshape(-1), int(ids.size))


def _delong_var(y: np.ndarray, v10: np.ndarray, v01: np.ndarray, value: float,
                groups: np.ndarray | None) -> float:
    """The variance of an AUC (or of a difference of two, from differenced components)."""
    pos = np.asarray(y) == 1
    m, n = v10.size, v01.size
    dense = clusters(groups)
    if dense is None:
        return float(np.var(v10, ddof=1) / m + np.var(v01, ddof=1) / n)
    g, k = dense
    if k < 2:
        return float("nan")
    # Obuchowski (1997): per cluster, the sums of its positives' and negatives' components.
    s10 = np.bincount(g[pos], weights=v10 - v10.mean(), minlength=k)
    s01 = np.bincount(g[~pos], weights=v01 - v01.mean(), minlength=k)
    return float(k / (k - 1) * (np.sum(s10 ** 2) / m ** 2 + np.sum(s01 ** 2) / n ** 2
                                + 2 * np.sum(s10 * s01) / (m * n)))


def auc_estimate(y: np.ndarray, p: np.ndarray, groups: np.ndarray | None = None) -> Estimate:
    y = np.asarray(y)
    m, n = int((y == 1).sum()), int((y != 1).sum())
    if m < 2 or n < 2:
        return _nan_estimate(y.size)
    value, v10, v01 = _delong_parts(y, p)
    se = math.sqrt(max(_delong_var(y, v10, v01, value, groups), 0.0))
    return _estimate(value, se, y.size, lo=0.0, hi=1.0)


def auc_paired(y: np.ndarray, p_control: np.ndarray, p_candidate: np.ndarray,
               groups: np.ndarray | None = None) -> Comparison:
    """Two models' AUCs on the same rows (paired DeLong test)."""
    y = np.asarray(y)
    m, n = int((y == 1).sum()), int((y != 1).sum())
    if m < 2 or n < 2:
        return _nan_comparison("auc", y.size, y.size, paired=True)
    a, a10, a01 = _delong_parts(y, p_control)
    b, b10, b01 = _delong_parts(y, p_candidate)
    var = _delong_var(y, b10 - a10, b01 - a01, b - a, groups)
    return _comparison("auc", b - a, math.sqrt(max(var, 0.0)), y.size, y.size, paired=True)


# -- mean-type metrics -------------------------------------------------------------------


# The report's metric names for the losses of shared/rollout/losses.py (one definition of each).
_LOSS_OF = {"log_loss": "log_loss", "brier": "brier", "rmse": "squared_error", "mse": "squared_error",
            "mae": "absolute_error"}


def per_row_loss(metric: str, y: np.ndarray, p: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """The per-row terms whose mean is ``metric`` (for RMSE: squared errors; for accuracy:
    1 for a right decision, so not a loss)."""
    if metric == "accuracy":
        return 1.0 - losses.per_row_loss("error_rate", y, p, threshold)
    if metric not in _LOSS_OF:
        raise ValueError(f"unknown metric {metric!r}")
    return losses.per_row_loss(_LOSS_OF[metric], y, p, threshold)


def _influence(metric: str, y: np.ndarray, p: np.ndarray, threshold: float) -> tuple[float, np.ndarray]:
    """The metric's value and per-row influence values (se = sd(influence) / sqrt(n))."""
    terms = per_row_loss(metric, y, p, threshold)
    mean = float(terms.mean())
    if metric == "rmse":
        value = math.sqrt(mean)
        return value, (terms - mean) / (2 * value) if value > 0 else np.zeros_like(terms)
    return mean, terms - mean


def _mean_se(infl: np.ndarray, groups: np.ndarray | None) -> float:
    """The standard error of a mean-type metric from its per-row influence values."""
    dense = clusters(groups)
    if dense is None:
        return float(np.std(infl, ddof=1) / math.sqrt(infl.size))
    g, k = dense
    if k < 2:
        return float("nan")
    sums = np.bincount(g, weights=infl - infl.mean(), minlength=k)
    return float(math.sqrt(k / (k - 1) * np.sum(sums ** 2)) / infl.size)


def estimate(metric: str, y: np.ndarray, p: np.ndarray, threshold: float = 0.5,
             groups: np.ndarray | None = None) -> Estimate:
    """``metric`` of predictions ``p`` against labels ``y`` with a 95% interval; ``groups``:
    the cluster of each row (its user), for cluster-robust errors."""
    y = np.asarray(y)
    if metric == "auc":
        return auc_estimate(y, p, groups)
    if y.size < 2:
        return _nan_estimate(y.size)
    value, infl = _influence(metric, y, p, threshold)
    se = _mean_se(infl, groups)
    bounds = {"accuracy": (0.0, 1.0), "brier": (0.0, 1.0)}.get(metric, (0.0, math.inf))
    return _estimate(value, se, y.size, *bounds)


def compare_independent(metric: str, y_control: np.ndarray, p_control: np.ndarray,
                        y_candidate: np.ndarray, p_candidate: np.ndarray,
                        threshold: float = 0.5, groups_control: np.ndarray | None = None,
                        groups_candidate: np.ndarray | None = None) -> Comparison:
    """Candidate minus control on two independent samples (the arms of an A/B test)."""
    a = estimate(metric, y_control, p_control, threshold, groups_control)
    b = estimate(metric, y_candidate, p_candidate, threshold, groups_candidate)
    se = math.sqrt(a.se ** 2 + b.se ** 2) if math.isfinite(a.se) and math.isfinite(b.se) else float("nan")
    return _comparison(metric, b.value - a.value, se, a.n, b.n, paired=False)


def compare_paired(metric: str, y: np.ndarray, p_control: np.ndarray, p_candidate: np.ndarray,
                   threshold: float = 0.5, groups: np.ndarray | None = None) -> Comparison:
    """Candidate minus control scored on the same rows (a shadow against the answer)."""
    y = np.asarray(y)
    if metric == "auc":
        return auc_paired(y, p_control, p_candidate, groups)
    if y.size < 2:
        return _nan_comparison(metric, y.size, y.size, paired=True)
    a, ia = _influence(metric, y, p_control, threshold)
    b, ib = _influence(metric, y, p_candidate, threshold)
    se = _mean_se(ib - ia, groups)
    return _comparison(metric, b - a, se, y.size, y.size, paired=True)


def interval(comparison: Comparison, alpha: float) -> tuple[float, float]:
    """The comparison's two-sided interval at level ``alpha`` (the one its test uses)."""
    zq = z_quantile(1 - alpha / 2)
    return comparison.delta - zq * comparison.se, comparison.delta + zq * comparison.se


def percent(share: float) -> str:
    """A share as a percentage with the digits it needs: 5%, 2.5%, 1.67%, 98.33%."""
    return f"{share * 100:.2f}".rstrip("0").rstrip(".") + "%"


def confidence(alpha: float) -> str:
    """The confidence of an interval at level ``alpha``: 95%, 97.5%, 98.33%."""
    return percent(1 - alpha)


def _estimate(value: float, se: float, n: int, lo: float = -math.inf, hi: float = math.inf) -> Estimate:
    z = z_quantile(1 - ALPHA / 2)
    return Estimate(value, se, max(lo, value - z * se), min(hi, value + z * se), n)


def _nan_estimate(n: int) -> Estimate:
    nan = float("nan")
    return Estimate(nan, nan, nan, nan, n)


def _comparison(metric: str, delta: float, se: float, n_a: int, n_b: int, *, paired: bool) -> Comparison:
    if not (math.isfinite(delta) and math.isfinite(se)):
        return _nan_comparison(metric, n_a, n_b, paired=paired)
    zq = z_quantile(1 - ALPHA / 2)
    if se > 0:
        z = delta / se
    else:
        z = 0.0 if delta == 0 else math.copysign(math.inf, delta)
    return Comparison(metric, delta, se, delta - zq * se, delta + zq * se, z, two_sided_p(z),
                      n_a, n_b, paired)


def _nan_comparison(metric: str, n_a: int, n_b: int, *, paired: bool) -> Comparison:
    nan = float("nan")
    return Comparison(metric, nan, nan, nan, nan, nan, nan, n_a, n_b, paired)


# -- decisions ---------------------------------------------------------------------------


def outcomes_needed(delta: float, se: float, n_now: int, *, alpha: float = ALPHA,
                    power: float = POWER) -> int | None:
    """About how many more outcomes (in total, split as now) a test at level ``alpha``
    needs to detect a true difference of ``delta`` with probability ``power``, given that
    ``n_now`` outcomes gave standard error ``se`` (se shrinks as 1/sqrt(n)). ``None`` when
    the difference is zero or unknown."""
    if not (math.isfinite(delta) and math.isfinite(se)) or delta == 0 or se <= 0 or n_now <= 0:
        return None
    target = abs(delta) / (z_quantile(1 - alpha / 2) + z_quantile(power))
    total = n_now * (se / target) ** 2
    return max(0, math.ceil(total - n_now))


@dataclass(frozen=True)
class Verdict:
    """``kind`` is ``better``, ``worse`` or ``undecided``; ``text`` says it in words."""

    kind: str
    text: str
    more_needed: int | None
    alpha: float


def enough_outcomes(metric: str, y: np.ndarray, minimum: int = MIN_OUTCOMES,
                    units: int | None = None) -> str | None:
    """Why ``y`` is too small for a test (``None`` when it is not); ``units``: how many
    independent units (users) the outcomes come from, when fewer than the outcomes."""
    y = np.asarray(y)
    if y.size < minimum:
        return f"{y.size} outcomes (a test needs at least {minimum} per variant)"
    if units is not None and units < minimum:
        return (f"{y.size} outcomes from only {units} users or requests (a test needs at least "
                f"{minimum} per variant)")
    if metric in ("auc", "log_loss", "brier") and y.ndim == 1 and set(np.unique(y)) <= {0, 1}:
        pos = int((y == 1).sum())
        if min(pos, y.size - pos) < MIN_PER_CLASS:
            return (f"only {min(pos, y.size - pos)} outcomes of one class "
                    f"(a test needs at least {MIN_PER_CLASS} of each)")
    return None


def verdict(comparison: Comparison, *, control: str, candidate: str, alpha: float = ALPHA,
            too_few: str | None = None) -> Verdict:
    """A plain-language verdict on ``candidate`` against ``control`` from a comparison."""
    metric = METRICS[comparison.metric]
    more = outcomes_needed(comparison.delta, comparison.se, comparison.n, alpha=alpha)
    if too_few is not None or not math.isfinite(comparison.p_value):
        reason = too_few or "the metric is not defined on these outcomes"
        need = (f"; about {more:,} more outcomes needed at the difference seen so far"
                if more is not None else "")
        return Verdict("undecided", f"{candidate} vs {control}: not yet distinguishable: "
                                    f"{reason}{need}.", more, alpha)
    direction = "higher" if comparison.delta > 0 else "lower"
    low, high = interval(comparison, alpha)  # at the level tested, so CI and verdict agree
    diff = (f"{metric.label} {direction} by {abs(comparison.delta):.4f} "
            f"({confidence(alpha)} CI {low:+.4f} to {high:+.4f}, {_p(comparison.p_value)})")
    if comparison.delta == 0 and comparison.se == 0:
        return Verdict("undecided", f"{candidate} vs {control}: no difference: the same "
                                    f"{metric.label} on these outcomes.", None, alpha)
    if comparison.p_value < alpha:
        kind = "better" if comparison.improves() else "worse"
        return Verdict(kind, f"{candidate} is {kind} than {control}: {diff}.", 0, alpha)
    if more is None:
        text = (f"{candidate} vs {control}: not yet distinguishable: no difference seen so far "
                f"({diff}).")
    else:
        text = (f"{candidate} vs {control}: not yet distinguishable ({diff}); about {more:,} more "
                f"outcomes needed to tell a true difference of the size seen so far (80% power, "
                f"{percent(alpha)} level). Not telling them apart is not "
                f"evidence that they are equivalent: the interval shows the differences the "
                f"data still allow.")
    return Verdict("undecided", text, more, alpha)


def _p(p: float) -> str:
    return "p < 0.0001" if p < 1e-4 else f"p = {p:.4f}"


# -- latency and agreement ---------------------------------------------------------------


def latency_summary(latency_ms: np.ndarray) -> dict[str, Any]:
    x = np.asarray(latency_ms, dtype=np.float64)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return {"n": 0, "p50": None, "p95": None, "p99": None, "mean": None}
    p50, p95, p99 = np.percentile(x, [50, 95, 99])
    return {"n": int(x.size), "p50": float(p50), "p95": float(p95), "p99": float(p99),
            "mean": float(x.mean())}


def agreement(answer: np.ndarray, shadow: np.ndarray, *, objective: str,
              threshold: float = 0.5) -> dict[str, Any]:
    """How a shadow's predictions agree with the answer's on the same rows: Pearson
    correlation, mean absolute difference and (binary, multiclass) the share of decisions
    that flip (at ``threshold``; the top class for multiclass)."""
    a = np.asarray(answer, dtype=np.float64)
    s = np.asarray(shadow, dtype=np.float64)
    n = a.shape[0] if a.ndim else 0
    out: dict[str, Any] = {"n": int(n), "correlation": None, "mean_abs_diff": None, "flipped": None}
    if n == 0:
        return out
    out["mean_abs_diff"] = float(np.mean(np.abs(a - s)))
    fa, fs = a.reshape(-1), s.reshape(-1)
    if n > 1 and np.std(fa) > 0 and np.std(fs) > 0:
        out["correlation"] = float(np.corrcoef(fa, fs)[0, 1])
    if objective == "binary":
        out["flipped"] = float(np.mean((a >= threshold) != (s >= threshold)))
    elif objective == "multiclass" and a.ndim == 2:
        out["flipped"] = float(np.mean(a.argmax(axis=1) != s.argmax(axis=1)))
    return out
