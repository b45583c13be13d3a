"""One evaluation of a rollout: the first rule that applies decides, with its reason."""

from __future__ import annotations

import json

import numpy as np
import pytest

from shared.rollout.decide import decide, guardrail_checks
from shared.rollout.evidence import Evidence, VariantStep, prediction_shift
from shared.rollout.sequential import compare_arms, summarize_arm
from shared.router import parse_config

NOW = 1_800_000_000.0
RNG = np.random.default_rng(5)


def rollout(step=0, decision=None, weights=None, status="running", minutes_in_step=30.0,
            **extra):
    block = {"control": "control", "candidate": "candidate", "steps": [5, 25, 50],
             "min_minutes": 10, "min_requests": 100,
             "guardrails": {"max_error_rate_increase": 0.02, "max_p99_ratio": 1.5,
                            "max_prediction_shift": 0.3, "min_requests": 30},
             **extra}
    if decision:
        block["decision"] = decision
    if status != "pending":
        share = [5, 25, 50][step]
        block["state"] = {"status": status, "step": step,
                          "started": _iso(NOW - 3600 * 2), "step_started": _iso(NOW - 60 * minutes_in_step),
                          "weights": weights or {"control": 100 - share, "candidate": share}}
    doc = {"endpoints": {"churn": {"variants": [{"name": "control", "model": "a", "weight": 1},
                                                {"name": "candidate", "model": "b", "weight": 1}],
                                   "rollout": block}}}
    return parse_config(json.dumps(doc)).endpoints["churn"].rollout


def _iso(t):
    from shared.ablog.times import iso_time
    return iso_time(t)


def step(requests=500, failures=0, p99=10.0, shift=0.0, spikes=0):
    """A variant's step: latencies spread below ``p99`` (1% at it), ``spikes`` of them 50x."""
    answered = max(requests - failures, 1)
    latencies = np.linspace(0.2 * p99, p99, answered)
    latencies[:spikes] = 50 * p99
    return VariantStep(requests, failures, float(np.percentile(latencies, 99)),
                       RNG.normal(shift, 1, size=(answered, 1)), latencies)


def evidence(control=None, candidate=None, outcomes=None):
    return Evidence(NOW, control or step(), candidate or step(), outcomes,
                    {"control": 0, "candidate": 0})


def outcomes(difference, n=4000, spread=0.5):
    a = RNG.normal(0.5, spread, n)
    b = RNG.normal(0.5 + difference, spread, n)
    return compare_arms(summarize_arm(a), summarize_arm(b), tau=0.01)


def weights_of(r):
    return dict(r.state.weights)


def test_a_pending_rollout_starts_at_its_first_step():
    r = rollout(status="pending")
    d = decide(r, None, weights={"control": 100, "candidate": 0}, now=NOW)
    assert d.action == "start" and "5%" in d.reason


def test_weights_a_person_changed_pause_the_rollout_and_their_edit_wins():
    r = rollout(step=1)
    d = decide(r, evidence(), weights={"control": 50, "candidate": 50}, now=NOW)
    assert d.action == "pause" and "edited by hand" in d.reason


def test_a_candidate_whose_model_cannot_load_is_rolled_back_with_that_reason():
    r = rollout()
    d = decide(r, None, weights=weights_of(r), now=NOW, candidate_problem="invalid_model: truncated")
    assert d.action == "rollback" and "invalid_model: truncated" in d.reason


def test_a_failing_candidate_is_rolled_back_on_the_error_rate_guardrail():
    r = rollout()
    d = decide(r, evidence(candidate=step(requests=200, failures=20)), weights=weights_of(r), now=NOW)
    assert d.action == "rollback" and "error rate increase" in d.reason
    assert [c.passed for c in d.checks][0] is False


def test_a_slow_candidate_is_rolled_back_on_the_latency_guardrail():
    r = rollout()
    d = decide(r, evidence(candidate=step(p99=40.0)), weights=weights_of(r), now=NOW)
    assert d.action == "rollback" and "p99 latency ratio 4" in d.reason


def test_sub_millisecond_latency_jitter_is_no_breach_however_large_the_ratio():
    r = rollout()
    fast = evidence(control=step(p99=0.2), candidate=step(p99=0.9))  # 4.5x, but 0.7 ms slower
    d = decide(r, fast, weights=weights_of(r), now=NOW)
    assert d.action == "advance" and d.checks[1].passed is True


def test_a_few_pauses_that_move_a_p99_are_no_breach_but_a_slow_tail_is():
    # 6 of 500 requests (1.2%) hit a pause: the candidate's p99 is the pause's, 50x the control's;
    # no more of its requests are slow than chance allows.
    r = rollout()
    paused = decide(r, evidence(candidate=step(spikes=6)), weights=weights_of(r), now=NOW)
    assert paused.checks[1].value > 10 and paused.checks[1].passed is True
    assert paused.action == "advance"
    slow = decide(r, evidence(candidate=step(spikes=40)), weights=weights_of(r), now=NOW)
    assert slow.action == "rollback" and "p99 latency ratio" in slow.reason


def test_a_candidate_predicting_otherwise_is_rolled_back_on_the_prediction_shift():
    r = rollout()
    d = decide(r, evidence(candidate=step(shift=2.0)), weights=weights_of(r), now=NOW)
    assert d.action == "rollback" and "prediction shift" in d.reason


def test_guardrails_are_not_judged_on_too_few_requests():
    r = rollout()
    checks = guardrail_checks(r, evidence(candidate=step(requests=10, failures=5)))
    assert [c.passed for c in checks] == [None, None, None]
    d = decide(r, evidence(candidate=step(requests=10, failures=5)), weights=weights_of(r), now=NOW)
    assert d.action == "hold"


def test_a_step_holds_until_its_minimum_time_and_requests_then_advances():
    r = rollout(minutes_in_step=5)
    assert decide(r, evidence(), weights=weights_of(r), now=NOW).action == "hold"
    r = rollout(minutes_in_step=30)
    few = evidence(control=step(requests=60), candidate=step(requests=60))
    assert decide(r, few, weights=weights_of(r), now=NOW).action == "hold"
    d = decide(r, evidence(), weights=weights_of(r), now=NOW)
    assert d.action == "advance" and "25%" in d.reason


def test_a_canary_is_promoted_after_its_last_step_passes():
    r = rollout(step=2)
    d = decide(r, evidence(), weights=weights_of(r), now=NOW)
    assert d.action == "promote" and "canary" in d.reason


def test_with_a_decision_metric_the_last_step_waits_for_the_outcomes_to_say_better():
    spec = {"metric": "squared_error", "min_effect": 0.01}
    r = rollout(step=2, decision=spec)
    undecided = decide(r, evidence(outcomes=outcomes(0.0, n=50)), weights=weights_of(r), now=NOW)
    assert undecided.action == "hold" and "waiting for outcomes" in undecided.reason
    better = decide(r, evidence(outcomes=outcomes(-0.2)), weights=weights_of(r), now=NOW)
    assert better.action == "promote" and "better on squared_error" in better.reason
    assert better.interval[1] < 0


def test_a_worse_candidate_is_rolled_back_at_any_step():
    r = rollout(step=0, decision={"metric": "squared_error", "min_effect": 0.01})
    d = decide(r, evidence(outcomes=outcomes(0.2)), weights=weights_of(r), now=NOW)
    assert d.action == "rollback" and "worse on squared_error" in d.reason and d.interval[0] > 0


def test_no_difference_that_matters_or_no_verdict_in_time_pauses_for_a_person():
    r = rollout(step=2, decision={"metric": "squared_error", "min_effect": 0.1})
    same = decide(r, evidence(outcomes=outcomes(0.0, n=20000, spread=0.2)), weights=weights_of(r), now=NOW)
    assert same.action == "pause" and "no difference that matters" in same.reason
    r = rollout(step=2, decision={"metric": "squared_error", "min_effect": 0.001}, max_hours=1)
    late = decide(r, evidence(outcomes=outcomes(0.0, n=50)), weights=weights_of(r), now=NOW)
    assert late.action == "pause" and "no verdict" in late.reason


@pytest.mark.parametrize("shift,expected", [(0.0, (0.0, 0.2)), (3.0, (0.8, 1.0))])
def test_the_prediction_shift_is_the_kolmogorov_smirnov_distance(shift, expected):
    a = RNG.normal(0, 1, size=(2000, 1))
    b = RNG.normal(shift, 1, size=(2000, 1))
    assert expected[0] <= prediction_shift(a, b) <= expected[1]
    assert prediction_shift(a, a) == 0.0
    assert np.isnan(prediction_shift(a, np.empty((0, 1))))
