"""A drift evaluation: the instances' and jobs' served counts of an endpoint, merged over a
window, compared with each model version's reference profile (or its training ranges) and
between the endpoint's variants; recorded in telemetry and written as a summary blob.

The timer function (``score_function/monitor_timer.py``) runs :meth:`DriftMonitor.run` for
every endpoint with served counts in the window; ``python -m scorefn monitor`` runs
:meth:`DriftMonitor.evaluate` for one, on demand.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from shared.monitoring.binning import Binning, PredictionBins
from shared.monitoring.blobs import (
    Reference,
    ServedBlob,
    hours_between,
    read_served,
    served_index,
    write_summary,
)
from shared.monitoring.drift import MIN_ROWS, PSI_THRESHOLD, compare, effective_rows
from shared.monitoring.profile import Profile
from shared.monitoring.records import Against, Comparison, DriftSummary, WindowPoint
from shared.monitoring.references import reference_for

log = logging.getLogger("scorefn.monitor")

READ_WORKERS = 8  # served blobs read at once by an evaluation


@dataclass(frozen=True)
class Thresholds:
    """When a feature counts as drifted (settings ``MONITOR_PSI_THRESHOLD``,
    ``MONITOR_MIN_ROWS``) and the window evaluated (``MONITOR_WINDOW_HOURS``)."""

    psi: float = PSI_THRESHOLD
    min_rows: int = MIN_ROWS
    window_hours: int = 24


@dataclass
class _Group:
    """One variant's model version counted under one binning, over the window."""

    variant: str
    model: str
    version: str
    model_path: str
    model_sha256: str
    binning: Binning
    profile: Profile
    hours: dict[str, Profile] = field(default_factory=dict)


class DriftMonitor:
    """Evaluates drift from ``monitoring`` (served counts, summaries) and ``models`` (the
    reference profiles beside the models)."""

    def __init__(self, monitoring: Any, models: Any, thresholds: Thresholds,
                 telemetry: Any = None) -> None:
        self.monitoring = monitoring
        self.models = models
        self.thresholds = thresholds
        self.telemetry = telemetry

    def endpoints(self, now: datetime) -> list[str]:
        """The endpoints with served counts in the window ending at ``now``."""
        return sorted(served_index(self.monitoring, self._hours(now)))

    def run(self, now: datetime | None = None) -> list[DriftSummary]:
        """Evaluate every endpoint with served counts: record telemetry, write summaries. An
        endpoint that fails is logged and the others still run."""
        now = now or datetime.now(UTC)
        summaries = []
        for endpoint in self.endpoints(now):
            try:
                summary = self.evaluate(endpoint, now)
                self.record(summary)
                write_summary(self.monitoring, summary, now)
                summaries.append(summary)
            except Exception:
                log.exception("drift evaluation of %s failed", endpoint)
        return summaries

    def record(self, summary: DriftSummary) -> None:
        """Telemetry of each comparison (what an alert rule watches)."""
        if self.telemetry is None:
            return
        worst: dict[tuple[str, str, str], tuple[float, float | None, int]] = {}
        for c in summary.comparisons:
            # Only PSI values with enough rows to mean something (MONITOR_MIN_ROWS): a canary's
            # first hundred rows cross 0.2 by chance.
            psi = max((f.psi for f in c.features if _enough(f.baseline_bins, f.served_bins,
                                                             summary.min_rows)), default=0.0)
            p = c.predictions
            pred = (p.psi if p is not None and _enough(p.baseline_bins, p.served_bins,
                                                        summary.min_rows) else None)
            drifted = sum(f.drifted for f in c.features)
            key = (c.endpoint, c.variant, c.against)
            if key in worst:  # two model versions of one variant in the window: the worse
                old = worst[key]
                pred = max(pred, old[1]) if pred is not None and old[1] is not None else (
                    pred if pred is not None else old[1])
                psi, drifted = max(psi, old[0]), max(drifted, old[2])
            worst[key] = (psi, pred, drifted)
        for (endpoint, variant, against), (psi, pred, drifted) in worst.items():
            self.telemetry.record_drift(
                {"endpoint": endpoint, "variant": variant, "against": against},
                max_psi=psi, prediction_psi=pred, drifted_features=drifted)

    def evaluate(self, endpoint: str, now: datetime | None = None) -> DriftSummary:
        """``endpoint``'s served counts over the window ending at ``now``, compared."""
        now = now or datetime.now(UTC)
        hours = self._hours(now)
        groups, notes = self._groups(endpoint, hours)
        comparisons = [self._against_baseline(endpoint, g) for g in groups]
        comparisons += self._between_variants(endpoint, groups)
        if notes:
            comparisons = [_with_note(c, "; ".join(notes)) for c in comparisons]
        labels, timeline = _timeline(groups)
        start = datetime.strptime(hours[0], "%Y-%m-%dT%H").replace(tzinfo=UTC)
        return DriftSummary(endpoint, now.isoformat(timespec="seconds"),
                            start.isoformat(timespec="seconds"),
                            now.isoformat(timespec="seconds"), self.thresholds.psi,
                            self.thresholds.min_rows, comparisons, timeline, labels)

    def _hours(self, now: datetime) -> list[str]:
        return hours_between(now - timedelta(hours=self.thresholds.window_hours - 1), now)

    def _groups(self, endpoint: str, hours: list[str]) -> tuple[list[_Group], list[str]]:
        """Served counts merged per (variant, model version, binning), largest first."""
        groups: dict[tuple[str, str, str, str], _Group] = {}
        damaged = 0
        names = served_index(self.monitoring, hours, endpoint).get(endpoint, [])
        # One GET per blob (an instance's hour, a job's chunk): read a few at a time, merged in
        # name order (the sums are exact whatever the order).
        with ThreadPoolExecutor(max_workers=READ_WORKERS) as pool:
            read = list(pool.map(self._read, names))
        for name, blob in zip(names, read):
            if isinstance(blob, Exception):
                log.warning("drift evaluation: %s left out (%s)", name, type(blob).__name__)
                damaged += 1
                continue
            if blob is None:
                continue
            for e in blob.entries:
                key = (e.variant, e.model, e.version, e.binning.id)
                group = groups.get(key)
                if group is None:
                    group = groups[key] = _Group(e.variant, e.model, e.version, e.model_path,
                                                 e.model_sha256, e.binning,
                                                 Profile.empty(e.binning))
                group.profile.add(e.profile)
                hour = group.hours.setdefault(blob.hour, Profile.empty(e.binning))
                hour.add(e.profile)
        notes = [f"{damaged} served blob(s) could not be read and were left out"] if damaged else []
        return sorted(groups.values(), key=lambda g: (-g.profile.rows, g.variant)), notes

    def _read(self, name: str) -> ServedBlob | Exception | None:
        """A served blob, ``None`` when it is gone, or the reason it could not be read."""
        try:
            return read_served(self.monitoring, name)
        except Exception as exc:  # damaged, or storage failed for this one blob
            return exc

    def _against_baseline(self, endpoint: str, g: _Group) -> Comparison:
        reference, why = reference_for(self.models, g.model_path, g.model_sha256,
                                       len(g.binning.features))
        if reference is not None and reference.binning.id == g.binning.id:
            return self._compare(endpoint, g, reference.profile, "reference",
                                 _reference_name(reference))
        if reference is not None:
            why = "these rows were counted before its reference profile was uploaded or changed"
        comparison = self._compare(endpoint, g, Profile.empty(g.binning), "model",
                                   "training ranges")
        return _with_note(comparison, f"no reference distribution: {why}")

    def _compare(self, endpoint: str, g: _Group, baseline: Profile, against: Against,
                 baseline_name: str) -> Comparison:
        return compare(g.binning, baseline, g.profile, against=against,
                       baseline_name=baseline_name, endpoint=endpoint, variant=g.variant,
                       model=g.model, version=g.version, psi_threshold=self.thresholds.psi,
                       min_rows=self.thresholds.min_rows)

    def _between_variants(self, endpoint: str, groups: list[_Group]) -> list[Comparison]:
        """Each other named variant against the one that served the most rows, where both were
        counted under the same bins (references made from the same rows); out-of-range values
        are each variant's own model's."""
        named = [g for g in groups if g.variant != "default"]
        if len({g.variant for g in named}) < 2:
            return []
        # "default" is an endpoint's traffic before it had a router config: never a baseline
        # for its variants.
        groups = named
        base = groups[0]
        out = []
        for g in groups[1:]:
            if g.variant == base.variant or g.binning.bins_id != base.binning.bins_id:
                continue
            # The same bins, the other model's training ranges: its counts read under this
            # variant's binning (its out-of-range counts are against its own model's ranges).
            baseline = replace(base.profile, binning_id=g.binning.id)
            out.append(self._compare(endpoint, g, baseline, "variant", base.variant))
        return out


def _enough(baseline: list[int], served: list[int], min_rows: int) -> bool:
    """Whether a measure rests on at least ``min_rows`` effective rows (as the drift rules
    count them: a served sample against a baseline sample)."""
    return effective_rows(np.asarray(baseline), np.asarray(served)) >= min_rows


def _reference_name(reference: Reference) -> str:
    return f"reference {reference.source}" if reference.source else "reference"


def _with_note(c: Comparison, note: str) -> Comparison:
    return replace(c, note="; ".join(n for n in (c.note, note) if n))


def _timeline(groups: list[_Group]) -> tuple[list[str], list[WindowPoint]]:
    """Each variant's predictions per hour, under the prediction bins of the largest group
    (groups with other prediction bins are left out of the timeline)."""
    if not groups:
        return [], []
    bins: PredictionBins = groups[0].binning.predictions
    points: dict[tuple[str, str], list[int]] = {}
    rows: dict[tuple[str, str], int] = {}
    for g in groups:
        if g.binning.predictions != bins:
            continue
        for hour, p in g.hours.items():
            key = (hour, g.variant)
            current = points.get(key)
            points[key] = (p.predictions.tolist() if current is None
                           else [a + b for a, b in zip(current, p.predictions.tolist())])
            rows[key] = rows.get(key, 0) + p.predicted_rows
    timeline = [WindowPoint(hour, variant, rows[(hour, variant)], counts)
                for (hour, variant), counts in sorted(points.items())]
    return bins.labels(), timeline
