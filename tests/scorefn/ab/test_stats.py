"""The report's statistics on arrays: AUC against a brute-force count, DeLong against the
bootstrap, interval coverage, the outcomes-needed estimate and the verdicts."""

from __future__ import annotations

import math

import numpy as np
import pytest

from scorefn.ab import stats


def brute_auc(y, p):
    pos, neg = p[y == 1], p[y == 0]
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return wins / (pos.size * neg.size)


def sample(n, noise, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    y = (rng.random(n) < 1 / (1 + np.exp(-1.5 * x))).astype(float)
    return y, 1 / (1 + np.exp(-(x + rng.normal(scale=noise, size=n)))), rng


def test_auc_is_the_rank_statistic_with_ties_counted_half():
    y, p, _ = sample(400, 1.0, 1)
    assert stats.auc(y, p) == pytest.approx(brute_auc(y, p), abs=1e-12)
    rounded = np.round(p, 1)  # many ties
    assert stats.auc(y, rounded) == pytest.approx(brute_auc(y, rounded), abs=1e-12)
    assert math.isnan(stats.auc(np.ones(5), np.arange(5.0)))


def test_delong_standard_errors_match_the_bootstrap():
    y, p1, rng = sample(1200, 0.8, 2)
    p2 = 1 / (1 + np.exp(-(np.log(p1 / (1 - p1)) + rng.normal(scale=1.2, size=y.size))))
    boots, diffs = [], []
    for _ in range(300):
        i = rng.integers(0, y.size, y.size)
        boots.append(stats.auc(y[i], p1[i]))
        diffs.append(stats.auc(y[i], p2[i]) - stats.auc(y[i], p1[i]))
    assert stats.auc_estimate(y, p1).se == pytest.approx(np.std(boots), rel=0.2)
    assert stats.auc_paired(y, p1, p2).se == pytest.approx(np.std(diffs), rel=0.2)


@pytest.mark.parametrize("metric", ["log_loss", "brier", "accuracy"])
def test_mean_metric_errors_match_the_bootstrap(metric):
    y, p, rng = sample(1000, 0.8, 3)
    est = stats.estimate(metric, y, p)
    boots = []
    for _ in range(300):
        i = rng.integers(0, y.size, y.size)
        boots.append(stats.per_row_loss(metric, y[i], p[i]).mean())
    assert est.value == pytest.approx(stats.per_row_loss(metric, y, p).mean())
    assert est.se == pytest.approx(np.std(boots), rel=0.2)


def test_rmse_by_the_delta_method():
    rng = np.random.default_rng(4)
    y = rng.normal(size=2000)
    p = y + rng.normal(scale=0.5, size=2000)
    est = stats.estimate("rmse", y, p)
    assert est.value == pytest.approx(np.sqrt(np.mean((p - y) ** 2)))
    boots = [np.sqrt(np.mean((p[i] - y[i]) ** 2)) for i in (rng.integers(0, 2000, 2000) for _ in range(300))]
    assert est.se == pytest.approx(np.std(boots), rel=0.2)


def test_intervals_of_an_ab_difference_cover_the_truth_about_95_percent():
    # Two arms with the same model: the true difference is 0.
    rng = np.random.default_rng(5)
    covered = 0
    for _ in range(200):
        x = rng.normal(size=600)
        y = (rng.random(600) < 1 / (1 + np.exp(-x))).astype(float)
        p = 1 / (1 + np.exp(-x))
        c = stats.compare_independent("auc", y[:300], p[:300], y[300:], p[300:])
        covered += c.low <= 0 <= c.high
    assert 180 <= covered <= 198


def test_outcomes_needed_scales_with_the_square_of_the_standard_error():
    # se 0.02 at n=1000; to detect 0.02 needs se 0.02/2.80 -> n ~ 1000 * 2.8^2 = 7,849
    more = stats.outcomes_needed(0.02, 0.02, 1000)
    assert 6800 <= more <= 6900
    assert stats.outcomes_needed(0.0, 0.02, 1000) is None
    assert stats.outcomes_needed(0.2, 0.02, 1000) == 0


def test_verdicts():
    clear = stats.Comparison("auc", 0.05, 0.01, 0.03, 0.07, 5.0, stats.two_sided_p(5.0), 500, 500, False)
    v = stats.verdict(clear, control="old", candidate="new")
    assert v.kind == "better" and v.text.startswith("new is better than old")
    worse_loss = stats.Comparison("log_loss", 0.05, 0.01, 0.03, 0.07, 5.0, stats.two_sided_p(5.0), 500, 500,
                                  False)
    assert stats.verdict(worse_loss, control="old", candidate="new").kind == "worse"
    unclear = stats.Comparison("auc", 0.01, 0.01, -0.01, 0.03, 1.0, stats.two_sided_p(1.0), 500, 500, False)
    v = stats.verdict(unclear, control="old", candidate="new")
    assert v.kind == "undecided" and "not yet distinguishable" in v.text
    assert v.more_needed and f"about {v.more_needed:,} more outcomes" in v.text
    v = stats.verdict(clear, control="old", candidate="new", too_few="20 outcomes")
    assert v.kind == "undecided" and "20 outcomes" in v.text


def test_too_few_outcomes_are_named():
    assert stats.enough_outcomes("auc", np.array([0, 1] * 10)).startswith("20 outcomes")
    assert "of one class" in stats.enough_outcomes("auc", np.array([0] * 98 + [1, 1]))
    assert stats.enough_outcomes("auc", np.array([0, 1] * 40)) is None


def test_agreement_of_a_shadow():
    a = np.array([0.1, 0.4, 0.6, 0.9])
    s = np.array([0.2, 0.6, 0.55, 0.8])
    ag = stats.agreement(a, s, objective="binary", threshold=0.5)
    assert ag["flipped"] == 0.25 and ag["mean_abs_diff"] == pytest.approx(0.1125)
    assert ag["correlation"] == pytest.approx(np.corrcoef(a, s)[0, 1])
    multi = stats.agreement(np.array([[0.7, 0.3], [0.4, 0.6]]), np.array([[0.6, 0.4], [0.6, 0.4]]),
                            objective="multiclass")
    assert multi["flipped"] == 0.5


def test_undefined_metrics_give_no_verdict():
    c = stats.compare_independent("auc", np.array([1.0] * 40), np.linspace(0, 1, 40),
                                  np.array([0.0, 1.0] * 20), np.linspace(0, 1, 40))
    assert math.isnan(c.delta) and math.isnan(c.p_value)
    v = stats.verdict(c, control="a", candidate="b")
    assert v.kind == "undecided" and "not defined" in v.text


def clustered_arm(rng, users=120, per_user=12):
    """Outcomes of users who each give many: labels share a per-user effect the model does
    not see, so rows of one user are correlated."""
    a, b = rng.normal(0, 1, users), rng.normal(0, 1.5, users)
    x = np.repeat(a, per_user) + rng.normal(0, 0.7, users * per_user)
    p = 1 / (1 + np.exp(-x))
    y = (rng.random(x.size) < 1 / (1 + np.exp(-(x + np.repeat(b, per_user))))).astype(float)
    return y, p, np.repeat(np.arange(users), per_user)


@pytest.mark.parametrize("metric", ["auc", "log_loss"])
def test_an_aa_test_with_sticky_users_keeps_its_false_positive_rate_with_clustered_errors(metric):
    rng = np.random.default_rng(11)
    clustered = naive = 0
    runs = 150
    for _ in range(runs):
        (yc, pc, gc), (yv, pv, gv) = clustered_arm(rng), clustered_arm(rng)
        clustered += stats.compare_independent(metric, yc, pc, yv, pv, groups_control=gc,
                                               groups_candidate=gv).p_value < 0.05
        naive += stats.compare_independent(metric, yc, pc, yv, pv).p_value < 0.05
    assert clustered / runs <= 0.10  # nominal 0.05
    assert naive / runs >= 0.2  # rows taken as independent: the same model "wins" often


def test_one_row_per_cluster_gives_the_independent_rows_errors():
    y, p, _ = sample(500, 0.8, 12)
    own = np.arange(y.size)
    for metric in ("auc", "log_loss", "brier"):
        assert stats.estimate(metric, y, p, groups=own).se == stats.estimate(metric, y, p).se
    a = stats.compare_paired("log_loss", y, p, np.clip(p * 1.1, 0, 1), groups=own)
    assert a.se == stats.compare_paired("log_loss", y, p, np.clip(p * 1.1, 0, 1)).se


def test_clustered_paired_errors_match_a_cluster_bootstrap():
    rng = np.random.default_rng(13)
    y, p1, g = clustered_arm(rng, users=300, per_user=6)
    p2 = 1 / (1 + np.exp(-(np.log(p1 / (1 - p1)) + rng.normal(scale=0.8, size=y.size))))
    users = np.unique(g)
    rows_of = [np.flatnonzero(g == u) for u in users]
    diffs = []
    for _ in range(300):
        pick = np.concatenate([rows_of[u] for u in rng.integers(0, users.size, users.size)])
        diffs.append(stats.auc(y[pick], p2[pick]) - stats.auc(y[pick], p1[pick]))
    assert stats.auc_paired(y, p1, p2, groups=g).se == pytest.approx(np.std(diffs), rel=0.25)


def test_a_verdicts_interval_is_the_one_its_test_uses():
    c = stats.Comparison("auc", 0.03, 0.016, 0.0, 0.0, 0.03 / 0.016, stats.two_sided_p(0.03 / 0.016),
                         500, 500, False)
    v = stats.verdict(c, control="old", candidate="new", alpha=0.10)
    low, high = stats.interval(c, 0.10)
    assert v.kind == "better" and "90% CI" in v.text and f"{low:+.4f} to {high:+.4f}" in v.text
    assert low > 0  # a win at 10% has a 90% interval above 0
    v = stats.verdict(c, control="old", candidate="new", alpha=0.05 / 3)
    assert v.kind == "undecided" and "98.33% CI" in v.text and "1.67% level" in v.text


def test_an_undecided_verdict_never_claims_equivalence():
    tiny = stats.Comparison("auc", 0.0005, 0.05, 0.0, 0.0, 0.01, stats.two_sided_p(0.01), 80, 80, False)
    v = stats.verdict(tiny, control="old", candidate="new")
    assert v.kind == "undecided" and "not evidence that they are equivalent" in v.text
    assert "may well be equivalent" not in v.text
