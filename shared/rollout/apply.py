"""A decision written into the router config document: the two variants' weights and the
rollout's ``state``. Works on the decoded JSON document, so that every other field (and its
order) stays as the person who wrote it left it; the result is validated before it is written.
"""

from __future__ import annotations

import copy
from typing import Any

from shared.ablog.times import iso_time
from shared.rollout.config import Rollout
from shared.rollout.decide import Decision

FULL = 100  # weights are percent: the candidate's share and the control's are 100 together


def apply_decision(document: dict[str, Any], endpoint: str, rollout: Rollout, decision: Decision,
                   now: float) -> dict[str, Any]:
    """A copy of ``document`` with ``decision`` applied to ``endpoint``'s rollout (a ``hold``
    returns an unchanged copy)."""
    doc = copy.deepcopy(document)
    if not decision.changes_config:
        return doc
    ep = doc["endpoints"][endpoint]
    block = ep["rollout"]
    state = dict(block.get("state") or {})
    action = decision.action
    step = int(state.get("step", 0))
    if action == "start":
        state = {"status": "running", "step": 0, "started": iso_time(now),
                 "step_started": iso_time(now)}
        share: float | None = rollout.steps[0]
    elif action == "advance":
        step += 1
        state.update(status="running", step=step, step_started=iso_time(now))
        share = rollout.steps[step]
    elif action == "rollback":
        state.update(status="rolled_back")
        share = 0
    elif action == "promote":
        state.update(status="promoted")
        share = FULL
    else:  # pause: the weights stay as they are (a person's edit, or the last step's)
        state.update(status="paused")
        share = None
    state["reason"] = decision.reason
    state["decided"] = iso_time(now)
    if share is not None:
        weights = {rollout.control: FULL - share, rollout.candidate: share}
        for variant in ep["variants"]:
            if variant["name"] in weights:
                variant["weight"] = weights[variant["name"]]
        if action == "promote" and rollout.promote == "only":
            ep["variants"] = [v for v in ep["variants"] if v["name"] != rollout.control]
            weights.pop(rollout.control)
        if decision.drop_candidate:
            ep["variants"] = [v for v in ep["variants"] if v["name"] != rollout.candidate]
            weights.pop(rollout.candidate)
        state["weights"] = weights
    block["state"] = state
    return doc


def set_state(document: dict[str, Any], endpoint: str, rollout: Rollout, *, status: str,
              reason: str, now: float, weights_now: dict[str, float] | None = None
              ) -> dict[str, Any]:
    """A copy of ``document`` with the rollout's status set by a person (``rollout pause``,
    ``resume``, ``abort``): resume puts the current step's weights back; abort gives the
    candidate 0."""
    doc = copy.deepcopy(document)
    ep = doc["endpoints"][endpoint]
    state = dict(ep["rollout"].get("state") or {})
    state.update(status=status, reason=reason, decided=iso_time(now))
    share: float | None = None
    if status == "running":
        share = rollout.share(rollout.state.step)
        state["step_started"] = iso_time(now)  # the step's figures start again
        state.setdefault("started", iso_time(now))
    elif status == "aborted":
        share = 0
    if share is not None:
        weights = {rollout.control: FULL - share, rollout.candidate: share}
        for variant in ep["variants"]:
            if variant["name"] in weights:
                variant["weight"] = weights[variant["name"]]
        state["weights"] = weights
    elif weights_now is not None:
        state["weights"] = weights_now
    ep["rollout"]["state"] = state
    return doc
