"""The A/B report: reads the logs, joins, computes (``stats``) and writes (``render``).

:func:`analyse` turns a :class:`~shared.ablog.dataset.Dataset` into a plain dict (also written
as JSON with ``--json``); :func:`make_report` does everything from storage to file.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from scorefn.ab import stats
from shared.ablog.dataset import (
    Dataset,
    Progress,
    build_dataset,
    iter_days,
    outcome_from_log,
    read_log,
    read_outcomes_csv,
    time_prefixes,
)
from shared.monitoring.records import DriftSummary
from shared.rollout.audit import AuditLog

DAILY_MIN_OUTCOMES = 20


@dataclass
class ReportOptions:
    endpoint: str
    out: Path
    since: datetime | None = None
    until: datetime | None = None
    outcomes_until: datetime | None = None
    outcomes_csv: Path | None = None
    use_outcome_log: bool = True
    control: str | None = None
    threshold: float = 0.5
    objective: str | None = None
    metric: str | None = None
    alpha: float = stats.ALPHA
    json_out: Path | None = None
    title: str | None = None
    notes: list[str] = field(default_factory=list)


def resolve_range(options: ReportOptions, now: datetime | None = None) -> tuple[datetime, datetime]:
    now = now or datetime.now(UTC)
    until = options.until or now
    since = options.since or (until - timedelta(days=7))
    if since >= until:
        raise ValueError("--since must be before --until")
    return since, until


def make_report(predictions_container: Any, outcomes_container: Any, options: ReportOptions, *,
                progress: Progress | None = None, monitoring: Any | None = None) -> dict[str, Any]:
    """Read, join, analyse and write the report to ``options.out``; returns the analysis.
    ``monitoring``: the monitoring container, whose latest drift summary of the endpoint
    the report's Drift section sums up (no such section without it)."""
    progress = progress or Progress(sys.stderr)
    since, until = resolve_range(options)
    started = time.monotonic()
    outcomes: list[dict[str, Any]] = []
    damaged = 0
    if options.use_outcome_log:
        # Outcomes arrive after their predictions: read from `since` up to now (or the bound).
        o_until = options.outcomes_until or max(until, datetime.now(UTC) + timedelta(hours=1))
        odocs, ostats = read_log(outcomes_container, time_prefixes(options.endpoint, since, o_until),
                                 what="outcomes", progress=progress)
        bound = options.outcomes_until.timestamp() if options.outcomes_until else math.inf
        for doc in odocs:
            o = outcome_from_log(doc) if doc.get("endpoint", options.endpoint) == options.endpoint else None
            if o is None:
                damaged += 1
            elif o["received"] < bound:  # the hourly folders are coarser than the bound
                outcomes.append(o)
    if options.outcomes_csv is not None:
        outcomes.extend(read_outcomes_csv(options.outcomes_csv))
    # Predictions up to the latest outcome by key too: such an outcome belongs to the latest
    # prediction at or before it, which may be after `until` (then it is left out, not given
    # to an older one).
    key_times = [o["time"] for o in outcomes if "key" in o and math.isfinite(o["time"])]
    read_until = until
    if key_times and max(key_times) >= until.timestamp():
        latest = datetime.fromtimestamp(max(key_times), UTC) + timedelta(seconds=1)
        read_until = min(max(until, latest), datetime.now(UTC) + timedelta(hours=1))
    docs, pstats = read_log(predictions_container, time_prefixes(options.endpoint, since, read_until),
                            what="predictions", progress=progress)
    dataset = build_dataset(options.endpoint, docs, outcomes, since=since, until=until,
                            objective=options.objective)
    dataset.join.damaged = damaged
    analysis = analyse(dataset, control=options.control, threshold=options.threshold,
                       metric=options.metric, alpha=options.alpha)
    analysis["rollout"] = rollout_history(AuditLog(predictions_container).read(options.endpoint),
                                          since.timestamp(), until.timestamp())
    analysis.update(since=since.isoformat(), until=until.isoformat(),
                    read={"prediction_blobs": pstats.blobs, "prediction_records": pstats.records,
                          "damaged_lines": pstats.bad_lines, "outcomes": len(outcomes),
                          "seconds": round(time.monotonic() - started, 2)},
                    notes=analysis["notes"] + list(options.notes))
    if monitoring is not None:
        analysis["drift"] = drift_overview(monitoring, options.endpoint, options.out)
    from scorefn.ab.render import write_report

    write_report(options.out, analysis, dataset, title=options.title)
    if options.json_out is not None:
        import orjson

        options.json_out.write_bytes(orjson.dumps(analysis, option=orjson.OPT_INDENT_2
                                                  | orjson.OPT_SERIALIZE_NUMPY))
    return analysis


def rollout_history(audit: list[dict[str, Any]], since: float, until: float) -> dict[str, Any] | None:
    """The endpoint's rollouts in [since, until) from its audit log: each decision that changed
    something (time, action, share, reason) and every evaluation's share and always-valid
    interval (the timeline the report plots); ``None`` when there was none."""
    from shared.ablog.times import epoch_seconds

    timeline, decisions = [], []
    for line in audit:
        try:
            t = epoch_seconds(line["time"])
        except (KeyError, ValueError):
            continue
        if not since <= t < until:
            continue
        interval = line.get("interval") or [None, None]
        timeline.append({"time": line["time"], "share": line.get("share"),
                         "low": interval[0], "high": interval[1], "action": line.get("action")})
        if line.get("action") != "hold":
            decisions.append({k: line.get(k) for k in ("time", "action", "share", "reason",
                                                       "candidate", "control", "metric")})
    if not timeline:
        return None
    return {"decisions": decisions, "timeline": timeline}


def drift_overview(monitoring: Any, endpoint: str, out: Path) -> dict[str, Any]:
    """What the A/B report says about drift, from the endpoint's latest drift summary: per
    variant its most drifted feature, whether the variants' predictions differ, and the drift
    report's file (beside ``out``, in its format) with the command that writes it.
    ``evaluated`` is false when there is no summary (or it could not be read: ``error``)."""
    from azure.core.exceptions import AzureError

    from scorefn.monitoring.render import monitor_command, monitor_report_name
    from scorefn.reporting import is_markdown
    from shared.monitoring.blobs import latest_summary

    markdown = is_markdown(Path(out))
    where = {"report": monitor_report_name(endpoint, markdown),
             "command": monitor_command(endpoint, Path(out).parent, markdown)}
    try:
        summary = latest_summary(monitoring, endpoint)
    except (AzureError, ValueError, KeyError, TypeError) as exc:
        first_line = (str(exc).splitlines() or [""])[0][:200]
        return {**where, "evaluated": False, "error": f"{type(exc).__name__}: {first_line}"}
    if summary is None:
        return {**where, "evaluated": False}
    return {**where, **summarise_drift(summary)}


def summarise_drift(summary: DriftSummary) -> dict[str, Any]:
    """A drift summary's few figures for the A/B report (plain data, NaN as ``None``)."""
    def finite(value: float | None) -> float | None:  # NaN is stored as null
        return value if value is not None and math.isfinite(value) else None

    variants = [{"variant": c.variant, "model": c.model, "version": c.version,
                 "against": c.against, "worst": c.worst.name if c.worst else None,
                 "psi": finite(c.worst.psi) if c.worst else None,
                 "drifted_features": sum(f.drifted for f in c.features)}
                for c in summary.comparisons if c.against != "variant"]
    between = [{"variant": c.variant, "baseline": c.baseline_name, "psi": finite(c.predictions.psi),
                "differ": c.predictions.drifted}
               for c in summary.comparisons if c.against == "variant" and c.predictions is not None]
    return {"evaluated": True, "evaluated_at": summary.evaluated_at,
            "window": [summary.window_start, summary.window_end], "variants": variants,
            "between_variants": between}


def analyse(dataset: Dataset, *, control: str | None = None, threshold: float = 0.5,
            metric: str | None = None, alpha: float = stats.ALPHA) -> dict[str, Any]:
    """Everything the report says, as plain data."""
    objective = dataset.objective
    metrics = stats.OBJECTIVE_METRICS[objective]
    primary = metric or stats.PRIMARY[objective]
    if primary not in metrics:
        raise ValueError(f"metric {primary!r} does not fit a {objective} model "
                         f"(choose from {', '.join(metrics)})")
    names = list(dataset.variants)
    notes: list[str] = []
    if control is not None and control not in dataset.variants:
        raise ValueError(f"--control {control!r} is not a variant in the log "
                         f"(variants: {', '.join(names) or 'none'})")
    control = control or dataset.first_variant or (names[0] if names else None)
    candidates = [n for n in names if n != control]
    tested_pairs = [pair for pair in dataset.pairs if np.isfinite(pair.y).any()]
    # Every verdict (candidates against the control, shadows against their answers) is one
    # test: Bonferroni keeps the chance of any false "better/worse" at alpha.
    tests = len(candidates) + len(tested_pairs)
    level = alpha / max(1, tests)
    if tests > 1:
        notes.append(f"{tests} verdicts are given ({len(candidates)} candidate(s) against "
                     f"{control}, {len(tested_pairs)} shadow(s) against their answers): each "
                     f"test is at level {stats.percent(level)} (Bonferroni), so that all "
                     f"together keep {stats.percent(alpha)}.")
    if any(v.y.size and v.units < v.y.size for v in dataset.variants.values()):
        notes.append("Outcomes of one user (sticky key) or of one multi-row request are not "
                     "independent: errors and tests count users (cluster-robust), so many "
                     "outcomes from few users decide less than as many from many users.")

    variants = []
    for name, v in dataset.variants.items():
        variants.append({
            "name": name, "shadow": False, "control": name == control,
            "requests": v.requests, "rows": v.rows, "outcomes": int(v.y.size),
            "positives": int((v.y == 1).sum()) if objective == "binary" else None,
            "models": v.models(),
            "units": v.units,
            "metrics": {m: stats.estimate(m, v.y, v.p, threshold, v.g).to_dict() for m in metrics},
            "latency_ms": stats.latency_summary(v.latencies()),
        })

    comparisons = []
    if control is not None:
        c = dataset.variants[control]
        for name in candidates:
            v = dataset.variants[name]
            per_metric = {m: stats.compare_independent(m, c.y, c.p, v.y, v.p, threshold,
                                                       groups_control=c.g, groups_candidate=v.g)
                          for m in metrics}
            main = per_metric[primary]
            short_c = stats.enough_outcomes(primary, c.y, units=c.units)
            short_v = stats.enough_outcomes(primary, v.y, units=v.units)
            too_few = (f"{control} has {short_c}" if short_c
                       else f"{name} has {short_v}" if short_v else None)
            decision = stats.verdict(main, control=control, candidate=name, alpha=level,
                                     too_few=too_few)
            comparisons.append({
                "candidate": name, "control": control, "metric": primary,
                "verdict": decision.kind, "text": decision.text, "more_needed": decision.more_needed,
                "alpha": level, **{k: v2 for k, v2 in main.to_dict().items() if k != "metric"},
                **_interval_at(main, level),
                "all_metrics": {m: cmp.to_dict() for m, cmp in per_metric.items()},
            })

    shadows = []
    for pair in dataset.pairs:
        labelled = np.isfinite(pair.y)
        y, g = pair.y[labelled], pair.g[labelled]
        entry: dict[str, Any] = {
            "name": pair.shadow, "answer_variant": pair.answer_variant,
            "agreement": stats.agreement(pair.answer, pair.shadow_p, objective=objective,
                                         threshold=threshold),
            "outcomes": int(y.size),
            "latency_ms": stats.latency_summary(dataset.shadows[pair.shadow].latencies())
            if pair.shadow in dataset.shadows else None,
        }
        if y.size:
            s, a = pair.shadow_p[labelled], pair.answer[labelled]
            entry["metrics"] = {m: stats.estimate(m, y, s, threshold, g).to_dict() for m in metrics}
            entry["answer_metrics"] = {m: stats.estimate(m, y, a, threshold, g).to_dict()
                                       for m in metrics}
            cmp = stats.compare_paired(primary, y, a, s, threshold, groups=g)
            too_few = stats.enough_outcomes(primary, y, units=int(np.unique(g).size))
            decision = stats.verdict(cmp, control=f"{pair.answer_variant} (same requests)",
                                     candidate=f"shadow {pair.shadow}", alpha=level,
                                     too_few=too_few)
            entry["comparison"] = {**cmp.to_dict(), **_interval_at(cmp, level), "alpha": level,
                                   "verdict": decision.kind, "text": decision.text,
                                   "more_needed": decision.more_needed}
        shadows.append(entry)

    daily = []
    for name, v in dataset.variants.items():
        for day, mask in iter_days(v.t):
            n = int(mask.sum())
            if n < DAILY_MIN_OUTCOMES:
                continue
            est = stats.estimate(primary, v.y[mask], v.p[mask], threshold, v.g[mask])
            if math.isfinite(est.value):
                daily.append({"day": day, "variant": name, **est.to_dict()})

    if objective == "binary" and dataset.join.bad_label:
        notes.append(f"{dataset.join.bad_label} outcomes were not 0/1 labels and were left out "
                     f"(binary model).")
    if len(set(dataset.model_objectives)) > 1:
        notes.append(f"the log holds models with different objectives "
                     f"({', '.join(dataset.model_objectives)}); metrics are those of {objective}.")
    notes.append("Repeatedly looking at a running test and stopping at the first significant "
                 "result inflates false positives: decide the number of outcomes (see 'more "
                 "needed') before stopping.")
    return {
        "endpoint": dataset.endpoint, "objective": objective, "primary_metric": primary,
        "metrics": list(metrics), "threshold": threshold, "control": control,
        "alpha": alpha, "variants": variants, "comparisons": comparisons, "shadows": shadows,
        "daily": daily, "join": asdict(dataset.join), "excluded_records": dataset.excluded_records,
        "notes": notes,
    }


def _interval_at(comparison: stats.Comparison, level: float) -> dict[str, Any]:
    """The comparison's interval at the level its verdict uses (``low``/``high``), and that
    interval's confidence."""
    low, high = stats.interval(comparison, level)
    finite = math.isfinite(low) and math.isfinite(high)
    return {"low": low if finite else None, "high": high if finite else None,
            "confidence": 1 - level}
