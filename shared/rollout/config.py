"""An endpoint's ``rollout`` block in the router config: what a progressive rollout is asked to
do (steps, guardrails, the decision on outcomes) and where it stands (``state``, written by the
controller).

::

    "rollout": {
      "control": "control", "candidate": "candidate",
      "steps": [5, 25, 50],              # the candidate's share (%) at each step
      "min_minutes": 10,                 # per step, before it may advance
      "min_requests": 100,               # per variant and step, before it may advance
      "max_hours": 72,                   # at the last step without a verdict: pause for a person
      "guardrails": {"max_error_rate_increase": 0.01, "max_p99_ratio": 1.5,
                     "min_p99_increase_ms": 1, "max_prediction_shift": 0.25,
                     "min_requests": 30},
      "decision": {"metric": "log_loss", "min_effect": 0.002, "alpha": 0.05},
      "promote": "only",                 # or "keep_control" (the control stays at weight 0)
      "state": {"status": "running", "step": 0, "started": "...", "step_started": "...",
                "weights": {"control": 95, "candidate": 5}, "reason": "..."}
    }

Without ``decision`` (or with ``null``) the rollout is a pure canary: the candidate is promoted
once its last step passes its guardrails. Without ``state`` the rollout is *pending*: the
controller starts it on its next run. Validated like the rest of the config, with messages
that start with the path of the bad field.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from shared.ablog.times import epoch_seconds
from shared.rollout.losses import FAMILY_METRICS
from shared.router.fields import fail, is_number, name_field, obj

MAX_STEPS = 20
STATUSES = ("running", "paused", "promoted", "rolled_back", "aborted")
ACTIVE = ("running", "paused")
DECISION_METRICS = tuple(sorted({m for metrics in FAMILY_METRICS.values() for m in metrics}))

Status = Literal["pending", "running", "paused", "promoted", "rolled_back", "aborted"]


@dataclass(frozen=True)
class Guardrails:
    """Limits on the candidate against the control, measured over the current step."""

    max_error_rate_increase: float = 0.01   # candidate's failed share minus the control's
    max_p99_ratio: float = 1.5              # candidate's p99 latency over the control's...
    min_p99_increase_ms: float = 1.0        # ...breached only when also this much slower
    latency_warmup_seconds: float = 30.0    # a step's first seconds do not count for latency
    max_prediction_shift: float | None = None  # Kolmogorov-Smirnov distance of predictions
    min_requests: int = 30                  # per variant, before the guardrails are judged


@dataclass(frozen=True)
class DecisionSpec:
    """The outcome decision: a per-row loss, the smallest difference that matters, the level."""

    metric: str
    min_effect: float  # in the loss's units; also the confidence sequence's mixing scale
    alpha: float = 0.05


@dataclass(frozen=True)
class RolloutState:
    """Where a rollout stands; written by the controller (and the CLI), read back from the config."""

    status: Status
    step: int = 0
    started: float | None = None        # epoch seconds
    step_started: float | None = None
    decided: float | None = None        # the last change of state
    weights: Mapping[str, float] = field(default_factory=dict)  # as the controller set them
    reason: str = ""


@dataclass(frozen=True)
class Rollout:
    """A validated ``rollout`` block."""

    control: str
    candidate: str
    steps: tuple[float, ...]
    min_minutes: float = 10.0
    min_requests: int = 100
    max_hours: float = 72.0
    guardrails: Guardrails = Guardrails()
    decision: DecisionSpec | None = None
    promote: Literal["only", "keep_control"] = "only"
    state: RolloutState = RolloutState("pending")

    @property
    def active(self) -> bool:
        """Pending, running or paused: the controller may still act on it."""
        return self.state.status in ("pending", *ACTIVE)

    def share(self, step: int) -> float:
        return self.steps[min(step, len(self.steps) - 1)]


def parse_rollout(value: Any, path: str, variants: tuple[Any, ...]) -> Rollout:
    """Validate an endpoint's ``rollout`` block; ``variants`` are the endpoint's (parsed)."""
    block = obj(value, path, required={"control", "candidate", "steps"},
                optional={"min_minutes", "min_requests", "max_hours", "guardrails", "decision",
                          "promote", "state"})
    control = name_field(block["control"], f"{path}.control")
    candidate = name_field(block["candidate"], f"{path}.candidate")
    if control == candidate:
        fail(f"{path}.candidate", "must name another variant than control")
    state = _state(block["state"], f"{path}.state") if "state" in block else RolloutState("pending")
    names = [v.name for v in variants]
    if state.status in ("pending", *ACTIVE):  # a finished rollout may have lost its control
        for role, name in (("control", control), ("candidate", candidate)):
            if name not in names:
                fail(f"{path}.{role}", f"{name!r} is not a variant of this endpoint "
                                       f"(variants: {', '.join(names)})")
    steps = block["steps"]
    if not isinstance(steps, list) or not 1 <= len(steps) <= MAX_STEPS:
        fail(f"{path}.steps", f"must be a list of 1 to {MAX_STEPS} shares (percent)")
    for i, share in enumerate(steps):
        if not is_number(share) or not 0 < share < 100:
            fail(f"{path}.steps[{i}]", "must be a share in percent above 0 and below 100 "
                                       "(promotion gives the candidate 100)")
        if i and share <= steps[i - 1]:
            fail(f"{path}.steps[{i}]", "must be larger than the step before it")
    if state.step >= len(steps):
        fail(f"{path}.state.step", f"must be below the number of steps ({len(steps)})")
    promote = block.get("promote", "only")
    if promote not in ("only", "keep_control"):
        fail(f"{path}.promote", "must be 'only' (the candidate becomes the only variant) or "
                                "'keep_control' (the control stays, at weight 0)")
    decision = block.get("decision")
    return Rollout(
        control=control, candidate=candidate, steps=tuple(steps),
        min_minutes=_number(block, "min_minutes", path, 10.0, low=0, high=7 * 24 * 60),
        min_requests=int(_number(block, "min_requests", path, 100, low=0, high=10**9, integer=True)),
        max_hours=_number(block, "max_hours", path, 72.0, low=0, high=24 * 365, above=True),
        guardrails=_guardrails(block.get("guardrails", {}), f"{path}.guardrails"),
        decision=None if decision is None else _decision(decision, f"{path}.decision"),
        promote=promote, state=state)


def _guardrails(value: Any, path: str) -> Guardrails:
    block = obj(value, path, required=set(),
                optional={"max_error_rate_increase", "max_p99_ratio", "min_p99_increase_ms",
                          "latency_warmup_seconds", "max_prediction_shift", "min_requests"})
    shift = block.get("max_prediction_shift")
    if shift is not None and (not is_number(shift) or not 0 < shift <= 1):
        fail(f"{path}.max_prediction_shift", "must be a distance above 0 and at most 1 "
                                             "(Kolmogorov-Smirnov), or null")
    return Guardrails(
        max_error_rate_increase=_number(block, "max_error_rate_increase", path, 0.01, low=0, high=1),
        max_p99_ratio=_number(block, "max_p99_ratio", path, 1.5, low=1, high=1000),
        min_p99_increase_ms=_number(block, "min_p99_increase_ms", path, 1.0, low=0, high=60_000),
        latency_warmup_seconds=_number(block, "latency_warmup_seconds", path, 30.0, low=0,
                                       high=86_400),
        max_prediction_shift=shift,
        min_requests=int(_number(block, "min_requests", path, 30, low=1, high=10**9, integer=True)))


def _decision(value: Any, path: str) -> DecisionSpec:
    block = obj(value, path, required={"metric", "min_effect"}, optional={"alpha"})
    metric = block["metric"]
    if metric not in DECISION_METRICS:
        fail(f"{path}.metric", f"must be a per-row loss: one of {', '.join(DECISION_METRICS)} "
                               f"(AUC is not a per-row loss: decide on log_loss or brier)")
    # The confidence sequence is tuned to it (its mixing scale): it must be above 0.
    return DecisionSpec(metric=metric,
                        min_effect=_number(block, "min_effect", path, 0.0, low=0, high=1e9,
                                           above=True),
                        alpha=_number(block, "alpha", path, 0.05, low=0, high=0.5, above=True))


def _state(value: Any, path: str) -> RolloutState:
    block = obj(value, path, required={"status"},
                optional={"step", "started", "step_started", "decided", "weights", "reason"})
    status = block["status"]
    if status not in STATUSES:
        fail(f"{path}.status", f"must be one of {', '.join(STATUSES)}")
    step = block.get("step", 0)
    if type(step) is not int or step < 0:
        fail(f"{path}.step", "must be a whole number of at least 0")
    times: dict[str, float | None] = {}
    for name in ("started", "step_started", "decided"):
        raw = block.get(name)
        try:
            times[name] = None if raw is None else epoch_seconds(raw)
        except ValueError:
            fail(f"{path}.{name}", "must be an ISO 8601 time")
    weights = obj(block.get("weights", {}), f"{path}.weights")
    for name, weight in weights.items():
        if not is_number(weight) or weight < 0:
            fail(f"{path}.weights.{name[:64]}", "must be a number of at least 0")
    reason = block.get("reason", "")
    if not isinstance(reason, str) or len(reason) > 2000:
        fail(f"{path}.reason", "must be a string of at most 2,000 characters")
    return RolloutState(status=status, step=step, started=times["started"],
                        step_started=times["step_started"], decided=times["decided"],
                        weights=dict(weights), reason=reason)


def _number(block: Mapping[str, Any], name: str, path: str, default: float, *, low: float,
            high: float, integer: bool = False, above: bool = False) -> float:
    value = block.get(name, default)
    ok = (type(value) is int) if integer else is_number(value)
    if not ok or not (value > low if above else value >= low) or value > high:
        kind = "a whole number" if integer else "a number"
        bound = f"above {low:g}" if above else f"from {low:g}"
        fail(f"{path}.{name}", f"must be {kind} {bound} to {high:g}")
    return value
