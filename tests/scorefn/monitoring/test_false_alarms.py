"""The drift false-alarm simulation, small: unshifted samples at the default thresholds rarely
raise an alert, smaller samples would without the minimum row count, and a unit change is
flagged and ranked first, against a reference and against the model alone."""

from __future__ import annotations

import math

import pytest

from scorefn.monitoring.false_alarms import (
    PSI_LEVELS,
    cancer_scenarios,
    churn_scenario,
    detection,
    false_alarms,
    shift,
)
from shared.monitoring.drift import MIN_ROWS, PSI_THRESHOLD

SAMPLES = 200
# The bench saw 0.0% at the defaults (1,000 samples a size); 1.5% plus 3 standard deviations
# of a rate of 1.5% over 200 samples.
BOUND = 0.015 + 3 * math.sqrt(0.015 * 0.985 / SAMPLES)


@pytest.fixture(scope="module")
def churn():
    return churn_scenario(reference_rows=5_000, seed=3)


def test_the_defaults_are_the_documented_ones():
    assert (PSI_THRESHOLD, MIN_ROWS) == (0.2, 200)
    assert PSI_LEVELS == (0.1, PSI_THRESHOLD)


@pytest.mark.parametrize("rows", [250, 1_000])
def test_unshifted_samples_rarely_raise_an_alert_at_the_defaults(churn, rows):
    rates = false_alarms([churn], rows, SAMPLES, seed=4)
    assert rates.samples == SAMPLES and rates.features == 8
    assert rates.any_drifted <= BOUND
    assert rates.any_psi[1] <= BOUND  # the largest feature PSI too, not only the flags
    assert rates.prediction_drifted <= BOUND
    # a per-feature chi-square at p < 0.01 stays near its level (the bins are unshifted)
    assert rates.feature_chi2 < 0.04


def test_small_samples_cross_the_threshold_and_min_rows_keeps_them_quiet(churn):
    rates = false_alarms([churn], 100, SAMPLES, seed=5)
    assert rates.any_psi[1] > 0.05  # what an alert on PSI alone would raise
    assert rates.any_psi[0] > 0.5
    assert rates.median_max_psi > 0.1
    assert rates.any_drifted <= BOUND  # under min_rows: nothing is flagged


def test_the_noise_falls_with_the_sample(churn):
    small, large = (false_alarms([churn], n, 50, seed=6) for n in (200, 5_000))
    assert large.median_max_psi < small.median_max_psi / 10


@pytest.mark.parametrize("against_model", [False, True])
def test_a_unit_change_is_flagged_and_ranked_first(churn, against_model):
    result = detection(churn, 500, 20, shifted=1, emptied=7, seed=7, against_model=against_model)
    assert result.shifted == "monthly_charges" and result.emptied == "discount_pct"
    assert result.shifted_flagged == 1.0 and result.shifted_first == 1.0
    assert result.others_flagged == 0.0
    if against_model:  # no reference: no PSI, and the training rows' missing rate is unknown
        assert result.psi == 0.0 and result.emptied_flagged == 0.0
    else:
        assert result.psi > PSI_THRESHOLD and result.emptied_flagged == 1.0


def test_the_shift_changes_what_it_says(churn):
    import numpy as np

    rng = np.random.default_rng(8)
    X = churn.sample(2_000, rng)
    shifted = shift(X, 1, 7, rng)
    assert np.isnan(shifted[:, 7]).all()
    scaled = np.isclose(shifted[:, 1], X[:, 1] * 1000)
    assert 0.25 < scaled[~np.isnan(X[:, 1])].mean() < 0.35
    assert np.array_equal(np.isnan(shifted[:, :7]), np.isnan(X[:, :7]))


def test_breast_cancer_scenarios_hold_out_the_served_half():
    scenarios = cancer_scenarios(2, seed=9)
    assert len(scenarios) == 2 and {s.name for s in scenarios} == {"breast cancer"}
    for s in scenarios:
        assert s.reference.rows == 284 and len(s.binning.features) == 30
    rates = false_alarms(scenarios, 5_000, 10, seed=10)
    # real data, a 284-row reference: the bench saw no PSI over 0.2 at 5,000 rows
    assert rates.any_psi[1] <= 0.2 and rates.median_max_psi < 0.2
