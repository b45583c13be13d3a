"""One evaluation of a rollout: from its config, its state and the evidence, the next action and
its reason. Pure: no storage, no clock (``now`` is passed in).

In this order, the first that applies decides:

1. **pending** (no ``state``): ``start`` at the first step;
2. the two variants' weights are not those the controller set: a person edited the config,
   which wins: ``pause``;
3. the candidate's model cannot be loaded: ``rollback``, and the candidate leaves the variants;
4. a guardrail over the current step is breached (once both variants have
   ``guardrails.min_requests`` requests in it): ``rollback``;
5. the outcome decision says the candidate is **worse**: ``rollback``;
6. the step has lasted ``min_minutes`` with ``min_requests`` per variant, its guardrails passed:
   ``advance`` to the next step; after the last step, ``promote`` when the outcomes say
   **better** (or there is no decision metric: a pure canary), ``pause`` for a person when they
   say **no difference** that matters, or after ``max_hours`` without a verdict;
7. else ``hold``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from shared.rollout.config import Guardrails, Rollout
from shared.rollout.evidence import Evidence, VariantStep, prediction_shift
from shared.rollout.sequential import outcome_decision

Action = Literal["start", "advance", "hold", "promote", "rollback", "pause"]


@dataclass(frozen=True)
class Check:
    """One guardrail over the step: its value, its limit, and whether it passed (``None``: not
    judged yet, too few requests or no data)."""

    name: str
    value: float
    limit: float
    passed: bool | None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "value": _finite(self.value), "limit": self.limit,
                "passed": self.passed}


@dataclass(frozen=True)
class Decision:
    """What the controller does next, and why."""

    action: Action
    reason: str
    checks: tuple[Check, ...] = ()
    verdict: str | None = None           # the outcome decision: better, worse, ...
    interval: tuple[float, float] | None = None
    figures: dict[str, Any] = field(default_factory=dict)
    # A candidate whose model does not load leaves the variants: the app refuses a config that
    # names a model it cannot load, which would hold back every later change of the config.
    drop_candidate: bool = False

    @property
    def changes_config(self) -> bool:
        return self.action != "hold"


def guardrail_checks(rollout: Rollout, evidence: Evidence) -> tuple[Check, ...]:
    """The step's guardrails, candidate against control."""
    g = rollout.guardrails
    control, candidate = evidence.control, evidence.candidate
    judged = min(control.requests, candidate.requests) >= g.min_requests
    checks = [_check("error rate increase", candidate.error_rate - control.error_rate,
                     g.max_error_rate_increase, judged)]
    ratio = candidate.p99_ms / control.p99_ms if control.p99_ms > 0 else math.nan
    latency = _check("p99 latency ratio", ratio, g.max_p99_ratio, judged)
    if latency.passed is False and not latency_regressed(control, candidate, g):
        latency = Check(latency.name, ratio, g.max_p99_ratio, True)
    checks.append(latency)
    if g.max_prediction_shift is not None:
        shift = prediction_shift(control.predictions, candidate.predictions)
        checks.append(_check("prediction shift (KS)", shift, g.max_prediction_shift, judged))
    return tuple(checks)


# A p99 over a few hundred requests rests on its few slowest ones: a handful of pauses (the
# machine, a collector, the controller itself) flips it. The breach is therefore a test: the
# candidate's requests slower than the limit (max_p99_ratio times the control's p99, and at
# least min_p99_increase_ms above it) must be significantly more than the 1% that would be, at
# most, were the candidate no slower (one-sided binomial z test at this level).
LATENCY_Z = 3.09  # p < 0.001


def latency_regressed(control: VariantStep, candidate: VariantStep, g: Guardrails) -> bool:
    """Whether significantly more than 1% of the candidate's requests are over the latency
    limit (see above)."""
    n = candidate.latencies_ms.size
    if n == 0 or not control.p99_ms > 0:
        return False
    limit = max(control.p99_ms * g.max_p99_ratio, control.p99_ms + g.min_p99_increase_ms)
    over = int(np.count_nonzero(candidate.latencies_ms > limit))
    return (over - 0.01 * n) / math.sqrt(0.01 * 0.99 * n) > LATENCY_Z


def decide(rollout: Rollout, evidence: Evidence | None, *, weights: dict[str, float], now: float,
           candidate_problem: str | None = None) -> Decision:
    """The next action for a running or pending rollout. ``weights``: the control's and the
    candidate's weights in the config now; ``candidate_problem``: why the candidate's model
    cannot be loaded (``None``: it loads). ``evidence`` may be ``None`` for a pending rollout."""
    state = rollout.state
    if state.status == "pending":
        return Decision("start", f"started: the candidate gets {rollout.steps[0]:g}%")
    expected = {name: float(state.weights.get(name, math.nan))
                for name in (rollout.control, rollout.candidate)}
    if any(not math.isclose(float(weights.get(n, math.nan)), w) for n, w in expected.items()):
        now_set = ", ".join(f"{n} {weights.get(n, 'missing')}" for n in expected)
        return Decision("pause", f"the config was edited by hand (weights now {now_set}); "
                                 f"a person's edit wins: resume to go on")
    if candidate_problem is not None:
        return Decision("rollback", f"the candidate's model cannot be loaded: {candidate_problem}",
                        drop_candidate=True)
    assert evidence is not None
    checks = guardrail_checks(rollout, evidence)
    figures = _figures(rollout, evidence)
    verdict, interval = None, None
    if evidence.outcomes is not None:
        assert rollout.decision is not None
        verdict = outcome_decision(evidence.outcomes, rollout.decision.min_effect)
        interval = (evidence.outcomes.low, evidence.outcomes.high)

    def made(action: Action, reason: str) -> Decision:
        return Decision(action, reason, checks, verdict, interval, figures)

    for check in checks:
        if check.passed is False:
            return made("rollback", f"guardrail breached: {check.name} {check.value:.4g} over "
                                    f"its limit {check.limit:g}")
    if verdict == "worse":
        assert rollout.decision is not None and interval is not None
        return made("rollback", f"worse on {rollout.decision.metric}: candidate - control in "
                                f"[{interval[0]:.4g}, {interval[1]:.4g}] (always-valid "
                                f"{1 - rollout.decision.alpha:.0%} interval)")
    step_started = state.step_started if state.step_started is not None else now
    minutes = (now - step_started) / 60
    requests = min(evidence.control.requests, evidence.candidate.requests)
    if minutes < rollout.min_minutes or requests < rollout.min_requests:
        return made("hold", f"step {state.step + 1} of {len(rollout.steps)} "
                            f"({rollout.share(state.step):g}%): {minutes:.0f} of "
                            f"{rollout.min_minutes:g} min, {requests} of {rollout.min_requests} "
                            f"requests per variant")
    if any(c.passed is None for c in checks):
        return made("hold", "guardrails not judged yet: too few requests in the step")
    if state.step + 1 < len(rollout.steps):
        return made("advance", f"step {state.step + 1} passed its guardrails: the candidate "
                               f"gets {rollout.steps[state.step + 1]:g}%")
    if rollout.decision is None:
        return made("promote", "the last step passed its guardrails (canary, no decision metric)")
    if verdict == "better":
        assert interval is not None
        return made("promote", f"better on {rollout.decision.metric}: candidate - control in "
                               f"[{interval[0]:.4g}, {interval[1]:.4g}] (always-valid "
                               f"{1 - rollout.decision.alpha:.0%} interval)")
    if verdict == "no_difference":
        return made("pause", f"no difference that matters on {rollout.decision.metric} (within "
                             f"+/-{rollout.decision.min_effect:g}): a person decides")
    started = state.started if state.started is not None else now
    if (now - started) / 3600 >= rollout.max_hours:
        return made("pause", f"no verdict on {rollout.decision.metric} after "
                             f"{rollout.max_hours:g} h: a person decides")
    joined = evidence.joined
    return made("hold", f"last step passed; waiting for outcomes to decide on "
                        f"{rollout.decision.metric} ({joined.get(rollout.control, 0)} control, "
                        f"{joined.get(rollout.candidate, 0)} candidate joined)")


def _check(name: str, value: float, limit: float, judged: bool) -> Check:
    if not judged or math.isnan(value):
        return Check(name, value, limit, None)
    return Check(name, value, limit, value <= limit)


def _figures(rollout: Rollout, evidence: Evidence) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for role, step in (("control", evidence.control), ("candidate", evidence.candidate)):
        out[role] = {"requests": step.requests, "failures": step.failures,
                     "p99_ms": _finite(step.p99_ms)}
    if evidence.outcomes is not None:
        out["outcomes"] = {"delta": _finite(evidence.outcomes.delta),
                           "low": _finite(evidence.outcomes.low),
                           "high": _finite(evidence.outcomes.high),
                           "joined": evidence.joined}
    return out


def _finite(x: float) -> float | None:
    return x if isinstance(x, (int, float)) and math.isfinite(x) else None
