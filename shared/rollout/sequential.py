"""An always-valid comparison of a candidate model with a control on the mean per-row loss.

A rollout controller looks at the outcomes every few minutes and stops as soon as the data
say promote or roll back. A fixed-horizon z test (the A/B report's) read that way finds a
difference between two identical models far more often than its level says, because every
look is another chance for noise to cross the line. This module gives an interval for the
difference that holds at every look at once, however many looks there are and whenever the
controller stops: a **confidence sequence**.

The arms are independent samples (a user, the sticky key, sees one model). Per arm the mean
per-row loss (``shared/rollout/losses.py``) and the variance of that mean by cluster sums
(rows of one cluster are correlated): with ``S_g`` and ``n_g`` a cluster's loss sum and row
count, ``n`` rows, ``k`` clusters and mean ``m``,

    var(mean) = k / (k - 1) * sum_g (S_g - m n_g)^2 / n^2

the linearised variance of a ratio estimator, the formula of the A/B report's cluster-robust
errors (``scorefn/ab/stats.py``); with one row per cluster it is the usual ``s^2 / n``.

The difference ``delta = mean(candidate) - mean(control)`` has variance ``V = var_control +
var_candidate``, and the interval is the normal-mixture mSPRT's (Johari, Pekelis & Walsh,
"Always valid inference: continuous monitoring of A/B tests", Operations Research 70(3), 2022,
arXiv:1512.04922; the form Optimizely's Stats Engine uses): mixing the likelihood ratio of a
true difference ``theta`` over ``theta ~ N(0, tau^2)`` gives

    Lambda = sqrt(V / (V + tau^2)) * exp(tau^2 delta^2 / (2 V (V + tau^2)))

and ``P(Lambda >= 1/alpha at any look) <= alpha`` under no difference (Ville's inequality on
a nonnegative martingale). Inverting ``Lambda < 1/alpha`` for every ``theta``:

    delta +/- sqrt(V (V + tau^2) / tau^2 * (2 log(1/alpha) + log((V + tau^2) / V)))

This is also the asymptotic confidence sequence of Waudby-Smith, Arbour, Sinha, Kennedy &
Ramdas, "Time-uniform central limit theory and asymptotic confidence sequences" (Annals of
Statistics, 2024, arXiv:2103.06476), whose conjugate-mixture margin
``sigma * sqrt(2 (t rho^2 + 1) / (t^2 rho^2) * log(sqrt(t rho^2 + 1) / alpha))`` is the same
expression with ``V = sigma^2 / t`` and ``tau^2 = rho^2 sigma^2``; their result is what makes
the plug-in variance (estimated, not known) valid as the data grow.

**Choosing tau.** ``tau`` is fixed before the rollout (a data-driven ``tau`` would void the
guarantee) and is in the loss's units. At a given ``V`` the interval is narrowest for the
``tau`` with ``r = tau^2 / V`` solving ``r = 2 log(1/alpha) + log(1 + r)`` (``r ~ 8.2`` at
``alpha = 0.05``), where its half-width is about ``3.0 sqrt(V)``; a true difference of size
``d`` first becomes detectable when ``d ~ 3.0 sqrt(V)``, i.e. at ``V ~ d^2 / 9.2``, and the
best ``tau`` there is ``tau ~ 0.94 d``. So **tau = the smallest effect that matters**
(``min_effect``) puts the interval's sharpest point where the decision that matters is made.
Erring large is cheap, erring small is not: at that point a ``tau`` 2, 10 or 100 times too
large widens the interval by 3%, 18% or 37%, one 3 or 10 times too small by 29% or 195%.

:func:`outcome_decision` turns an interval into ``better`` / ``worse`` / ``no_difference``
/ ``undecided``, and never decides before :data:`MIN_CLUSTERS` clusters per arm (the plug-in
variance of a handful of users is not to be trusted).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

ALPHA = 0.05
MIN_CLUSTERS = 30  # per arm, before any verdict

Decision = Literal["better", "worse", "no_difference", "undecided"]


@dataclass(frozen=True)
class ArmSummary:
    """One arm's outcomes: ``rows``, ``clusters``, the mean per-row loss and the variance of
    that mean by cluster sums (NaN below two clusters)."""

    rows: int
    clusters: int
    mean: float
    variance: float

    @property
    def se(self) -> float:
        return math.sqrt(self.variance) if self.variance >= 0 else float("nan")


@dataclass(frozen=True)
class SequentialResult:
    """``candidate - control`` of the mean loss, with the confidence sequence's interval at
    level ``alpha`` (valid at every look), its mixing scale ``tau``, the variance ``V`` of the
    difference and both arms."""

    delta: float
    low: float
    high: float
    alpha: float
    tau: float
    variance: float
    control: ArmSummary
    candidate: ArmSummary

    @property
    def n_control(self) -> int:
        return self.control.rows

    @property
    def n_candidate(self) -> int:
        return self.candidate.rows

    def to_dict(self) -> dict[str, Any]:
        """Plain values (JSON-ready: NaN and infinities as ``None``) for a log or a record."""
        return _clean(asdict(self))


def arm_variance(rows: Any, clusters: Any, total: Any, cluster_sq: Any, cross: Any, size_sq: Any
                 ) -> Any:
    """The variance of an arm's mean from its sufficient statistics, on floats or numpy arrays
    (many arms, or many looks, at once): ``rows`` ``n``, ``clusters`` ``k``, ``total`` the sum
    of the losses, ``cluster_sq`` ``sum_g S_g^2``, ``cross`` ``sum_g S_g n_g`` and ``size_sq``
    ``sum_g n_g^2``. Sums over disjoint sets of clusters add, so cumulative sums give every look.
    NaN below two clusters. Shift the losses first (their mean is a good shift) when they are
    large against their spread: the sums then cancel less."""
    with np.errstate(divide="ignore", invalid="ignore"):
        n = np.asarray(rows, dtype=np.float64)
        k = np.asarray(clusters, dtype=np.float64)
        mean = np.asarray(total, dtype=np.float64) / n
        spread = np.maximum(cluster_sq - 2.0 * mean * cross + mean ** 2 * size_sq, 0.0)
        var = np.where(k >= 2, k / (k - 1.0) * spread / n ** 2, np.nan)
    return float(var) if var.ndim == 0 else var


def summarize_arm(loss: np.ndarray, cluster: np.ndarray | None = None) -> ArmSummary:
    """An arm's summary from its per-row losses and each row's cluster (its sticky key; any
    hashable ids numpy can sort). ``None``: every row is its own cluster. ``ValueError`` for a
    non-finite loss or ids that do not match the rows."""
    x = np.asarray(loss, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(x)):
        raise ValueError("losses must be finite")
    n = x.size
    if n == 0:
        return ArmSummary(0, 0, float("nan"), float("nan"))
    if cluster is None:
        g, k = np.arange(n), n
    else:
        ids = np.asarray(cluster).reshape(-1)
        if ids.size != n:
            raise ValueError(f"{ids.size} cluster ids for {n} rows")
        _, g = np.unique(ids, return_inverse=True)
        g = g.reshape(-1)
        k = int(g.max()) + 1
    mean = float(x.mean())
    centred = x - mean  # the variance does not depend on the shift; centring avoids cancellation
    sums = np.bincount(g, weights=centred, minlength=k)
    sizes = np.bincount(g, minlength=k).astype(np.float64)
    var = arm_variance(n, k, float(centred.sum()), float(sums @ sums), float(sums @ sizes),
                       float(sizes @ sizes))
    return ArmSummary(n, k, mean, var)


def confidence_radius(variance: float, tau: float, alpha: float = ALPHA) -> float:
    """The confidence sequence's half-width at a difference's variance ``V``:
    ``sqrt(V (V + tau^2) / tau^2 * (2 log(1/alpha) + log((V + tau^2) / V)))``; 0 at ``V = 0``
    (its limit), NaN for an unknown ``V``."""
    _check(tau, alpha)
    if not math.isfinite(variance) or variance < 0:
        return float("nan") if math.isnan(variance) or variance < 0 else math.inf
    if variance == 0:
        return 0.0
    ratio = tau * tau / variance
    return math.sqrt(variance * (1.0 + 1.0 / ratio) * (2.0 * math.log(1.0 / alpha) + math.log1p(ratio)))


def compare_arms(control: ArmSummary, candidate: ArmSummary, *, tau: float,
                 alpha: float = ALPHA) -> SequentialResult:
    """``candidate - control`` with its confidence sequence at level ``alpha``. ``tau``: the
    mixing scale, in the loss's units, fixed before the rollout: the smallest difference that
    matters (see the module's docstring)."""
    _check(tau, alpha)
    delta = candidate.mean - control.mean
    variance = control.variance + candidate.variance
    radius = confidence_radius(variance, tau, alpha) if math.isfinite(delta) else float("nan")
    return SequentialResult(delta, delta - radius, delta + radius, alpha, tau, variance, control,
                            candidate)


def outcome_decision(result: SequentialResult, min_effect: float, *,
                     min_clusters: int = MIN_CLUSTERS) -> Decision:
    """What the interval says about the candidate (losses: lower is better):

    - ``better``: the whole interval is below 0 (the candidate's loss is lower);
    - ``worse``: the whole interval is above 0;
    - ``no_difference``: the interval lies within ``(-min_effect, +min_effect)`` (only when
      ``min_effect > 0``): any difference left is smaller than one that matters;
    - ``undecided``: none of these, or fewer than ``min_clusters`` clusters in an arm, or an
      interval not defined yet.
    """
    if min_effect < 0 or not math.isfinite(min_effect):
        raise ValueError(f"min_effect must be finite and >= 0, not {min_effect}")
    if min(result.control.clusters, result.candidate.clusters) < min_clusters:
        return "undecided"
    low, high = result.low, result.high
    if math.isnan(low) or math.isnan(high):
        return "undecided"
    if high < 0:
        return "better"
    if low > 0:
        return "worse"
    if min_effect > 0 and -min_effect < low and high < min_effect:
        return "no_difference"
    return "undecided"


def _check(tau: float, alpha: float) -> None:
    if not (tau > 0 and math.isfinite(tau)):
        raise ValueError(f"tau must be finite and > 0, not {tau}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), not {alpha}")


def _clean(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
