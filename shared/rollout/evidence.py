"""What a rollout is judged on, from the data the app already writes: the prediction log (with
failed requests and latencies) and the outcome log.

- the **step**: each variant's requests, failures, p99 latency and predictions since the current
  step started (the guardrails compare the candidate with the control over it);
- the **outcomes**: every outcome joined to a prediction since the rollout started (the join of
  :mod:`shared.ablog.dataset`, which the A/B report uses too), as per-row losses of the decision
  metric, compared by the confidence sequence of :mod:`shared.rollout.sequential`, clustered by
  sticky key (else request).

Requests whose caller pinned a variant were not randomised and are left out, as the report
leaves them out; shadows are not variants.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from shared.ablog.dataset import Progress, build_dataset, outcome_from_log, read_log, time_prefixes
from shared.ablog.record import DamagedRecord, PredictionRecord
from shared.rollout.config import Rollout
from shared.rollout.losses import per_row_loss
from shared.rollout.sequential import SequentialResult, compare_arms, summarize_arm

# An outcome may arrive well after its prediction: read the outcome log this far past "now".
_OUTCOME_SLACK_SECONDS = 3600.0


@dataclass(frozen=True)
class VariantStep:
    """One variant over the current step: routed requests, failed ones, the p99 latency of the
    answered ones, their predictions (one column per output)."""

    requests: int
    failures: int
    p99_ms: float
    predictions: np.ndarray = field(repr=False)
    latencies_ms: np.ndarray = field(default_factory=lambda: np.empty(0), repr=False)

    @property
    def error_rate(self) -> float:
        return self.failures / self.requests if self.requests else float("nan")


@dataclass(frozen=True)
class Evidence:
    """Everything one evaluation of a rollout reads, at time ``now``."""

    now: float
    control: VariantStep
    candidate: VariantStep
    outcomes: SequentialResult | None  # None: no decision metric, or no objective known yet
    joined: dict[str, int]             # outcomes joined per variant


def collect(rollout: Rollout, endpoint: str, *, predictions: Any, outcomes: Any,
            now: float) -> Evidence:
    """The evidence for ``endpoint``'s rollout from the prediction log container and the outcome
    log container (``azure.storage.blob.ContainerClient``; a missing container reads as empty)."""
    state = rollout.state
    started = state.started if state.started is not None else now
    since, until = _utc(started), _utc(now)
    quiet = Progress(stream=None)
    docs, _ = read_log(predictions, time_prefixes(endpoint, since, until), what="predictions",
                       progress=quiet)
    step_since = state.step_started if state.step_started is not None else started
    step = step_figures(docs, endpoint, rollout, since=step_since, until=now)
    result, joined = None, {rollout.control: 0, rollout.candidate: 0}
    if rollout.decision is not None:
        logged, _ = read_log(outcomes, time_prefixes(endpoint, since, _utc(now + _OUTCOME_SLACK_SECONDS)),
                             what="outcomes", progress=quiet)
        found = [o for o in (outcome_from_log(doc) for doc in logged) if o is not None]
        result, joined = outcome_comparison(docs, found, endpoint, rollout, since=started, until=now)
    return Evidence(now, step[rollout.control], step[rollout.candidate], result, joined)


def step_figures(docs: list[dict[str, Any]], endpoint: str, rollout: Rollout, *, since: float,
                 until: float) -> dict[str, VariantStep]:
    """Each of the rollout's two variants over [since, until) from prediction log lines; the
    latencies from ``guardrails.latency_warmup_seconds`` after ``since`` on (a new share runs
    cold at first: new users, instances that saw little of the candidate)."""
    warm = since + rollout.guardrails.latency_warmup_seconds
    names = (rollout.control, rollout.candidate)
    requests = dict.fromkeys(names, 0)
    failures = dict.fromkeys(names, 0)
    latencies: dict[str, list[float]] = {n: [] for n in names}
    predictions: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for doc in docs:
        try:
            record = PredictionRecord.from_json(doc, endpoint=endpoint)
        except DamagedRecord:
            continue
        if (record.endpoint != endpoint or record.shadow or record.pinned
                or record.variant not in requests or not since <= record.time < until):
            continue
        requests[record.variant] += 1
        if record.error is not None:
            failures[record.variant] += 1
            continue
        if record.time >= warm:
            latencies[record.variant].append(record.latency_ms)
        if record.predictions is not None and record.predictions.size:
            p = record.predictions
            predictions[record.variant].append(p.reshape(p.shape[0], -1))
    out = {}
    for name in names:
        lat = np.asarray(latencies[name], dtype=np.float64)
        lat = lat[np.isfinite(lat)]
        p99 = float(np.percentile(lat, 99)) if lat.size else float("nan")
        preds = predictions[name]
        widths = {p.shape[1] for p in preds}
        stacked = np.concatenate(preds) if preds and len(widths) == 1 else np.empty((0, 1))
        out[name] = VariantStep(requests[name], failures[name], p99, stacked, lat)
    return out


def outcome_comparison(docs: list[dict[str, Any]], outcomes: list[dict[str, Any]], endpoint: str,
                       rollout: Rollout, *, since: float, until: float
                       ) -> tuple[SequentialResult | None, dict[str, int]]:
    """The candidate against the control on the decision metric's per-row loss, over the
    outcomes joined to predictions made in [since, until); ``None`` when the data do not have
    the objective the metric needs yet."""
    assert rollout.decision is not None
    dataset = build_dataset(endpoint, docs, outcomes, since=_utc(since), until=_utc(until))
    names = (rollout.control, rollout.candidate)
    joined = {n: int(dataset.variants[n].y.size) if n in dataset.variants else 0 for n in names}
    summaries = []
    for name in names:
        data = dataset.variants.get(name)
        if data is None or data.y.size == 0:
            loss, groups = np.empty(0), None
        else:
            try:
                loss = per_row_loss(rollout.decision.metric, data.y, data.p)
            except ValueError:  # the metric does not fit these outcomes (checked by the config)
                return None, joined
            groups = data.g
        summaries.append(summarize_arm(loss, groups))
    spec = rollout.decision
    return compare_arms(summaries[0], summaries[1], tau=spec.min_effect, alpha=spec.alpha), joined


def prediction_shift(control: np.ndarray, candidate: np.ndarray) -> float:
    """The Kolmogorov-Smirnov distance between two variants' predictions (the largest gap
    between their distribution functions, 0 to 1; the largest over the outputs of a multiclass
    model); NaN when either has none or their widths differ."""
    if control.size == 0 or candidate.size == 0 or control.shape[1] != candidate.shape[1]:
        return float("nan")
    worst = 0.0
    for j in range(control.shape[1]):
        a, b = np.sort(control[:, j]), np.sort(candidate[:, j])
        grid = np.concatenate([a, b])
        gap = np.abs(np.searchsorted(a, grid, side="right") / a.size
                     - np.searchsorted(b, grid, side="right") / b.size)
        worst = max(worst, float(gap.max()))
    return worst


def _utc(t: float) -> datetime:
    return datetime.fromtimestamp(t, tz=UTC)
