"""How far served rows have drifted from a baseline: measures over two count vectors of the
same bins, and :func:`compare`, which applies them to two profiles, feature by feature.

The measures (numpy and the standard library only: this module is imported by the function
app, so its import time is cold-start time):

- **PSI**, the population stability index: ``sum((s - b) * ln(s / b))`` over the bins, ``b``
  and ``s`` the baseline's and the served rows' proportions (missing values are in no bin).
  It is a symmetric Kullback-Leibler divergence: an effect size that does not grow with the
  row count, so a large sample does not turn a harmless shift into an alert the way a
  p-value does. The industry convention reads PSI < 0.1 as stable, 0.1 to 0.2 as a moderate
  shift and >= 0.2 as a significant one; :data:`PSI_THRESHOLD` (0.2) is the default alert
  threshold.
- **Jensen-Shannon distance** (base 2, in [0, 1]): a bounded companion of PSI, for reports.
- **chi-square test of homogeneity** of the 2 x bins table: a p-value, reported, never an
  alert by itself (with many rows it finds every harmless shift significant).
- **rate changes**: the missing and out-of-range rates, with a two-proportion z-test. A rate
  that rose significantly (p < ``rate_alpha``) and by at least :data:`RATE_JUMP` marks a
  feature as drifted whatever its PSI: a pipeline that stops sending a feature, or sends it
  in other units, shows there first.

On unshifted data PSI is still positive, about ``(bins - 1) / effective_rows`` where
``effective_rows = nb * ns / (nb + ns)`` (:func:`effective_rows`; about the served count
against a large reference): ~0.09 for 10 bins and 100 served rows, and the largest of many
features' more. Hence :data:`MIN_ROWS`: a feature's PSI alerts only over that many effective
rows, and its rates only over that many served rows (the z-test is unreliable on a handful
of rows). ``bench/drift_false_alarms.py`` simulates the false alarms by sample size that
chose it; docs/monitoring-statistics.md has its figures.
"""

from __future__ import annotations

import math

import numpy as np

from shared.monitoring.binning import Binning, FeatureBins
from shared.monitoring.profile import Profile
from shared.monitoring.records import Against, Comparison, FeatureDrift, PredictionDrift, RateChange

PSI_THRESHOLD = 0.2  # "significant" by the industry convention (0.1: "moderate")
# Nothing is flagged on fewer rows (effective rows for PSI, served rows for the rates). In
# the simulation, unshifted samples crossed PSI 0.2 on some feature in 15.6% of 100-row
# samples, 0.5% at 150 rows, 0.1% at 200; the rate test alone flagged 1.8% at 100 rows.
MIN_ROWS = 200
RATE_ALPHA = 1e-3  # a missing or out-of-range rate rose significantly: p below this
RATE_JUMP = 0.05  # ... and by at least 5 percentage points
# The floor of a proportion in PSI: an empty bin counts as 0.01% of the rows rather than 0
# (which would make PSI infinite). A bin empty on both sides adds nothing.
PSI_FLOOR = 1e-4
_EMPTY = (0.0, 0, 1.0)  # chi-square when there is nothing to test


def _proportions(counts: np.ndarray) -> np.ndarray | None:
    values = np.asarray(counts, dtype=np.float64)
    total = float(values.sum())
    return None if total <= 0 else values / total


def psi(baseline: np.ndarray, served: np.ndarray) -> float:
    """The population stability index of two count vectors over the same bins, each
    proportion floored at :data:`PSI_FLOOR`; 0 when either side has no rows."""
    b, s = _proportions(baseline), _proportions(served)
    if b is None or s is None:
        return 0.0
    b, s = np.maximum(b, PSI_FLOOR), np.maximum(s, PSI_FLOOR)
    return float(((s - b) * np.log(s / b)).sum())


def jensen_shannon(baseline: np.ndarray, served: np.ndarray) -> float:
    """The Jensen-Shannon distance (base 2, in [0, 1]) of two count vectors; 0 when either
    side has no rows."""
    b, s = _proportions(baseline), _proportions(served)
    if b is None or s is None:
        return 0.0
    m = (b + s) / 2
    divergence = (_kl2(b, m) + _kl2(s, m)) / 2
    return math.sqrt(min(max(divergence, 0.0), 1.0))


def _kl2(p: np.ndarray, q: np.ndarray) -> float:
    """Kullback-Leibler divergence in bits (0 log 0 = 0; ``q`` > 0 wherever ``p`` > 0)."""
    nz = p > 0
    return float((p[nz] * np.log2(p[nz] / q[nz])).sum())


def chi_square(baseline: np.ndarray, served: np.ndarray) -> tuple[float, int, float]:
    """The chi-square test of homogeneity of the 2 x K table of two count vectors (bins empty
    on both sides dropped): ``(statistic, degrees of freedom, p-value)``; ``(0, 0, 1)`` when a
    side has no rows or a single bin is left."""
    b, s = np.asarray(baseline, np.float64), np.asarray(served, np.float64)
    columns = b + s
    kept = columns > 0
    b, s, columns = b[kept], s[kept], columns[kept]
    nb, ns = float(b.sum()), float(s.sum())
    if columns.size < 2 or nb <= 0 or ns <= 0:
        return _EMPTY
    # sum over both rows of (observed - expected)^2 / expected, expected = column * row share
    statistic = float((((b * ns - s * nb) ** 2) / columns).sum() / (nb * ns))
    dof = int(columns.size) - 1
    return statistic, dof, chi2_sf(statistic, dof)


def chi2_sf(x: float, dof: int) -> float:
    """The chi-square distribution's survival function: ``Q(dof / 2, x / 2)``."""
    return 1.0 if x <= 0 else gammaincc(dof / 2, x / 2)


def gammaincc(a: float, x: float) -> float:
    """The regularized upper incomplete gamma function ``Q(a, x)`` (``a > 0``, ``x >= 0``):
    its series below ``x = a + 1``, its continued fraction above (Numerical Recipes, 6.2)."""
    if x <= 0:
        return 1.0
    if x < a + 1:
        return max(0.0, 1.0 - _gamma_series(a, x))
    return _gamma_fraction(a, x)


_EPS = 1e-15
_TINY = 1e-300
_ITERATIONS = 1000


def _gamma_series(a: float, x: float) -> float:
    """``P(a, x)`` by its series (converges fast for ``x < a + 1``)."""
    term = total = 1.0 / a
    n = a
    for _ in range(_ITERATIONS):
        n += 1
        term *= x / n
        total += term
        if abs(term) < abs(total) * _EPS:
            break
    return total * math.exp(-x + a * math.log(x) - math.lgamma(a))


def _gamma_fraction(a: float, x: float) -> float:
    """``Q(a, x)`` by its continued fraction, modified Lentz (for ``x >= a + 1``)."""
    b = x + 1 - a
    c = 1 / _TINY
    d = 1 / b
    h = d
    for i in range(1, _ITERATIONS):
        an = -i * (i - a)
        b += 2
        d = an * d + b
        d = _TINY if abs(d) < _TINY else d
        c = b + an / c
        c = _TINY if abs(c) < _TINY else c
        d = 1 / d
        delta = d * c
        h *= delta
        if abs(delta - 1) < _EPS:
            break
    return math.exp(-x + a * math.log(x) - math.lgamma(a)) * h


def rate_change(base_count: int, base_rows: int, served_count: int, served_rows: int
                ) -> RateChange:
    """Two rates and the two-sided p-value of the two-proportion z-test (pooled variance)
    that they are equal; 1.0 when either side has no rows or the pooled rate is 0 or 1."""
    base = base_count / base_rows if base_rows else 0.0
    served = served_count / served_rows if served_rows else 0.0
    if not base_rows or not served_rows:
        return RateChange(base, served, 1.0)
    pooled = (base_count + served_count) / (base_rows + served_rows)
    se = math.sqrt(pooled * (1 - pooled) * (1 / base_rows + 1 / served_rows))
    if se <= 0:
        return RateChange(base, served, 1.0)
    return RateChange(base, served, math.erfc(abs(served - base) / se / math.sqrt(2)))


def effective_rows(baseline: np.ndarray, served: np.ndarray) -> float:
    """The rows a comparison of two count vectors rests on, ``nb * ns / (nb + ns)``: PSI's
    noise on unshifted data is about ``(bins - 1) / effective_rows``. It is about the served
    count against a much larger reference, half of it between two equal samples, and 0 when
    either side is empty."""
    nb, ns = float(np.asarray(baseline).sum()), float(np.asarray(served).sum())
    return 0.0 if nb <= 0 or ns <= 0 else nb * ns / (nb + ns)


def rose(change: RateChange, rate_alpha: float) -> bool:
    """Whether a rate rose significantly (p below ``rate_alpha``) by at least
    :data:`RATE_JUMP`."""
    return change.p_value < rate_alpha and change.served - change.baseline >= RATE_JUMP


def rank_key(feature: FeatureDrift) -> tuple[bool, float, float]:
    """Sort key, most drifted first (sort ascending): drifted before not, then the larger PSI,
    then the larger rise of the missing or out-of-range rate."""
    jump = max(feature.missing.served - feature.missing.baseline,
               feature.out_of_range.served - feature.out_of_range.baseline)
    return (not feature.drifted, -feature.psi, -jump)


def _rates(j: int, baseline: Profile, served: Profile, against: Against
           ) -> tuple[RateChange, RateChange]:
    """Feature ``j``'s missing and out-of-range rate changes. Against the model alone the
    training rows are not counted anywhere: their out-of-range rate is 0 by definition, and
    the served row count stands in for theirs (a conservative test when the training set was
    larger); their missing rate is unknown, reported as 0 with p-value 1.0 (never an alert)."""
    n = served.rows
    if against == "model":
        missing = RateChange(0.0, int(served.missing[j]) / n if n else 0.0, 1.0)
        return missing, rate_change(0, n, int(served.out_of_range[j]), n)
    return (rate_change(int(baseline.missing[j]), baseline.rows, int(served.missing[j]), n),
            rate_change(int(baseline.out_of_range[j]), baseline.rows,
                        int(served.out_of_range[j]), n))


def _feature(j: int, fb: FeatureBins, baseline: Profile, served: Profile, against: Against,
             psi_threshold: float, min_rows: int, rate_alpha: float) -> FeatureDrift:
    b, s = baseline.bins[j], served.bins[j]
    missing, out_of_range = _rates(j, baseline, served, against)
    binned = fb.kind != "unused"
    value = psi(b, s) if binned else 0.0
    shifted = binned and effective_rows(b, s) >= min_rows and value >= psi_threshold
    jumped = served.rows >= min_rows and (rose(missing, rate_alpha)
                                          or rose(out_of_range, rate_alpha))
    return FeatureDrift(
        name=fb.name, kind=fb.kind, psi=value, js=jensen_shannon(b, s) if binned else 0.0,
        chi2_p=chi_square(b, s)[2] if binned else 1.0, missing=missing,
        out_of_range=out_of_range, baseline_rows=baseline.rows, served_rows=served.rows,
        labels=fb.labels(), baseline_bins=b.tolist(), served_bins=s.tolist(),
        drifted=bool(shifted or jumped))


def _predictions(binning: Binning, baseline: Profile, served: Profile, psi_threshold: float,
                 min_rows: int) -> PredictionDrift | None:
    if not baseline.predicted_rows or not served.predicted_rows:
        return None
    b, s = baseline.predictions, served.predictions
    value = psi(b, s)
    return PredictionDrift(
        kind=binning.predictions.kind, psi=value, js=jensen_shannon(b, s),
        chi2_p=chi_square(b, s)[2], baseline_rows=baseline.predicted_rows,
        served_rows=served.predicted_rows, labels=binning.predictions.labels(),
        baseline_bins=b.tolist(), served_bins=s.tolist(),
        drifted=effective_rows(b, s) >= min_rows and value >= psi_threshold)


def compare(binning: Binning, baseline: Profile, served: Profile, *, against: Against,
            baseline_name: str, endpoint: str, variant: str, model: str, version: str,
            psi_threshold: float, min_rows: int,
            rate_alpha: float = RATE_ALPHA) -> Comparison:
    """``served`` compared with ``baseline`` (both counted under ``binning``), feature by
    feature, ranked by :func:`rank_key`. A feature has drifted when its PSI reaches
    ``psi_threshold`` over at least ``min_rows`` :func:`effective_rows`, or, over at least
    ``min_rows`` served rows, its missing or out-of-range rate rose (:func:`rose`); an
    ``unused`` feature (no tree splits on it) by its rates alone. The predictions (when both
    sides counted some) by their PSI alone. Against the model (``against="model"``) the
    baseline is empty: no PSI, only the rates (see :func:`_rates`)."""
    for profile in (baseline, served):
        if profile.binning_id != binning.id:
            raise ValueError("the profiles were not counted under this binning")
    features = [_feature(j, fb, baseline, served, against, psi_threshold, min_rows, rate_alpha)
                for j, fb in enumerate(binning.features)]
    features.sort(key=rank_key)
    return Comparison(
        endpoint=endpoint, variant=variant, model=model, version=version, against=against,
        baseline_name=baseline_name, served_rows=served.rows, features=features,
        predictions=_predictions(binning, baseline, served, psi_threshold, min_rows))
