"""Writing the A/B report: self-contained HTML (plots as base64 PNG) or Markdown (plots as
PNG files in ``<name>-plots/`` next to it). Plots need matplotlib
(``pip install -r requirements-report.txt``); without it the report is written without them.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from scorefn.ab.stats import METRICS
from scorefn.reporting import (
    CSS,
    PLOTS_NEED_MATPLOTLIB,
    colors,
    is_markdown,
    png,
    pyplot,
    relative_link,
    write_plot_files,
)
from shared.ablog.dataset import Dataset

METHOD = (
    "AUC is the rank (Mann-Whitney) statistic with DeLong's variance; log loss, Brier score, "
    "MAE and accuracy are means with normal (CLT) intervals; RMSE uses the delta method. "
    "Variants of an A/B split are independent samples: their difference is tested with a "
    "two-sided z test on the sum of variances. Shadows score the same requests as the "
    "answer, so they are compared paired (paired DeLong, or per-row differences). 'More "
    "outcomes needed' is the total that would give 80% power at the test's level if the "
    "true difference were the one seen so far (standard errors shrink as 1/sqrt(n)).")


def write_report(path: Path, analysis: dict[str, Any], dataset: Dataset, *, title: str | None = None) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    plots, plot_note = make_plots(analysis, dataset)
    if is_markdown(path):
        links = {name: relative_link(file) for name, file in write_plot_files(path, plots).items()}
        path.write_text(markdown(analysis, links, plot_note, title), encoding="utf-8")
    else:
        path.write_text(html_page(analysis, plots, plot_note, title), encoding="utf-8")


# -- formatting helpers ---------------------------------------------------------------------


def _num(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.{digits}f}"


def _est(e: dict[str, Any]) -> str:
    if e.get("value") is None:
        return "n/a"
    return f"{_num(e['value'])} [{_num(e['low'])}, {_num(e['high'])}]"


def _delta(c: dict[str, Any]) -> str:
    if c.get("delta") is None:
        return "n/a"
    p = c.get("p_value")
    ptext = "n/a" if p is None else ("< 0.0001" if p < 1e-4 else f"{p:.4f}")
    return f"{c['delta']:+.4f} [{c['low']:+.4f}, {c['high']:+.4f}], p {ptext}"


def _ms(value: Any) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _tables(analysis: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    """The report's tables as (title, header, rows) of plain strings."""
    metrics = analysis["metrics"]
    labels = [METRICS[m].label for m in metrics]
    tables = []
    rows = []
    for v in analysis["variants"]:
        models = ", ".join(f"{m['name']} ({m['version']})" for m in v["models"][:3])
        outcomes = _num(v["outcomes"]) + (f" ({_num(v['positives'])} positive)"
                                          if v.get("positives") is not None else "")
        name = v["name"] + (" (control)" if v["control"] and v["name"] != "control" else "")
        rows.append([name, _num(v["requests"]), _num(v["rows"]), outcomes, _num(v.get("units"))]
                    + [_est(v["metrics"][m]) for m in metrics] + [models])
    tables.append(("Variants (95% confidence intervals, cluster-robust by user)",
                   ["variant", "requests", "rows", "joined outcomes", "users"] + labels
                   + ["models"], rows))
    if analysis["comparisons"]:
        rows = [[f"{c['candidate']} - {c['control']}"] + [_delta(c["all_metrics"][m]) for m in metrics]
                + [c["verdict"]] for c in analysis["comparisons"]]
        tables.append(("Differences to the control (candidate minus control, 95% CI and two-sided p "
                       "of each metric; the verdict tests the deciding metric at the Bonferroni "
                       "level, see its text)",
                       ["comparison"] + labels + ["verdict"], rows))
    rows = []
    for v in analysis["variants"]:
        lat = v["latency_ms"]
        rows.append([v["name"], _num(lat["n"]), _ms(lat["p50"]), _ms(lat["p95"]), _ms(lat["p99"])])
    for s in analysis["shadows"]:
        lat = s.get("latency_ms") or {}
        if lat and not any(r[0] == f"{s['name']} (shadow)" for r in rows):
            rows.append([f"{s['name']} (shadow)", _num(lat["n"]), _ms(lat["p50"]), _ms(lat["p95"]),
                         _ms(lat["p99"])])
    tables.append(("Latency inside the function (ms, from the log)",
                   ["variant", "requests", "p50", "p95", "p99"], rows))
    if analysis["shadows"]:
        rows = []
        for s in analysis["shadows"]:
            ag = s["agreement"]
            flipped = "n/a" if ag["flipped"] is None else f"{100 * ag['flipped']:.2f}%"
            metric = analysis["primary_metric"]
            own = _est(s["metrics"][metric]) if s.get("metrics") else "no outcomes"
            answer = _est(s["answer_metrics"][metric]) if s.get("answer_metrics") else ""
            rows.append([s["name"], s["answer_variant"], _num(ag["n"]), _num(ag["correlation"]),
                         _num(ag["mean_abs_diff"]), flipped, _num(s["outcomes"]), own, answer,
                         s["comparison"]["text"] if s.get("comparison") else ""])
        tables.append((f"Shadows against the answer on the same rows (flips at threshold "
                       f"{analysis['threshold']})",
                       ["shadow", "answered by", "rows", "correlation", "mean abs diff", "flipped",
                        "outcomes", f"shadow {METRICS[analysis['primary_metric']].label}",
                        f"answer {METRICS[analysis['primary_metric']].label}", "verdict"], rows))
    j = analysis["join"]
    rows = [["outcomes read", _num(j["outcomes"])], ["joined by request id", _num(j["by_request_id"])],
            ["joined by key", _num(j["by_key"])],
            ["no prediction (unknown id, or no prediction for the key before the outcome)",
             _num(j["unmatched"])],
            ["ambiguous (multi-row request without a row)", _num(j["ambiguous"])],
            ["row out of range", _num(j["bad_row"])],
            ["superseded (several outcomes for one prediction: the last received counts)",
             _num(j["superseded"])],
            ["labels that do not fit the objective", _num(j["bad_label"])],
            ["the logged prediction is null (not a number)", _num(j.get("no_prediction", 0))],
            ["joined to a prediction outside [since, until)", _num(j.get("outside_range", 0))],
            ["joined to a request whose caller pinned the variant (not randomised)",
             _num(j.get("pinned", 0))],
            ["damaged outcome records", _num(j["damaged"])]]
    rows += [[f"prediction records left out: {reason}", _num(n)]
             for reason, n in sorted(analysis.get("excluded_records", {}).items())]
    tables.append(("Join", ["", "count"], rows))
    rollout = analysis.get("rollout")
    if rollout:
        tables.append(("Rollout decisions", ["time (UTC)", "decision", "candidate share", "reason"],
                       [[d["time"][:19], str(d["action"]), f"{d['share']:g}%", str(d["reason"])]
                        for d in rollout["decisions"]]))
    return tables


def _header_lines(analysis: dict[str, Any]) -> list[str]:
    read = analysis.get("read", {})
    metric = METRICS[analysis["primary_metric"]]
    return [
        f"Time range: {analysis.get('since', '?')} to {analysis.get('until', '?')} (prediction time, UTC)",
        f"Objective: {analysis['objective']}; deciding metric: {metric.label} "
        f"({'higher' if metric.higher_is_better else 'lower'} is better); control: {analysis['control']}",
        f"Read {read.get('prediction_records', 0):,} prediction records from "
        f"{read.get('prediction_blobs', 0):,} blobs and {read.get('outcomes', 0):,} outcomes "
        f"in {read.get('seconds', 0)} s; generated {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
    ]


_AGAINST = {"reference": "reference profile", "model": "training ranges (no reference)"}
DRIFT_HEADER = ["variant", "model", "compared with", "most drifted feature", "PSI",
                "drifted features"]


def _drift_text(drift: dict[str, Any]) -> tuple[list[str], list[list[str]], list[str]]:
    """The Drift section in plain strings: the lines before the table, the table's rows (per
    variant its most drifted feature) and the lines on predictions between variants."""
    if not drift["evaluated"]:
        lead = (f"The latest drift summary could not be read ({drift['error']})."
                if drift.get("error") else "Drift has not been evaluated yet for this endpoint.")
        return [lead], [], []
    start, end = drift["window"]
    rows = [[v["variant"], f"{v['model']} ({v['version']})", _AGAINST.get(v["against"], v["against"]),
             v["worst"] or "", _num(v["psi"], 3), _num(v["drifted_features"])]
            for v in drift["variants"]]
    between = [f"Predictions of {b['variant']} against {b['baseline']}: "
               f"{'they differ' if b['differ'] else 'no noticeable difference'} (PSI {_num(b['psi'], 3)})."
               for b in drift["between_variants"]]
    return ([f"Latest drift evaluation: {drift['evaluated_at']}, over {start} to {end} (UTC)."], rows,
            between or ["The drift summary compares no predictions between variants."])


def _drift_html(drift: dict[str, Any]) -> str:
    e = html.escape
    lead, rows, between = _drift_text(drift)
    parts = ["<h2>Drift</h2>"] + [f"<p>{e(line)}</p>" for line in lead]
    if rows:
        head = "".join(f"<th>{e(h)}</th>" for h in DRIFT_HEADER)
        body = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in rows)
        parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
    parts += [f"<p>{e(line)}</p>" for line in between]
    link = f"<a href='{e(drift['report'])}'>{e(drift['report'])}</a>"
    command = f"<code>{e(drift['command'])}</code>"
    parts.append(f"<p>{_drift_link_text(drift).format(link=link, command=command)}</p>")
    return "\n".join(parts)


def _drift_markdown(drift: dict[str, Any]) -> list[str]:
    lead, rows, between = _drift_text(drift)
    lines = ["", "## Drift", ""] + lead
    if rows:
        lines += ["", "| " + " | ".join(DRIFT_HEADER) + " |", "|" + "---|" * len(DRIFT_HEADER)]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
    lines += [""] + between if between else []
    link = f"[{drift['report']}](<{drift['report']}>)"
    return lines + ["", _drift_link_text(drift).format(link=link, command=f"`{drift['command']}`")]


def _drift_link_text(drift: dict[str, Any]) -> str:
    """Where the drift report is and the command that writes it ({link}, {command})."""
    if drift["evaluated"]:
        return "Drift report: {link} (beside this report); write or refresh it with {command}"
    return "Evaluate drift and write its report ({link}, beside this report) with {command}"


# -- HTML -----------------------------------------------------------------------------------


def html_page(analysis: dict[str, Any], plots: dict[str, bytes], plot_note: str | None,
              title: str | None = None) -> str:
    e = html.escape
    title = title or f"A/B report: {analysis['endpoint']}"
    parts = [f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{e(title)}</title>"
             f"<style>{CSS}</style></head><body><h1>{e(title)}</h1>"]
    parts += [f"<p class=meta>{e(line)}</p>" for line in _header_lines(analysis)]
    parts.append("<h2>Verdict</h2>")
    if not analysis["comparisons"]:
        parts.append("<p>Only one variant has predictions in this range: nothing to compare.</p>")
    for c in analysis["comparisons"]:
        parts.append(f"<div class='verdict {e(c['verdict'])}'>{e(c['text'])}</div>")
    tables = _tables(analysis)

    def table(t: tuple[str, list[str], list[list[str]]]) -> str:
        name, header, rows = t
        head = "".join(f"<th>{e(h)}</th>" for h in header)
        body = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in rows)
        return f"<h2>{e(name)}</h2><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    def img(name: str, alt: str) -> str:
        if name not in plots:
            return ""
        data = base64.b64encode(plots[name]).decode("ascii")
        return f"<p><img alt='{e(alt)}' src='data:image/png;base64,{data}'></p>"

    by_title = {t[0].split(" (")[0]: t for t in tables}
    parts.append(table(tables[0]))
    parts.append(img("metric", "metric per variant with 95% intervals"))
    if analysis["comparisons"]:
        parts.append(table(by_title["Differences to the control"]))
    parts.append("<h2>Score distributions</h2>" + (img("scores", "score distributions") or "<p>No plot.</p>"))
    if analysis.get("drift"):
        parts.append(_drift_html(analysis["drift"]))
    parts.append("<h2>Daily metric</h2>" + (img("daily", "daily metric") or
                 "<p class=note>No day with at least 20 joined outcomes per variant.</p>"))
    parts.append(table(by_title["Latency inside the function"]))
    parts.append(img("latency", "latency distribution"))
    if analysis["shadows"]:
        parts.append(table(by_title["Shadows against the answer on the same rows"]))
    parts.append(table(by_title["Join"]))
    if "Rollout decisions" in by_title:
        parts.append(table(by_title["Rollout decisions"]))
        parts.append(img("rollout", "the candidate's share and the always-valid interval over time"))
    notes = list(analysis.get("notes", []))
    if plot_note:
        notes.append(plot_note)
    parts.append("<h2>Method and notes</h2><p class=note>" + e(METHOD) + "</p>")
    parts += [f"<p class=note>{e(n)}</p>" for n in notes]
    parts.append("</body></html>")
    return "\n".join(parts)


# -- Markdown -------------------------------------------------------------------------------


def markdown(analysis: dict[str, Any], links: dict[str, str], plot_note: str | None,
             title: str | None = None) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    def table(t: tuple[str, list[str], list[list[str]]]) -> list[str]:
        name, header, rows = t
        return (["", f"## {name}", "", "| " + " | ".join(cell(h) or " " for h in header) + " |",
                 "|" + "---|" * len(header)]
                + ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows])

    def img(name: str, alt: str) -> list[str]:
        return ["", f"![{alt}]({links[name]})"] if name in links else []

    lines = [f"# {title or 'A/B report: ' + analysis['endpoint']}", ""]
    lines += [f"{line}  " for line in _header_lines(analysis)]
    lines += ["", "## Verdict", ""]
    if not analysis["comparisons"]:
        lines.append("Only one variant has predictions in this range: nothing to compare.")
    for c in analysis["comparisons"]:
        lines.append(f"- **{c['verdict']}**: {c['text']}")
    tables = _tables(analysis)
    by_title = {t[0].split(" (")[0]: t for t in tables}
    lines += table(tables[0]) + img("metric", "metric per variant with 95% intervals")
    if analysis["comparisons"]:
        lines += table(by_title["Differences to the control"])
    lines += ["", "## Score distributions"] + img("scores", "score distributions")
    if analysis.get("drift"):
        lines += _drift_markdown(analysis["drift"])
    lines += ["", "## Daily metric"] + (img("daily", "daily metric")
                                        or ["", "No day with at least 20 joined outcomes per variant."])
    lines += table(by_title["Latency inside the function"]) + img("latency", "latency distribution")
    if analysis["shadows"]:
        lines += table(by_title["Shadows against the answer on the same rows"])
    lines += table(by_title["Join"])
    if "Rollout decisions" in by_title:
        lines += table(by_title["Rollout decisions"])
        lines += img("rollout", "the candidate's share and the always-valid interval over time")
    lines += ["", "## Method and notes", "", METHOD, ""]
    lines += [f"- {n}" for n in analysis.get("notes", []) + ([plot_note] if plot_note else [])]
    return "\n".join(lines) + "\n"


# -- plots ------------------------------------------------------------------------------------


def make_plots(analysis: dict[str, Any], dataset: Dataset) -> tuple[dict[str, bytes], str | None]:
    """PNG plots by name, and a note when they could not be drawn."""
    plt = pyplot()
    if plt is None:
        return {}, PLOTS_NEED_MATPLOTLIB
    plots: dict[str, bytes] = {}
    for name, draw in (("metric", _plot_metric), ("scores", _plot_scores), ("daily", _plot_daily),
                       ("latency", _plot_latency), ("rollout", _plot_rollout)):
        fig = draw(plt, analysis, dataset)
        if fig is not None:
            plots[name] = png(plt, fig)
    return plots, None


def _plot_metric(plt, analysis, dataset):
    metric = analysis["primary_metric"]
    items = [(v["name"], v["metrics"][metric]) for v in analysis["variants"]]
    items += [(f"{s['name']} (shadow, on {s['answer_variant']}'s rows)", s["metrics"][metric])
              for s in analysis["shadows"] if s.get("metrics")]
    items = [(n, m) for n, m in items if m.get("value") is not None]
    if not items:
        return None
    fig, ax = plt.subplots(figsize=(7, 0.5 + 0.45 * len(items)))
    color_of = colors([n for n, _ in items])
    for i, (name, m) in enumerate(items):
        low = m["low"] if m["low"] is not None else m["value"]
        high = m["high"] if m["high"] is not None else m["value"]
        ax.errorbar(m["value"], i, xerr=[[m["value"] - low], [high - m["value"]]], fmt="o",
                    color=color_of[name], capsize=4)
    ax.set_yticks(range(len(items)), [n for n, _ in items])
    ax.invert_yaxis()
    ax.set_xlabel(f"{METRICS[metric].label} with 95% interval")
    ax.grid(axis="x", alpha=0.3)
    return fig


def _plot_scores(plt, analysis, dataset):
    series = {n: v.scores() for n, v in dataset.variants.items()}
    series.update({f"{n} (shadow)": v.scores() for n, v in dataset.shadows.items()})
    series = {n: s for n, s in series.items() if s.size}
    if not series:
        return None
    objective = analysis["objective"]
    if objective == "multiclass":
        series = {n: (s.max(axis=1) if s.ndim == 2 else s) for n, s in series.items()}
        xlabel = "probability of the predicted class"
    else:
        xlabel = "predicted probability" if objective == "binary" else "prediction"
    allv = np.concatenate(list(series.values()))
    allv = allv[np.isfinite(allv)]
    if objective in ("binary", "multiclass"):
        bins = np.linspace(0, 1, 41)
    else:
        lo, hi = np.percentile(allv, [0.5, 99.5]) if allv.size else (0, 1)
        bins = np.linspace(lo, hi if hi > lo else lo + 1, 41)
    fig, ax = plt.subplots(figsize=(7, 3.6))
    color_of = colors(list(series))
    for name, s in series.items():
        ax.hist(s, bins=bins, density=True, histtype="step", linewidth=1.6, label=f"{name} (n={s.size:,})",
                color=color_of[name])
    ax.set_xlabel(xlabel)
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def _plot_daily(plt, analysis, dataset):
    points = analysis["daily"]
    if not points:
        return None
    days = sorted({p["day"] for p in points})
    position = {day: i for i, day in enumerate(days)}
    fig, ax = plt.subplots(figsize=(7, 3.6))
    names = list(dict.fromkeys(p["variant"] for p in points))
    color_of = colors(names)
    for k, name in enumerate(names):
        pts = [p for p in points if p["variant"] == name]
        # days as categories (no gaps in time to draw), variants side by side
        x = [position[p["day"]] + (k - (len(names) - 1) / 2) * 0.08 for p in pts]
        values = [p["value"] for p in pts]
        low = [p["value"] - (p["low"] if p["low"] is not None else p["value"]) for p in pts]
        high = [(p["high"] if p["high"] is not None else p["value"]) - p["value"] for p in pts]
        ax.errorbar(x, values, yerr=[low, high], marker="o", capsize=3, color=color_of[name],
                    label=name, linestyle="-" if len(pts) > 1 else "none")
    step = max(1, len(days) // 12)
    ax.set_xticks(range(0, len(days), step), days[::step], rotation=30, ha="right")
    ax.set_xlim(-0.5, len(days) - 0.5)
    ax.set_ylabel(f"daily {METRICS[analysis['primary_metric']].label} (95% interval)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def _plot_latency(plt, analysis, dataset):
    series = {n: v.latencies() for n, v in dataset.variants.items()}
    series.update({f"{n} (shadow)": v.latencies() for n, v in dataset.shadows.items()})
    series = {n: s[np.isfinite(s) & (s > 0)] for n, s in series.items()}
    series = {n: s for n, s in series.items() if s.size}
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(7, 3.4))
    color_of = colors(list(series))
    for name, s in series.items():
        x = np.sort(s)
        ax.plot(x, np.arange(1, x.size + 1) / x.size, color=color_of[name], label=name)
    ax.set_xscale("log")
    ax.set_xlabel("latency inside the function, ms (log scale)")
    ax.set_ylabel("share of requests")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    return fig


DRAWERS: dict[str, Callable] = {"metric": _plot_metric, "scores": _plot_scores,
                                "daily": _plot_daily, "latency": _plot_latency}


def _plot_rollout(plt, analysis, dataset):
    """The candidate's share over time, and the always-valid interval of its loss difference
    narrowing as outcomes come in."""
    rollout = analysis.get("rollout")
    if not rollout:
        return None
    points = rollout["timeline"]
    t = [datetime.fromisoformat(p["time"].replace("Z", "+00:00")) for p in points]
    fig, (share_ax, interval_ax) = plt.subplots(2, 1, figsize=(8, 5), sharex=True)
    share_ax.step(t, [p["share"] for p in points], where="post", color="#0969da")
    for d in rollout["decisions"]:
        share_ax.annotate(d["action"], (datetime.fromisoformat(d["time"].replace("Z", "+00:00")),
                                        d["share"]), fontsize=8, rotation=30)
    share_ax.set_ylabel("candidate share (%)")
    ranged = [(x, p["low"], p["high"]) for x, p in zip(t, points)
              if p["low"] is not None and p["high"] is not None]
    if ranged:
        xs = [r[0] for r in ranged]
        interval_ax.fill_between(xs, [r[1] for r in ranged], [r[2] for r in ranged],
                                 color="#8250df", alpha=0.3, step="post")
        interval_ax.axhline(0, color="#57606a", linewidth=0.8)
    interval_ax.set_ylabel("candidate - control\n(loss, always valid)")
    fig.autofmt_xdate()
    return fig
