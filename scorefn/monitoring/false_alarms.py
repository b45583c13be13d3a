"""Simulated drift monitoring: how often unshifted served rows raise a false alarm, and
whether a real shift is caught and ranked first.

Everything runs through the monitoring code the function app runs: ``reference_binning``
bins the reference rows, ``count`` profiles them and each served sample, and ``compare``
measures and flags. Two data sets:

- ``churn``: the demo's generated churn features (``scorefn.demo.models.churn_features``: 8
  features, 2% missing values in 7 of them), a small LightGBM model trained on the
  reference rows with labels drawn from ``churn_probability``; every served sample is drawn
  fresh from the same generator, so the population never changes;
- ``breast cancer``: scikit-learn's bundled real measurements (569 rows, 30 features),
  split at random into halves: the model is trained on one half (its reference), and served
  samples are bootstrap resamples of the other half. Each split is one scenario; samples are
  spread over several splits so that one lucky split does not decide the figures.

For each served size the rates are over samples: the share whose largest feature PSI (what
an alert sees) reaches 0.1 and 0.2, the share ``compare`` marks as having a drifted feature
(at the thresholds given), and the per-feature rates (one feature, one test).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from shared.models.model import LoadedModel, parse_model
from shared.monitoring.binning import Binning, model_binning, reference_binning
from shared.monitoring.drift import MIN_ROWS, PSI_THRESHOLD, RATE_ALPHA, compare, rose
from shared.monitoring.profile import Profile, count
from shared.monitoring.records import Comparison

SIZES = (100, 150, 200, 500, 1_000, 5_000, 20_000)
PSI_LEVELS = (0.1, 0.2)  # "moderate" and "significant"
CHI2_ALPHA = 0.01  # the chi-square column: per-feature p-values below this
UNIT_FACTOR = 1000.0  # a unit change (kilograms sent as grams)
UNIT_SHARE = 0.3  # ... on this share of the served rows

Sampler = Callable[[int, np.random.Generator], np.ndarray]


@dataclass(frozen=True)
class Scenario:
    """A model with its reference: the binning and the reference profile, and a sampler of
    unshifted served rows (``sample(n, rng)``)."""

    name: str
    model: LoadedModel
    binning: Binning
    reference: Profile
    sample: Sampler

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.binning.features)

    @functools.cached_property
    def model_binning(self) -> Binning:
        """The bins from the model alone (when no reference was uploaded)."""
        return model_binning(self.model.info)

    def served(self, X: np.ndarray, *, against_model: bool = False) -> Profile:
        """The profile of served rows ``X`` and the model's predictions on them, under the
        reference's bins (or the model's, ``against_model``)."""
        binning = self.model_binning if against_model else self.binning
        return count(binning, X, self.model.predict(X))

    def compare(self, served: Profile, *, psi_threshold: float = PSI_THRESHOLD,
                min_rows: int = MIN_ROWS, against_model: bool = False) -> Comparison:
        """``served`` compared with the reference profile, or with the model alone."""
        if against_model:
            binning = self.model_binning
            return compare(binning, Profile.empty(binning), served, against="model",
                           baseline_name="model", endpoint="sim", variant="a",
                           model=self.name, version="1", psi_threshold=psi_threshold,
                           min_rows=min_rows)
        return compare(self.binning, self.reference, served, against="reference",
                       baseline_name="reference", endpoint="sim", variant="a", model=self.name,
                       version="1", psi_threshold=psi_threshold, min_rows=min_rows)


@dataclass(frozen=True)
class SizeRates:
    """Unshifted samples of ``rows`` served rows (``samples`` of them, ``features`` each):
    ``any_psi[k]`` the share whose largest feature PSI reached ``PSI_LEVELS[k]``,
    ``any_drifted`` the share with a feature ``compare`` marked drifted, ``any_rate`` the
    share with a missing or out-of-range rate that rose (:func:`rose`, whatever the row
    count: what the rate rule alone would flag without ``min_rows``), ``feature_psi[k]``
    and ``feature_chi2`` per-feature shares (PSI over the level; chi-square p below
    :data:`CHI2_ALPHA`), ``prediction_drifted`` the share whose predictions were marked
    drifted, ``median_max_psi`` the median of the largest feature PSI."""

    rows: int
    samples: int
    features: int
    any_psi: tuple[float, ...]
    any_drifted: float
    any_rate: float
    feature_psi: tuple[float, ...]
    feature_chi2: float
    prediction_drifted: float
    median_max_psi: float


@dataclass(frozen=True)
class ShiftResult:
    """Shifted samples of ``rows`` rows: one feature (``shifted``) times
    :data:`UNIT_FACTOR` on :data:`UNIT_SHARE` of the rows and another (``emptied``) all
    missing. The shares of samples in which each was flagged, in which ``shifted`` ranked
    first, and in which a feature other than these two was flagged (a false alarm alongside);
    ``psi`` the median PSI of ``shifted``."""

    rows: int
    samples: int
    against: str
    shifted: str
    emptied: str
    shifted_flagged: float
    shifted_first: float
    emptied_flagged: float
    others_flagged: float
    psi: float


def _train_binary(X: np.ndarray, y: np.ndarray, names: Sequence[str], name: str, *,
                  rounds: int, leaves: int) -> LoadedModel:
    """A small LightGBM binary model, loaded as the function app loads a model file."""
    import lightgbm as lgb

    params = {"objective": "binary", "num_leaves": leaves, "learning_rate": 0.1,
              "min_data_in_leaf": 10, "verbosity": -1, "seed": 7, "deterministic": True,
              "num_threads": 1}
    booster = lgb.train(params, lgb.Dataset(X, y, feature_name=list(names)), rounds)
    return parse_model(booster.model_to_string().encode(), name=name, path=f"{name}.txt",
                       version="1", last_modified=None)


def _scenario(name: str, model: LoadedModel, reference: np.ndarray, sample: Sampler
              ) -> Scenario:
    predictions = model.predict(reference)
    binning = reference_binning(model.info, reference, predictions)
    return Scenario(name, model, binning, count(binning, reference, predictions), sample)


def churn_scenario(reference_rows: int = 20_000, seed: int = 1) -> Scenario:
    """The demo churn features: a reference of ``reference_rows`` rows, fresh served rows."""
    from scorefn.demo.models import CHURN_FEATURES, churn_features, churn_probability

    rng = np.random.default_rng(seed)
    X = churn_features(reference_rows, rng)
    y = (rng.random(reference_rows) < churn_probability(X)).astype(np.float64)
    model = _train_binary(X, y, CHURN_FEATURES, "churn", rounds=20, leaves=15)
    return _scenario("churn", model, X, lambda n, r: churn_features(n, r))


def cancer_scenarios(splits: int, seed: int = 2) -> list[Scenario]:
    """Breast cancer data, ``splits`` random halvings: the reference (and training) half and
    bootstrap resamples of the other half."""
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    X, y = np.asarray(data.data, dtype=np.float64), np.asarray(data.target, dtype=np.float64)
    names = [n.replace(" ", "_") for n in data.feature_names]
    rng = np.random.default_rng(seed)
    scenarios = []
    for _ in range(splits):
        order = rng.permutation(X.shape[0])
        ref, held = order[: X.shape[0] // 2], order[X.shape[0] // 2:]
        model = _train_binary(X[ref], y[ref], names, "cancer", rounds=20, leaves=7)
        scenarios.append(_scenario("breast cancer", model, X[ref], _bootstrap(X[held])))
    return scenarios


def _bootstrap(pool: np.ndarray) -> Sampler:
    """A sampler of rows drawn from ``pool`` with replacement."""
    def sample(n: int, rng: np.random.Generator) -> np.ndarray:
        return pool[rng.integers(0, pool.shape[0], n)]
    return sample


def false_alarms(scenarios: Sequence[Scenario], rows: int, samples: int, *, seed: int,
                 psi_threshold: float = PSI_THRESHOLD, min_rows: int = MIN_ROWS) -> SizeRates:
    """``samples`` unshifted samples of ``rows`` rows, spread evenly over ``scenarios``."""
    rng = np.random.default_rng([seed, rows])
    max_psi, drifted, rates, predictions = [], 0, 0, 0
    feature_psi = np.zeros(len(PSI_LEVELS))
    chi2, tests = 0, 0
    for i in range(samples):
        scenario = scenarios[i % len(scenarios)]
        result = scenario.compare(scenario.served(scenario.sample(rows, rng)),
                                  psi_threshold=psi_threshold, min_rows=min_rows)
        psis = np.array([f.psi for f in result.features])
        max_psi.append(float(psis.max()))
        feature_psi += [np.count_nonzero(psis >= level) for level in PSI_LEVELS]
        chi2 += sum(f.chi2_p < CHI2_ALPHA for f in result.features)
        tests += psis.size
        drifted += any(f.drifted for f in result.features)
        rates += any(rose(f.missing, RATE_ALPHA) or rose(f.out_of_range, RATE_ALPHA)
                     for f in result.features)
        predictions += bool(result.predictions and result.predictions.drifted)
    peaks = np.asarray(max_psi)
    return SizeRates(
        rows=rows, samples=samples, features=len(scenarios[0].binning.features),
        any_psi=tuple(float(np.mean(peaks >= level)) for level in PSI_LEVELS),
        any_drifted=drifted / samples, any_rate=rates / samples,
        feature_psi=tuple(float(v) for v in feature_psi / tests),
        feature_chi2=chi2 / tests, prediction_drifted=predictions / samples,
        median_max_psi=float(np.median(peaks)))


def shift(X: np.ndarray, shifted: int, emptied: int, rng: np.random.Generator) -> np.ndarray:
    """``X`` with column ``shifted`` times :data:`UNIT_FACTOR` on :data:`UNIT_SHARE` of the
    rows (a unit change in part of the traffic) and column ``emptied`` all missing."""
    out = X.copy()
    rows = rng.random(out.shape[0]) < UNIT_SHARE
    out[rows, shifted] *= UNIT_FACTOR
    out[:, emptied] = np.nan
    return out


def detection(scenario: Scenario, rows: int, samples: int, *, shifted: int, emptied: int,
              seed: int, against_model: bool = False, psi_threshold: float = PSI_THRESHOLD,
              min_rows: int = MIN_ROWS) -> ShiftResult:
    """How often the shift of :func:`shift` is flagged, and the shifted feature ranked first."""
    rng = np.random.default_rng([seed, rows])
    names = scenario.feature_names
    counts = np.zeros(4)
    psis = []
    for _ in range(samples):
        X = shift(scenario.sample(rows, rng), shifted, emptied, rng)
        result = scenario.compare(scenario.served(X, against_model=against_model),
                                  psi_threshold=psi_threshold, min_rows=min_rows,
                                  against_model=against_model)
        flagged = {f.name for f in result.features if f.drifted}
        counts += [names[shifted] in flagged, result.features[0].name == names[shifted],
                   names[emptied] in flagged, bool(flagged - {names[shifted], names[emptied]})]
        psis.append(next(f.psi for f in result.features if f.name == names[shifted]))
    shares = counts / samples
    return ShiftResult(rows, samples, "model" if against_model else "reference", names[shifted],
                       names[emptied], float(shares[0]), float(shares[1]), float(shares[2]),
                       float(shares[3]), float(np.median(psis)))


@dataclass(frozen=True)
class NudgeResult:
    """Samples of ``rows`` rows with ``feature`` moved by a small, harmless amount: the share
    in which its chi-square p-value fell below :data:`NUDGE_ALPHA`, the share in which
    ``compare`` flagged it, and its median PSI."""

    rows: int
    samples: int
    feature: str
    chi2_significant: float
    flagged: float
    psi: float


NUDGE_ALPHA = 1e-3


def nudge(scenario: Scenario, rows: int, samples: int, *, column: int, delta: float, seed: int,
          psi_threshold: float = PSI_THRESHOLD, min_rows: int = MIN_ROWS) -> NudgeResult:
    """Served samples with ``delta`` added to column ``column``: a shift too small to matter,
    which a p-value finds significant once the sample is large and PSI does not."""
    rng = np.random.default_rng([seed, rows])
    name = scenario.feature_names[column]
    significant = flagged = 0
    psis = []
    for _ in range(samples):
        X = scenario.sample(rows, rng)
        X[:, column] += delta
        result = scenario.compare(scenario.served(X), psi_threshold=psi_threshold,
                                  min_rows=min_rows)
        feature = next(f for f in result.features if f.name == name)
        significant += feature.chi2_p < NUDGE_ALPHA
        flagged += feature.drifted
        psis.append(feature.psi)
    return NudgeResult(rows, samples, name, significant / samples, flagged / samples,
                       float(np.median(psis)))
