"""Drift measures and the comparison of two profiles: PSI, Jensen-Shannon and chi-square as
defined (checked by hand and against scipy), rate changes as a two-proportion z-test, and
``compare`` flagging and ranking what moved, against a reference or the model alone."""

from __future__ import annotations

import math

import lightgbm as lgb
import numpy as np
import pytest
from scipy import stats  # type: ignore[import-untyped]
from scipy.spatial.distance import jensenshannon  # type: ignore[import-untyped]

from shared.models.model import parse_model
from shared.monitoring import drift
from shared.monitoring.binning import model_binning, reference_binning
from shared.monitoring.drift import (
    PSI_FLOOR,
    RATE_JUMP,
    chi2_sf,
    chi_square,
    effective_rows,
    jensen_shannon,
    psi,
    rank_key,
    rate_change,
)
from shared.monitoring.profile import Profile, count
from shared.monitoring.records import FeatureDrift, RateChange

# --- PSI ---------------------------------------------------------------------------------


def test_psi_is_zero_for_the_same_proportions():
    assert psi(np.array([10, 20, 70]), np.array([10, 20, 70])) == 0.0
    assert psi(np.array([10, 20, 70]), np.array([100, 200, 700])) == pytest.approx(0.0, abs=1e-15)


def test_psi_by_hand():
    # (0.8 - 0.5) ln(0.8 / 0.5) + (0.2 - 0.5) ln(0.2 / 0.5)
    assert psi(np.array([50, 50]), np.array([80, 20])) == pytest.approx(0.4158883, abs=1e-7)
    # deciles, one moved: 5% of the rows from the first bin to the last
    b = np.full(10, 100)
    s = b.copy()
    s[0], s[-1] = 50, 150
    assert psi(b, s) == pytest.approx(0.05 * math.log(2) + 0.05 * math.log(1.5), abs=1e-12)


def test_psi_is_symmetric_without_empty_bins():
    b, s = np.array([30, 50, 20]), np.array([10, 60, 30])
    assert psi(b, s) == pytest.approx(psi(s, b), abs=1e-15)


def test_an_empty_bin_is_floored_not_infinite():
    # served: 10% in a bin the baseline never saw; the baseline's 0 counts as PSI_FLOOR
    value = psi(np.array([100, 0]), np.array([90, 10]))
    expected = (0.9 - 1.0) * math.log(0.9) + (0.1 - PSI_FLOOR) * math.log(0.1 / PSI_FLOOR)
    assert PSI_FLOOR == 1e-4 and value == pytest.approx(expected, rel=1e-12)
    assert 0.69 < value < 0.71


def test_a_bin_empty_on_both_sides_adds_nothing():
    assert psi(np.array([50, 0, 50]), np.array([80, 0, 20])) == psi(np.array([50, 50]),
                                                                     np.array([80, 20]))


def test_psi_is_zero_when_a_side_has_no_rows():
    assert psi(np.zeros(3, np.int64), np.array([1, 2, 3])) == 0.0
    assert psi(np.array([1, 2, 3]), np.zeros(3, np.int64)) == 0.0


# --- Jensen-Shannon ----------------------------------------------------------------------


def test_jensen_shannon_is_scipys_base_2_distance():
    rng = np.random.default_rng(4)
    for _ in range(50):
        b, s = rng.integers(0, 40, 8), rng.integers(0, 40, 8)
        if b.sum() and s.sum():
            assert jensen_shannon(b, s) == pytest.approx(
                jensenshannon(b / b.sum(), s / s.sum(), base=2), abs=1e-12)


def test_jensen_shannon_bounds():
    assert jensen_shannon(np.array([3, 4]), np.array([30, 40])) == pytest.approx(0.0, abs=1e-7)
    assert jensen_shannon(np.array([5, 0]), np.array([0, 7])) == pytest.approx(1.0)
    assert jensen_shannon(np.array([0, 0]), np.array([1, 1])) == 0.0


# --- chi-square ---------------------------------------------------------------------------


@pytest.mark.parametrize("dof", [1, 2, 3, 9, 19, 50, 199])
def test_chi2_survival_matches_scipy(dof):
    for x in (1e-6, 0.1, 0.5, dof / 2, dof - 1, dof, dof + 1, 2 * dof, 3 * dof + 20,
              10 * dof + 100):
        ours, theirs = chi2_sf(x, dof), stats.chi2.sf(x, dof)
        assert ours == pytest.approx(theirs, rel=1e-9, abs=1e-300), (x, dof)


def test_chi2_survival_of_known_values():
    # textbook critical values: P(chi2_1 > 3.841) = 0.05, P(chi2_9 > 21.666) = 0.01
    assert chi2_sf(3.841458820694124, 1) == pytest.approx(0.05, rel=1e-9)
    assert chi2_sf(21.66599433346194, 9) == pytest.approx(0.01, rel=1e-9)
    assert chi2_sf(0.0, 5) == 1.0
    assert 0.0 < chi2_sf(500.0, 9) < 1e-90  # far tail: tiny, not 0 and not negative


def test_chi_square_matches_scipys_contingency_test():
    rng = np.random.default_rng(5)
    for _ in range(100):
        k = int(rng.integers(2, 12))
        b, s = rng.integers(0, 60, k), rng.integers(0, 60, k)
        b[rng.random(k) < 0.2] = 0
        s[b == 0] = np.where(rng.random(int((b == 0).sum())) < 0.5, 0, s[b == 0])
        table = np.vstack([b, s])
        table = table[:, table.sum(axis=0) > 0]
        statistic, dof, p = chi_square(b, s)
        if table.shape[1] < 2 or table.sum(axis=1).min() == 0:
            assert (statistic, dof, p) == (0.0, 0, 1.0)
            continue
        ref = stats.chi2_contingency(table, correction=False)
        assert dof == ref.dof == table.shape[1] - 1  # empty columns dropped
        assert statistic == pytest.approx(ref.statistic, rel=1e-10)
        assert p == pytest.approx(ref.pvalue, rel=1e-9, abs=1e-300)


def test_chi_square_with_nothing_to_test():
    assert chi_square(np.array([0, 0]), np.array([3, 4])) == (0.0, 0, 1.0)
    assert chi_square(np.array([5, 0]), np.array([3, 0])) == (0.0, 0, 1.0)  # one bin left


# --- rate changes -------------------------------------------------------------------------


def test_rate_change_is_the_two_proportion_z_test():
    change = rate_change(20, 1000, 45, 1000)
    pooled = 65 / 2000
    z = (0.045 - 0.020) / math.sqrt(pooled * (1 - pooled) * (2 / 1000))
    assert z == pytest.approx(3.1525, abs=1e-4)
    assert (change.baseline, change.served) == (0.02, 0.045)
    assert change.p_value == pytest.approx(2 * stats.norm.sf(z), rel=1e-12)
    # the same test as the uncorrected chi-square of the 2 x 2 table
    table = [[20, 980], [45, 955]]
    assert change.p_value == pytest.approx(
        stats.chi2_contingency(table, correction=False).pvalue, rel=1e-9)


def test_rate_change_is_two_sided():
    assert rate_change(45, 1000, 20, 1000).p_value == pytest.approx(
        rate_change(20, 1000, 45, 1000).p_value)


def test_rate_change_without_rows_or_variation():
    assert rate_change(0, 0, 5, 10) == RateChange(0.0, 0.5, 1.0)
    assert rate_change(3, 10, 0, 0) == RateChange(0.3, 0.0, 1.0)
    assert rate_change(0, 100, 0, 100).p_value == 1.0
    assert rate_change(100, 100, 50, 50).p_value == 1.0


def test_effective_rows():
    assert effective_rows(np.array([100, 100]), np.array([100, 100])) == 100.0
    assert effective_rows(np.array([20_000]), np.array([200])) == pytest.approx(198.0198, abs=1e-4)
    assert effective_rows(np.array([0, 0]), np.array([5, 5])) == 0.0


# --- compare ------------------------------------------------------------------------------

FEATURES = 5


def _rows(n: int, rng: np.random.Generator) -> np.ndarray:
    X = rng.normal(size=(n, FEATURES))
    X[rng.random(X.shape) < 0.02] = np.nan
    return X


@pytest.fixture(scope="module")
def model():
    rng = np.random.default_rng(6)
    X = _rows(20_000, rng)
    y = (np.nan_to_num(X[:, 0]) + 0.5 * np.nan_to_num(X[:, 1]) > 0).astype(int)
    booster = lgb.train({"objective": "binary", "verbose": -1, "num_leaves": 7, "seed": 1},
                        lgb.Dataset(X, y), 10)
    loaded = parse_model(booster.model_to_string().encode(), name="m", path="m.txt",
                         version="v1", last_modified=None)
    return loaded, X


@pytest.fixture(scope="module")
def reference(model):
    loaded, X = model
    binning = reference_binning(loaded.info, X, loaded.predict(X))
    return binning, count(binning, X, loaded.predict(X))


def _compare(binning, baseline, served, *, against="reference", psi_threshold=0.2,
             min_rows=200):
    return drift.compare(binning, baseline, served, against=against, baseline_name="ref",
                         endpoint="e", variant="a", model="m", version="v1",
                         psi_threshold=psi_threshold, min_rows=min_rows)


def _served(model, binning, X):
    loaded, _ = model
    return count(binning, X, loaded.predict(X))


def _feature(comparison, j):
    return next(f for f in comparison.features if f.name == f"Column_{j}")


def test_unshifted_rows_are_not_flagged(model, reference):
    binning, ref = reference
    served = _served(model, binning, _rows(5_000, np.random.default_rng(7)))
    result = _compare(binning, ref, served)
    assert not any(f.drifted for f in result.features)
    assert max(f.psi for f in result.features) < 0.02
    assert result.predictions is not None and not result.predictions.drifted
    assert result.predictions.psi < 0.02
    assert (result.against, result.baseline_name, result.served_rows) == ("reference", "ref",
                                                                          5_000)


def test_a_shifted_feature_is_flagged_and_ranked_first(model, reference):
    binning, ref = reference
    X = _rows(5_000, np.random.default_rng(8))
    X[:, 3] += 1.0  # one standard deviation
    result = _compare(binning, ref, _served(model, binning, X))
    assert result.worst is not None and result.worst.name == "Column_3"
    assert result.worst.drifted and result.worst.psi > 0.5 and result.worst.chi2_p < 1e-12
    assert [f.name for f in result.features if f.drifted] == ["Column_3"]
    psis = [f.psi for f in result.features]
    assert psis[1:] == sorted(psis[1:], reverse=True)  # then by PSI
    # nothing about feature 3's rates changed: it drifted by its distribution alone
    assert result.worst.missing.p_value > 1e-3


def test_bins_labels_and_counts_are_filled(model, reference):
    binning, ref = reference
    X = _rows(1_000, np.random.default_rng(9))
    result = _compare(binning, ref, _served(model, binning, X))
    for f in result.features:
        j = int(f.name.split("_")[1])
        assert len(f.labels) == len(f.baseline_bins) == len(f.served_bins) == binning.features[j].size
        assert sum(f.served_bins) == int(np.count_nonzero(~np.isnan(X[:, j])))
        assert sum(f.baseline_bins) + ref.missing[j] == ref.rows
        assert (f.baseline_rows, f.served_rows) == (20_000, 1_000)
    pred = result.predictions
    assert pred is not None and sum(pred.served_bins) == 1_000 and len(pred.labels) == 20


def test_a_unit_change_is_flagged_by_psi_and_out_of_range(model, reference):
    binning, ref = reference
    rng = np.random.default_rng(10)
    X = _rows(1_000, rng)
    part = rng.random(1_000) < 0.3
    X[part, 2] *= 1000  # grams sent as kilograms on 30% of the rows
    result = _compare(binning, ref, _served(model, binning, X))
    worst = result.worst
    assert worst is not None and worst.name == "Column_2" and worst.drifted
    assert worst.psi >= 0.2
    # nearly every scaled value leaves the training range (about -4 to 4)
    assert worst.out_of_range.baseline == 0.0 and 0.25 < worst.out_of_range.served < 0.35
    assert worst.out_of_range.p_value < 1e-10
    assert [f.name for f in result.features if f.drifted] == ["Column_2"]


def test_a_feature_gone_missing_is_flagged_by_its_missing_rate(model, reference):
    binning, ref = reference
    X = _rows(1_000, np.random.default_rng(11))
    X[:, 1] = np.nan
    f = _feature(_compare(binning, ref, _served(model, binning, X)), 1)
    assert f.drifted and f.served_bins == [0] * len(f.served_bins)
    assert f.psi == 0.0 and f.chi2_p == 1.0  # no values to compare
    assert f.missing.served == 1.0 and f.missing.baseline == pytest.approx(0.02, abs=0.005)
    assert f.missing.p_value < 1e-100


def test_psi_threshold_and_min_rows_decide_a_distribution_shift(model, reference):
    binning, ref = reference
    X = _rows(2_000, np.random.default_rng(12))
    X[:, 4] += 0.5
    served = _served(model, binning, X)
    value = _feature(_compare(binning, ref, served), 4).psi
    assert 0.1 < value < 1.0
    assert _feature(_compare(binning, ref, served, psi_threshold=value), 4).drifted  # >=
    assert not _feature(_compare(binning, ref, served, psi_threshold=value * 1.01), 4).drifted
    # min_rows counts the effective rows: ~1,960 served values against ~19,600 reference ones
    f = _feature(_compare(binning, ref, served), 4)
    nb, ns = sum(f.baseline_bins), sum(f.served_bins)
    rows = nb * ns / (nb + ns)
    assert 1_700 < rows < 1_800
    assert _feature(_compare(binning, ref, served, min_rows=math.floor(rows)), 4).drifted
    assert not _feature(_compare(binning, ref, served, min_rows=math.ceil(rows)), 4).drifted
    assert not _feature(_compare(binning, ref, served, min_rows=ns), 4).drifted  # not ns


def test_too_few_rows_flag_nothing(model, reference):
    binning, ref = reference
    X = _rows(150, np.random.default_rng(13))
    X[:, 1] = np.nan
    X[:, 2] += 3.0
    served = _served(model, binning, X)
    few = _compare(binning, ref, served, min_rows=200)
    assert not any(f.drifted for f in few.features)
    assert few.worst is not None and few.worst.psi > 1.0  # measured all the same
    enough = _compare(binning, ref, served, min_rows=100)
    assert {f.name for f in enough.features if f.drifted} == {"Column_1", "Column_2"}


def test_against_the_model_alone_only_the_rates_count(model):
    loaded, _ = model
    binning = model_binning(loaded.info)
    rng = np.random.default_rng(14)
    X = _rows(1_000, rng)
    X[rng.random(1_000) < 0.3, 2] *= 1000
    X[:, 4] = np.nan
    result = _compare(binning, Profile.empty(binning), count(binning, X, loaded.predict(X)),
                      against="model")
    assert result.against == "model" and result.predictions is None
    for f in result.features:
        assert (f.psi, f.js, f.chi2_p, f.baseline_rows) == (0.0, 0.0, 1.0, 0)
        assert f.out_of_range.baseline == 0.0
    worst = result.worst
    assert worst is not None and worst.name == "Column_2" and worst.drifted
    assert 0.25 < worst.out_of_range.served < 0.35 and worst.out_of_range.p_value < 1e-10
    # the training rows' missing rate is unknown: reported, never an alert
    gone = _feature(result, 4)
    assert gone.missing == RateChange(0.0, 1.0, 1.0) and not gone.drifted
    assert [f.name for f in result.features if f.drifted] == ["Column_2"]


def test_against_the_model_a_few_out_of_range_values_are_not_an_alert(model):
    loaded, _ = model
    binning = model_binning(loaded.info)
    X = _rows(1_000, np.random.default_rng(15))
    X[:30, 0] = 100.0  # 3%: under the 5-point jump
    result = _compare(binning, Profile.empty(binning), count(binning, X, None), against="model")
    f = _feature(result, 0)
    assert f.out_of_range.served == pytest.approx(0.03) and f.out_of_range.p_value < 1e-3
    assert 0.03 < RATE_JUMP and not f.drifted


def test_an_unused_feature_is_judged_by_its_rates_alone():
    rng = np.random.default_rng(16)
    X = rng.normal(size=(2_000, 2))
    X[:, 1] = 1.0  # constant: no tree uses it ("none" in feature_infos)
    booster = lgb.train({"objective": "binary", "verbose": -1, "num_leaves": 7},
                        lgb.Dataset(X, (X[:, 0] > 0).astype(int)), 5)
    info = parse_model(booster.model_to_string().encode(), name="u", path="u.txt", version="1",
                       last_modified=None).info
    binning = model_binning(info)
    assert binning.features[1].kind == "unused"
    a, b = X[:1_000].copy(), X[1_000:].copy()
    b[:, 1] = 50.0  # would be a shift if it were binned
    b[:300, 1] = np.nan
    result = _compare(binning, count(binning, a, None), count(binning, b, None),
                      against="variant")
    unused = _feature(result, 1)
    assert (unused.kind, unused.psi, unused.js, unused.chi2_p) == ("unused", 0.0, 0.0, 1.0)
    assert unused.drifted and unused.missing.served == pytest.approx(0.3)
    assert result.predictions is None  # neither side counted predictions


def test_profiles_of_another_binning_are_refused(model, reference):
    binning, ref = reference
    other = model_binning(model[0].info)
    with pytest.raises(ValueError, match="binning"):
        _compare(other, ref, Profile.empty(other))


def _record(name, *, psi_value, drifted, missing_jump=0.0, range_jump=0.0):
    return FeatureDrift(name=name, kind="numeric", psi=psi_value, js=0.0, chi2_p=1.0,
                        missing=RateChange(0.01, 0.01 + missing_jump, 1.0),
                        out_of_range=RateChange(0.0, range_jump, 1.0), baseline_rows=1,
                        served_rows=1, drifted=drifted)


def test_the_ranking_key():
    records = [
        _record("calm", psi_value=0.01, drifted=False),
        _record("moved", psi_value=0.15, drifted=False),
        _record("rates", psi_value=0.0, drifted=True, missing_jump=0.5),
        _record("psi", psi_value=0.4, drifted=True),
        _record("range", psi_value=0.0, drifted=True, range_jump=0.8),
        _record("calm_rates", psi_value=0.01, drifted=False, missing_jump=0.02),
    ]
    ranked = [r.name for r in sorted(records, key=rank_key)]
    assert ranked == ["psi", "range", "rates", "moved", "calm_rates", "calm"]
