"""Simulated rollouts: under no difference the confidence sequence keeps false promotions at
or under alpha at every-evaluation monitoring, while the z test peeked on the same schedule does
not; a better candidate is promoted and a worse one rolled back; the same seed gives the same
figures."""

from __future__ import annotations

import math

import pytest

from scorefn.rollout.simulate import Plan, simulate

ALPHA = 0.05
# Monte Carlo margin: 3 standard deviations of a rate of 5% over 300 rollouts (0.038).
ROLLOUTS = 300
MARGIN = 3 * math.sqrt(ALPHA * (1 - ALPHA) / ROLLOUTS)


@pytest.fixture(scope="module")
def aa():
    """300 A/A rollouts (the same model in both arms), evaluated at each of 18 looks."""
    return simulate(control_noise=0.6, candidate_noise=0.6, rollouts=ROLLOUTS, seed=11)


def test_an_aa_rollout_has_no_true_difference(aa):
    assert aa.true_delta == 0.0
    assert (aa.rollouts, aa.looks, aa.alpha) == (ROLLOUTS, 18, ALPHA)


def test_the_confidence_sequence_keeps_false_promotions_at_alpha_under_continuous_monitoring(aa):
    assert aa.sequential.promoted <= ALPHA + MARGIN
    # both kinds of false verdict together stay within alpha too (the sequence is two-sided)
    assert aa.sequential.decided_wrongly_if_equal <= ALPHA + MARGIN


def test_the_z_test_peeked_at_every_evaluation_promotes_far_more_often_than_alpha(aa):
    assert aa.peeked_z.promoted > ALPHA + MARGIN
    assert aa.peeked_z.decided_wrongly_if_equal > 3 * ALPHA
    assert aa.peeked_z.promoted > 5 * aa.sequential.promoted


def test_the_same_z_test_read_once_at_the_end_holds_its_level(aa):
    # the simulation's z test is calibrated: the inflation comes from the peeking alone
    assert abs(aa.final_z.decided_wrongly_if_equal - ALPHA) <= MARGIN


def test_the_rates_of_a_rule_add_up(aa):
    for rates in (aa.sequential, aa.peeked_z, aa.final_z):
        shares = rates.promoted + rates.rolled_back + rates.no_difference + rates.undecided
        assert shares == pytest.approx(1.0)
    assert aa.peeked_z.no_difference == 0.0  # the z test has no such verdict


def test_a_better_candidate_is_promoted_and_never_rolled_back():
    result = simulate(control_noise=0.6, candidate_noise=0.0, rollouts=100, seed=12)
    assert result.true_delta < -0.02  # log loss lower by more than min_effect
    assert result.sequential.promoted >= 0.8 and result.sequential.rolled_back == 0.0
    outcomes = result.sequential.median_outcomes_to_promote
    assert outcomes is not None and 0 < outcomes < 36_000 * 1.05  # before the plan's last look
    assert result.sequential.median_minutes_to_promote is not None
    assert result.sequential.median_outcomes_to_roll_back is None


def test_a_worse_candidate_is_rolled_back_and_never_promoted():
    result = simulate(control_noise=0.6, candidate_noise=0.85, rollouts=100, seed=13)
    assert result.true_delta > 0.02
    assert result.sequential.rolled_back >= 0.6 and result.sequential.promoted == 0.0
    assert result.sequential.median_outcomes_to_roll_back is not None


def test_an_aa_rollout_held_long_enough_finds_no_difference_that_matters():
    # another hour at 50%: the interval gets narrow enough to fit within +/- min_effect in about
    # half of the rollouts (52% of 1,000 in the benchmark; 0.3 is 3 sd of 60 rollouts below that)
    plan = Plan(shares=(0.05, 0.25, 0.5, 0.5, 0.5), looks_per_share=6)
    result = simulate(control_noise=0.6, candidate_noise=0.6, rollouts=60, seed=14, plan=plan)
    assert result.sequential.no_difference >= 0.3
    assert result.sequential.promoted + result.sequential.rolled_back <= 0.1


def test_the_same_seed_gives_the_same_figures_and_another_seed_others():
    small = Plan(looks_per_share=2, users_per_look=200)
    first = simulate(control_noise=0.6, candidate_noise=0.3, rollouts=30, seed=5, plan=small)
    assert simulate(control_noise=0.6, candidate_noise=0.3, rollouts=30, seed=5, plan=small) == first
    assert simulate(control_noise=0.6, candidate_noise=0.3, rollouts=30, seed=6, plan=small) != first


def test_a_plan_refuses_impossible_shares():
    with pytest.raises(ValueError, match="shares"):
        Plan(shares=(0.05, 1.0))
    with pytest.raises(ValueError, match=">= 1"):
        Plan(users_per_look=0)
