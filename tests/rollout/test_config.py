"""The ``rollout`` block of an endpoint: validated with the router config, faults named by path."""

from __future__ import annotations

import copy
import json

import pytest

from shared.errors import InvalidRouterConfig
from shared.router import parse_config

BASE = {"endpoints": {"churn": {
    "variants": [{"name": "control", "model": "churn_v1", "weight": 100},
                 {"name": "candidate", "model": "churn_v2", "weight": 0}],
    "sticky": {"header": "x-user-id"},
    "rollout": {"control": "control", "candidate": "candidate", "steps": [5, 25, 50]}}}}


def config_with(edit=None):
    doc = copy.deepcopy(BASE)
    if edit:
        edit(doc["endpoints"]["churn"]["rollout"], doc["endpoints"]["churn"])
    return parse_config(json.dumps(doc))


def test_a_minimal_block_gets_safe_defaults_and_is_pending():
    rollout = config_with().endpoints["churn"].rollout
    assert rollout is not None
    assert (rollout.control, rollout.candidate, rollout.steps) == ("control", "candidate", (5, 25, 50))
    assert rollout.state.status == "pending" and rollout.active
    assert rollout.decision is None  # a pure canary
    assert rollout.guardrails.max_error_rate_increase == 0.01 and rollout.guardrails.max_p99_ratio == 1.5
    assert rollout.promote == "only" and rollout.min_minutes == 10 and rollout.min_requests == 100


def test_a_full_block_with_its_state_reads_back():
    def edit(block, ep):
        block.update(min_minutes=1, min_requests=20, max_hours=2, promote="keep_control",
                     guardrails={"max_error_rate_increase": 0.05, "max_p99_ratio": 2,
                                 "max_prediction_shift": 0.3, "min_requests": 10},
                     decision={"metric": "log_loss", "min_effect": 0.01, "alpha": 0.1},
                     state={"status": "running", "step": 1, "started": "2026-12-07T10:00:00Z",
                            "step_started": "2026-12-07T10:30:00Z",
                            "weights": {"control": 75, "candidate": 25}, "reason": "advanced"})
    rollout = config_with(edit).endpoints["churn"].rollout
    assert rollout.decision.metric == "log_loss" and rollout.decision.alpha == 0.1
    assert rollout.guardrails.max_prediction_shift == 0.3
    assert rollout.state.status == "running" and rollout.state.step == 1
    assert rollout.state.step_started - rollout.state.started == 1800
    assert rollout.state.weights == {"control": 75, "candidate": 25}
    assert rollout.share(rollout.state.step) == 25


BAD = [
    ("unknown field", lambda b, e: b.update(stepz=[1]), "endpoints.churn.rollout: unknown field 'stepz'"),
    ("no steps", lambda b, e: b.pop("steps"), "endpoints.churn.rollout.steps: is required"),
    ("control is not a variant", lambda b, e: b.update(control="nobody"),
     "endpoints.churn.rollout.control: 'nobody' is not a variant of this endpoint"),
    ("same variant twice", lambda b, e: b.update(candidate="control"),
     "endpoints.churn.rollout.candidate: must name another variant than control"),
    ("a step of 100", lambda b, e: b.update(steps=[5, 100]),
     "endpoints.churn.rollout.steps[1]: must be a share in percent above 0 and below 100"),
    ("steps going down", lambda b, e: b.update(steps=[25, 5]),
     "endpoints.churn.rollout.steps[1]: must be larger than the step before it"),
    ("AUC as the decision", lambda b, e: b.update(decision={"metric": "auc", "min_effect": 0.01}),
     "endpoints.churn.rollout.decision.metric: must be a per-row loss"),
    ("no smallest effect", lambda b, e: b.update(decision={"metric": "log_loss"}),
     "endpoints.churn.rollout.decision.min_effect: is required"),
    ("a zero effect", lambda b, e: b.update(decision={"metric": "log_loss", "min_effect": 0}),
     "endpoints.churn.rollout.decision.min_effect: must be a number above 0"),
    ("alpha of 1", lambda b, e: b.update(decision={"metric": "brier", "min_effect": 0.1, "alpha": 1}),
     "endpoints.churn.rollout.decision.alpha:"),
    ("p99 ratio below 1", lambda b, e: b.update(guardrails={"max_p99_ratio": 0.5}),
     "endpoints.churn.rollout.guardrails.max_p99_ratio: must be a number from 1"),
    ("shift over 1", lambda b, e: b.update(guardrails={"max_prediction_shift": 2}),
     "endpoints.churn.rollout.guardrails.max_prediction_shift:"),
    ("min_requests a float", lambda b, e: b.update(min_requests=1.5),
     "endpoints.churn.rollout.min_requests: must be a whole number"),
    ("unknown status", lambda b, e: b.update(state={"status": "done"}),
     "endpoints.churn.rollout.state.status: must be one of running, paused"),
    ("step past the last", lambda b, e: b.update(state={"status": "running", "step": 3}),
     "endpoints.churn.rollout.state.step: must be below the number of steps (3)"),
    ("a bad time", lambda b, e: b.update(state={"status": "running", "started": "yesterday"}),
     "endpoints.churn.rollout.state.started: must be an ISO 8601 time"),
    ("promote elsewhere", lambda b, e: b.update(promote="everywhere"),
     "endpoints.churn.rollout.promote: must be 'only'"),
]


@pytest.mark.parametrize("edit,message", [(e, m) for _, e, m in BAD], ids=[w for w, _, _ in BAD])
def test_each_fault_is_refused_with_the_path_of_the_field(edit, message):
    with pytest.raises(InvalidRouterConfig) as err:
        config_with(edit)
    assert err.value.message.startswith(message), err.value.message


def test_a_finished_rollout_may_outlive_its_control():
    # Promotion with promote=only removes the control variant; the block stays as history.
    def edit(block, ep):
        ep["variants"] = [{"name": "candidate", "model": "churn_v2", "weight": 100}]
        block["state"] = {"status": "promoted", "step": 2}
    rollout = config_with(edit).endpoints["churn"].rollout
    assert rollout.state.status == "promoted" and not rollout.active
