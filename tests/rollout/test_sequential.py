"""The rollout's always-valid comparison: per-arm summaries (the report's cluster-robust
variance), the confidence sequence (its formula, wider than a fixed-horizon interval, shrinking
with data, covering the truth at every look of a seeded simulation, widened by correlated
clusters), and the decision rule with its minimum of data."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from scorefn.ab import stats
from shared.rollout.sequential import (
    MIN_CLUSTERS,
    ArmSummary,
    SequentialResult,
    arm_variance,
    compare_arms,
    confidence_radius,
    outcome_decision,
    summarize_arm,
)


def report_comparison(a, ga, b, gb):
    """The A/B report's fixed-horizon comparison of two arms whose per-row losses are ``a`` and
    ``b``: its MAE with labels 0 and "predictions" the losses (shifted to be >= 0; a common
    shift changes neither the difference nor its standard error)."""
    shift = min(a.min(), b.min())
    return stats.compare_independent("mae", np.zeros(a.size), a - shift, np.zeros(b.size), b - shift,
                                     groups_control=ga, groups_candidate=gb)


def clustered_losses(rng, users, rows_per_user, mean=0.5, user_sd=0.3, row_sd=0.3):
    """Losses of ``users`` users with ``rows_per_user`` rows each, correlated within a user."""
    user = np.repeat(np.arange(users), rows_per_user)
    loss = mean + rng.normal(0, user_sd, users)[user] + rng.normal(0, row_sd, user.size)
    return loss, user


# -- arms ------------------------------------------------------------------------------------


def test_an_arm_of_independent_rows_has_the_usual_variance_of_the_mean():
    x = np.random.default_rng(1).normal(size=500)
    arm = summarize_arm(x)
    assert (arm.rows, arm.clusters) == (500, 500)
    assert arm.mean == pytest.approx(x.mean())
    assert arm.variance == pytest.approx(x.var(ddof=1) / 500)
    assert arm.se == pytest.approx(math.sqrt(arm.variance))


def test_an_arm_with_clusters_has_the_reports_cluster_robust_variance():
    rng = np.random.default_rng(2)
    a, ga = clustered_losses(rng, 300, 4)
    b, gb = clustered_losses(rng, 200, 6, mean=0.45)
    control, candidate = summarize_arm(a, ga), summarize_arm(b, gb)
    assert (control.rows, control.clusters) == (1200, 300)
    report = report_comparison(a, ga, b, gb)
    assert candidate.mean - control.mean == pytest.approx(report.delta)
    assert control.variance + candidate.variance == pytest.approx(report.se ** 2, rel=1e-9)


def test_cluster_ids_can_be_strings_and_rows_need_not_be_grouped():
    rng = np.random.default_rng(3)
    x, g = clustered_losses(rng, 50, 3)
    order = rng.permutation(x.size)
    by_int = summarize_arm(x, g)
    by_str = summarize_arm(x[order], np.array([f"user-{i}" for i in g[order]]))
    assert by_str.clusters == 50
    assert by_str.mean == pytest.approx(by_int.mean)
    assert by_str.variance == pytest.approx(by_int.variance)


def test_the_variance_from_sufficient_statistics_adds_up_over_batches_of_users():
    rng = np.random.default_rng(4)
    x, g = clustered_losses(rng, 120, 5)
    first, second = g < 70, g >= 70  # two batches of users, as two evaluation periods bring

    def sums(mask):
        s = np.bincount(g[mask], weights=x[mask])
        n = np.bincount(g[mask]).astype(float)
        keep = n > 0
        s, n = s[keep], n[keep]
        return np.array([n.sum(), keep.sum(), s.sum(), s @ s, s @ n, n @ n])

    total = sums(first) + sums(second)
    assert arm_variance(*total) == pytest.approx(summarize_arm(x, g).variance, rel=1e-9)
    # and on arrays: both looks at once
    looks = np.cumsum([sums(first), sums(second)], axis=0)
    both = arm_variance(*looks.T)
    assert both[0] == pytest.approx(summarize_arm(x[first], g[first]).variance, rel=1e-9)
    assert both[1] == pytest.approx(summarize_arm(x, g).variance, rel=1e-9)


def test_an_arm_needs_two_clusters_for_a_variance_and_refuses_bad_input():
    assert math.isnan(summarize_arm(np.array([1.0, 2.0]), np.array(["a", "a"])).variance)
    empty = summarize_arm(np.array([]))
    assert empty.rows == 0 and math.isnan(empty.mean)
    with pytest.raises(ValueError, match="finite"):
        summarize_arm(np.array([1.0, np.inf]))
    with pytest.raises(ValueError, match="3 cluster ids for 2 rows"):
        summarize_arm(np.array([1.0, 2.0]), np.array([1, 2, 3]))


# -- the confidence sequence -----------------------------------------------------------------


def arm(mean, variance, clusters=1000):
    return ArmSummary(clusters * 3, clusters, mean, variance)


def test_the_radius_is_the_normal_mixture_formula_and_inverts_the_msprt():
    v, tau, alpha = 2e-4, 0.02, 0.05
    t2 = tau ** 2
    expected = math.sqrt(v * (v + t2) / t2 * (2 * math.log(1 / alpha) + math.log((v + t2) / v)))
    radius = confidence_radius(v, tau, alpha)
    assert radius == pytest.approx(expected, rel=1e-12)
    # at delta = radius the mixture likelihood ratio is exactly 1/alpha
    likelihood_ratio = math.sqrt(v / (v + t2)) * math.exp(t2 * radius ** 2 / (2 * v * (v + t2)))
    assert likelihood_ratio == pytest.approx(1 / alpha, rel=1e-9)


def test_the_radius_at_the_edges():
    assert confidence_radius(0.0, 0.02) == 0.0  # the limit as V -> 0
    assert math.isnan(confidence_radius(float("nan"), 0.02))
    assert confidence_radius(math.inf, 0.02) == math.inf
    for tau, alpha in ((0.0, 0.05), (-1.0, 0.05), (math.inf, 0.05), (0.02, 0.0), (0.02, 1.0)):
        with pytest.raises(ValueError):
            confidence_radius(1e-4, tau, alpha)


def test_the_interval_is_wider_than_the_fixed_horizon_one_on_the_same_data():
    rng = np.random.default_rng(5)
    a, ga = clustered_losses(rng, 400, 4)
    b, gb = clustered_losses(rng, 400, 4, mean=0.48)
    result = compare_arms(summarize_arm(a, ga), summarize_arm(b, gb), tau=0.02, alpha=0.05)
    fixed = report_comparison(a, ga, b, gb)  # the report's 95% interval
    assert result.delta == pytest.approx(fixed.delta)
    assert result.low < fixed.low and result.high > fixed.high
    # by a factor that is the price of looking at any time: here about 2
    assert 1.5 < (result.high - result.low) / (fixed.high - fixed.low) < 2.5


def test_the_interval_shrinks_as_data_grow():
    rng = np.random.default_rng(6)
    a, ga = clustered_losses(rng, 40_000, 3)
    b, gb = clustered_losses(rng, 40_000, 3)
    widths = []
    for users in (100, 1_000, 10_000, 40_000):
        rows = users * 3
        r = compare_arms(summarize_arm(a[:rows], ga[:rows]), summarize_arm(b[:rows], gb[:rows]), tau=0.02)
        widths.append(r.high - r.low)
    assert widths == sorted(widths, reverse=True)
    assert widths[-1] < widths[0] / 10  # 400 times the users: close to 1/sqrt(400), a log factor slower
    # and it widens with the variance at a fixed tau, so more data never make it wider
    variances = np.geomspace(1e-9, 1, 50)
    assert all(confidence_radius(v, 0.02) < confidence_radius(v * 1.01, 0.02) for v in variances)


def test_correlated_clusters_widen_the_interval_independent_ones_do_not():
    rng = np.random.default_rng(7)
    a, ga = clustered_losses(rng, 500, 8, user_sd=0.3, row_sd=0.3)
    b, gb = clustered_losses(rng, 500, 8, user_sd=0.3, row_sd=0.3)
    by_user = compare_arms(summarize_arm(a, ga), summarize_arm(b, gb), tau=0.02)
    by_row = compare_arms(summarize_arm(a), summarize_arm(b), tau=0.02)
    # 8 rows per user, half the variance shared: design effect 1 + 7 * 0.5 = 4.5
    assert by_user.variance / by_row.variance == pytest.approx(4.5, rel=0.25)
    assert by_user.high - by_user.low > 1.8 * (by_row.high - by_row.low)
    # the same grouping of rows that are not correlated changes little
    x, y = rng.normal(0.5, 0.42, a.size), rng.normal(0.5, 0.42, b.size)
    grouped = compare_arms(summarize_arm(x, ga), summarize_arm(y, gb), tau=0.02)
    ungrouped = compare_arms(summarize_arm(x), summarize_arm(y), tau=0.02)
    assert grouped.variance / ungrouped.variance == pytest.approx(1.0, abs=0.2)


def test_the_interval_covers_the_true_difference_at_every_look_in_a_seeded_simulation():
    # 1,000 experiments, 20 looks each at the cumulative data, 40 new users per arm between
    # looks with 4 correlated rows each; the candidate's true mean loss is 0.03 lower. The
    # sequence may miss the truth at some look in at most alpha of the experiments (plus Monte
    # Carlo noise: 3 sd of 1,000 draws at 5% is 0.021). Per look, arm_variance on cumulative
    # sums (equal to summarize_arm: see above), then compare_arms as the controller calls it.
    rng = np.random.default_rng(8)
    experiments, looks, users_per_look, rows_per_user, true_delta = 1000, 20, 40, 4, -0.03

    def cumulative_arm(mean):
        users = experiments * looks * users_per_look
        loss, user = clustered_losses(rng, users, rows_per_user, mean=mean)
        s = np.bincount(user, weights=loss).reshape(experiments, looks, users_per_look)
        n = np.full(s.shape, float(rows_per_user))
        stat = [a.sum(axis=-1).cumsum(axis=1) for a in (n, np.ones_like(n), s, s * s, s * n, n * n)]
        return stat[1], stat[2] / stat[0], arm_variance(*stat), stat[0]

    control, candidate = cumulative_arm(0.5), cumulative_arm(0.5 + true_delta)
    missed = fixed_missed = 0
    z = stats.z_quantile(0.975)
    for e in range(experiments):
        missed_here = fixed_missed_here = False
        for t in range(looks):
            c, d = (ArmSummary(int(rows[e, t]), int(k[e, t]), mean[e, t], var[e, t])
                    for k, mean, var, rows in (control, candidate))
            r = compare_arms(c, d, tau=0.02)
            missed_here |= not r.low <= true_delta <= r.high
            fixed_missed_here |= abs(r.delta - true_delta) > z * math.sqrt(r.variance)
        missed += missed_here
        fixed_missed += fixed_missed_here
    assert missed / experiments <= 0.05 + 0.021
    # the report's 95% interval, read at the same 20 looks, misses at some look far more often
    assert fixed_missed / experiments > 0.15


def test_tau_at_the_smallest_effect_that_matters_gives_about_the_narrowest_interval_where_it_is_decided():
    # An effect d is first detectable when the radius falls to d; there, tau = d is within a few
    # percent of the narrowest interval any tau gives (the optimum is tau ~ 0.94 d).
    d = 0.02
    variance = d ** 2 / 9.21  # where the best radius is d
    taus = np.geomspace(d / 30, d * 30, 2001)
    best = min(confidence_radius(variance, t) for t in taus)
    assert confidence_radius(variance, d) <= 1.01 * best
    assert best == pytest.approx(d, rel=0.01)


# -- decisions -------------------------------------------------------------------------------


def result(low, high, clusters=(MIN_CLUSTERS, MIN_CLUSTERS)):
    mid = (low + high) / 2
    return SequentialResult(mid, low, high, 0.05, 0.02, 1e-4, ArmSummary(100, clusters[0], 0.5, 5e-5),
                            ArmSummary(100, clusters[1], 0.5 + mid, 5e-5))


@pytest.mark.parametrize("low, high, min_effect, decision", [
    (-0.05, -0.01, 0.02, "better"),          # whole interval below 0: the candidate's loss is lower
    (-0.015, -0.001, 0.02, "better"),        # better, though by less than matters: still better
    (0.01, 0.05, 0.02, "worse"),
    (-0.01, 0.015, 0.02, "no_difference"),   # within (-0.02, 0.02): any difference is too small to matter
    (-0.03, 0.01, 0.02, "undecided"),        # straddles 0 and reaches past -min_effect
    (-0.01, 0.02, 0.02, "undecided"),        # touching min_effect is not within it
    (-0.01, 0.015, 0.0, "undecided"),        # no equivalence margin: no "no_difference"
    (0.0, 0.01, 0.02, "no_difference"),      # touching 0 is not above it
])
def test_the_decision_rule(low, high, min_effect, decision):
    assert outcome_decision(result(low, high), min_effect) == decision


def test_no_verdict_before_the_minimum_of_clusters_in_each_arm():
    clear = (-0.5, -0.4)
    assert outcome_decision(result(*clear), 0.02) == "better"
    assert outcome_decision(result(*clear, clusters=(MIN_CLUSTERS - 1, 500)), 0.02) == "undecided"
    assert outcome_decision(result(*clear, clusters=(500, MIN_CLUSTERS - 1)), 0.02) == "undecided"
    assert outcome_decision(result(*clear, clusters=(10, 10)), 0.02, min_clusters=10) == "better"


def test_a_tiny_real_sample_never_decides():
    rng = np.random.default_rng(9)
    a, ga = clustered_losses(rng, 10, 20, mean=0.9, user_sd=0.05, row_sd=0.05)
    b, gb = clustered_losses(rng, 10, 20, mean=0.1, user_sd=0.05, row_sd=0.05)  # clear, but 10 users an arm
    r = compare_arms(summarize_arm(a, ga), summarize_arm(b, gb), tau=0.02)
    assert r.high < 0 and outcome_decision(r, 0.02) == "undecided"


def test_an_undefined_interval_is_undecided_and_a_bad_margin_is_refused():
    r = compare_arms(arm(0.5, float("nan")), arm(0.4, 1e-5), tau=0.02)
    assert math.isnan(r.low) and outcome_decision(r, 0.02) == "undecided"
    with pytest.raises(ValueError, match="min_effect"):
        outcome_decision(result(-0.05, -0.01), -0.01)


def test_the_result_names_both_arms_and_is_json_ready():
    r = compare_arms(arm(0.50, 1e-5, clusters=300), arm(0.47, 2e-5, clusters=200), tau=0.02)
    assert (r.n_control, r.n_candidate) == (900, 600)
    assert r.delta == pytest.approx(-0.03) and r.variance == pytest.approx(3e-5)
    assert r.low == pytest.approx(r.delta - confidence_radius(3e-5, 0.02))
    data = json.loads(json.dumps(r.to_dict()))
    assert data["candidate"]["clusters"] == 200 and data["tau"] == 0.02
    assert compare_arms(arm(0.5, float("nan")), arm(0.4, 1e-5), tau=0.02).to_dict()["low"] is None
