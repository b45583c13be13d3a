"""Writing the drift report of an endpoint from a :class:`DriftSummary`: self-contained HTML
(plots as base64 PNG) or Markdown (plots as PNG files in ``<stem>-plots/`` beside it), as the
A/B report does. Plots need matplotlib (``pip install -r requirements-report.txt``); without
it the report is written without them and says so.

The page is built once as blocks (headings, paragraphs, tables, images) and written as HTML or
Markdown; names that come from models and the router config (features, variants, models) are
:class:`Code` and escaped by either writer.
"""

from __future__ import annotations

import base64
import html
import math
import re
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from scorefn.monitoring import plots as draw
from scorefn.reporting import (
    CSS,
    PLOTS_NEED_MATPLOTLIB,
    is_markdown,
    png,
    pyplot,
    relative_link,
    write_plot_files,
)
from shared.monitoring.records import Comparison, DriftSummary, FeatureDrift, PredictionDrift, RateChange

UPLOAD_REFERENCE = "python -m scorefn upload-model MODEL NAME --reference-data FILE"
TOP_PLOTS = 3  # features plotted per comparison: the drifted ones first
MAX_ROWS = 30  # features listed per comparison (every drifted one is listed)
METHOD = (
    "PSI (population stability index) sums (served share - baseline share) x ln(served share / "
    "baseline share) over a feature's bins, missing values apart: under 0.1 is usually read as "
    "stable, 0.1 to 0.25 as a moderate shift, over 0.25 as a major one. JS is the Jensen-Shannon "
    "distance (base 2): 0 for equal distributions, 1 for disjoint ones. The chi-square p tests "
    "that both sides' bin counts come from one distribution; with many rows even a slight shift "
    "gets a tiny p, so read it together with PSI. Missing and out-of-range rates (out of range: "
    "outside the range the model was trained on) are compared with a two-proportion test. A "
    "feature is marked drifted when its PSI is over the threshold with enough rows, or when a rate "
    "jumped. Bins are the reference's deciles (a bin per value for a feature with few values, a "
    "bin per code for a categorical one), or without a reference the training range cut into "
    "equal parts.")

_CSS_MORE = "tr.drifted td{background:#ffebe9}code{background:#f6f8fa;padding:0 .2rem}"


# -- the page as blocks ---------------------------------------------------------------------


@dataclass(frozen=True)
class Code:
    """A name from a model or the config (feature, variant, model), or a command: shown as
    code, escaped."""

    text: str


Inline = str | Code
Cell = Inline | tuple[Inline, ...]


@dataclass(frozen=True)
class Heading:
    level: int
    text: tuple[Inline, ...]


@dataclass(frozen=True)
class Para:
    text: tuple[Inline, ...]
    css: str = ""


@dataclass(frozen=True)
class Table:
    header: list[str]
    rows: list[list[Cell]]
    marked: frozenset[int] = frozenset()  # rows shown as drifted


@dataclass(frozen=True)
class Image:
    name: str
    alt: str


Block = Heading | Para | Table | Image
Draw = Callable[[Any], Any]  # pyplot -> a figure, or None


@dataclass
class Page:
    """The report's blocks, and how to draw each plot its images name."""

    title: str
    blocks: list[Block] = field(default_factory=list)
    plots: dict[str, Draw] = field(default_factory=dict)

    def add(self, *blocks: Block) -> None:
        self.blocks.extend(blocks)

    def plot(self, name: str, alt: str, drawer: Draw) -> None:
        self.plots[name] = drawer
        self.blocks.append(Image(name, alt))


# -- entry points ---------------------------------------------------------------------------


def write_report(summary: DriftSummary, path: Path, *, title: str | None = None) -> list[Path]:
    """Writes the drift report to ``path`` (``.md``/``.markdown``: Markdown, else HTML);
    returns the files written (the report, then any plot files)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    page = build_page(summary, title)
    plots, plot_note = draw_plots(page.plots)
    if plot_note:
        page.add(Para((plot_note,), "note"))
    if is_markdown(path):
        files = write_plot_files(path, plots)
        links = {name: relative_link(file) for name, file in files.items()}
        path.write_text(markdown(page, links), encoding="utf-8")
        return [path, *files.values()]
    path.write_text(html_page(page, plots), encoding="utf-8")
    return [path]


def monitor_report_name(endpoint: str, markdown: bool = False) -> str:
    """The drift report's file name for ``endpoint`` (``/`` as ``_``): ``monitor-churn.html``."""
    return f"monitor-{endpoint.replace('/', '_')}.{'md' if markdown else 'html'}"


def monitor_command(endpoint: str, folder: Path, markdown: bool = False) -> str:
    """The command that evaluates ``endpoint``'s drift and writes its report into ``folder``
    (as :func:`monitor_report_name` names it)."""
    return (f"python -m scorefn monitor --endpoint {shlex.quote(endpoint)} "
            f"--out {shlex.quote(str(folder))}" + (" --format md" if markdown else ""))


def draw_plots(drawers: dict[str, Draw]) -> tuple[dict[str, bytes], str | None]:
    """PNG plots by name, and a note when they could not be drawn."""
    plt = pyplot()
    if plt is None:
        return {}, PLOTS_NEED_MATPLOTLIB
    plots = {}
    for name, drawer in drawers.items():
        fig = drawer(plt)
        if fig is not None:
            plots[name] = png(plt, fig)
    return plots, None


# -- figures in words -----------------------------------------------------------------------


def _finite(value: float | None) -> bool:
    """Whether a figure was measured (NaN is stored as null, read back as ``None``)."""
    return value is not None and math.isfinite(value)


def _stat(value: float | None) -> str:
    return f"{value:.3f}" if value is not None and _finite(value) else "n/a"


def _p(value: float | None) -> str:
    if value is None or not _finite(value):
        return "n/a"
    return "< 0.0001" if value < 1e-4 else f"{value:.4f}"


def _pct(rate: float | None) -> str:
    if rate is None or not _finite(rate):
        return "n/a"
    if rate == 0:
        return "0%"
    return "< 0.1%" if rate < 0.001 else f"{100 * rate:.1f}%"


def _rate(change: RateChange) -> str:
    return f"{_pct(change.baseline)} → {_pct(change.served)}"


def _brief(f: FeatureDrift) -> str:
    """A feature's drift in a few words: its PSI, and any rate that rose significantly."""
    parts = [f"PSI {_stat(f.psi)}"] if _finite(f.psi) else []
    for what, change in (("missing", f.missing), ("out of range", f.out_of_range)):
        if all(map(_finite, (change.served, change.baseline, change.p_value))) \
                and change.served > change.baseline and change.p_value < 0.05:
            parts.append(f"{what} {_rate(change)}")
    return ", ".join(parts) or "no change measured"


def _count(n: int, what: str) -> str:
    return f"{n:,} {what}" + ("" if n == 1 else "s")


def _baseline(c: Comparison) -> tuple[Inline, ...]:
    """What the comparison's served rows are compared with, in words."""
    if c.against == "reference":
        return ("its reference profile",) + ((" ", Code(c.baseline_name)) if c.baseline_name else ())
    if c.against == "model":
        return ("the model's training ranges (no reference profile)",)
    return ("variant ", Code(c.baseline_name))


def _sides(c: Comparison) -> tuple[str, str]:
    """The plot legends' names of the baseline and the served rows."""
    if c.against == "variant":
        return f"variant {c.baseline_name}", f"variant {c.variant}"
    return ("reference" if c.against == "reference" else "training ranges"), "served"


# -- the page -------------------------------------------------------------------------------


def build_page(summary: DriftSummary, title: str | None = None) -> Page:
    """The whole report as blocks, with its plots to draw."""
    page = Page(title or f"Drift report: {summary.endpoint}")
    page.add(Heading(1, (page.title,)))
    _header(page, summary)
    _overview(page, summary)
    for i, c in enumerate(summary.comparisons):
        _comparison(page, i, c, summary)
    _timeline(page, summary)
    page.add(Heading(2, ("Method and notes",)), Para((METHOD,), "note"))
    return page


def _header(page: Page, s: DriftSummary) -> None:
    page.add(Para(("Endpoint: ", Code(s.endpoint)), "meta"),
             Para((f"Window: {s.window_start} to {s.window_end} (UTC)",), "meta"),
             Para((f"Evaluated at: {s.evaluated_at}",), "meta"),
             Para((f"Thresholds: PSI {s.psi_threshold:g} (psi_threshold), at least "
                   f"{s.min_rows:,} rows (min_rows)",), "meta"))


def _overview(page: Page, s: DriftSummary) -> None:
    page.add(Heading(2, ("Overview",)))
    if not s.comparisons:
        page.add(Para(("No served rows in the window: nothing was compared.",)))
        return
    rows: list[list[Cell]] = []
    for c in s.comparisons:
        w = c.worst
        rows.append([Code(c.variant), Code(f"{c.model} {c.version}"), _baseline(c),
                     f"{c.served_rows:,}", str(sum(f.drifted for f in c.features)),
                     Code(w.name) if w else "", _stat(w.psi) if w else "",
                     _stat(c.predictions.psi) if c.predictions else "n/a"])
    marked = frozenset(i for i, c in enumerate(s.comparisons)
                       if any(f.drifted for f in c.features)
                       or (c.predictions is not None and c.predictions.drifted))
    page.add(Table(["variant", "model", "compared with", "served rows", "drifted features",
                    "most drifted", "PSI", "predictions PSI"], rows, marked))


def _comparison(page: Page, i: int, c: Comparison, s: DriftSummary) -> None:
    page.add(Heading(2, ("Variant ", Code(c.variant), " (", Code(f"{c.model} {c.version}"),
                         ") against ", *_baseline(c))))
    if c.note:
        page.add(Para((c.note,), "note"))
    if c.against == "model":
        page.add(Para(("No reference profile was uploaded for this model, so only missing and "
                       "out-of-range values were checked (against the training ranges in the "
                       "model file). To compare whole distributions, upload the model with "
                       "thousands of held-out (validation) rows: ", Code(UPLOAD_REFERENCE), ".")))
    rows_line = f"Served rows: {c.served_rows:,}."
    if c.against != "model" and c.features:
        rows_line = f"Served rows: {c.served_rows:,}; baseline rows: {c.features[0].baseline_rows:,}."
    if c.served_rows < s.min_rows:
        rows_line += (f" Under min_rows ({s.min_rows:,}): too few rows for PSI to mark a "
                      f"feature drifted (PSI counts a feature's effective rows: its values on "
                      f"both sides, so a feature with many missing values may be held back "
                      f"above this too).")
    page.add(Para((rows_line,)))
    _features(page, i, c)
    if c.predictions is not None:
        _predictions(page, i, c, c.predictions)


def _worst_sentence(c: Comparison) -> tuple[Inline, ...]:
    """The most drifted feature (and the next drifted ones) named first."""
    if not c.features:
        return ("No features were compared.",)
    drifted = [f for f in c.features if f.drifted]
    worst = c.features[0]
    text: list[Inline] = ["Most drifted: ", Code(worst.name), f" ({_brief(worst)})"]
    for f in [f for f in drifted if f is not worst][:TOP_PLOTS - 1]:
        text += [", then ", Code(f.name), f" ({_brief(f)})"]
    if drifted:
        text.append(f". {len(drifted)} of {_count(len(c.features), 'feature')} drifted.")
    else:
        text.append(f": no feature drifted (of {_count(len(c.features), 'feature')}).")
    return tuple(text)


def _features(page: Page, i: int, c: Comparison) -> None:
    page.add(Para(_worst_sentence(c)))
    shown = [f for k, f in enumerate(c.features) if k < MAX_ROWS or f.drifted]
    if not shown:
        return
    rows: list[list[Cell]] = [
        [str(k + 1), Code(f.name), f.kind, _stat(f.psi), _stat(f.js), _p(f.chi2_p),
         _rate(f.missing), _rate(f.out_of_range), "yes" if f.drifted else ""]
        for k, f in enumerate(shown)]
    page.add(Table(["#", "feature", "kind", "PSI", "JS", "chi-square p",
                    "missing (baseline → served)", "out of range (baseline → served)", "drifted"],
                   rows, frozenset(k for k, f in enumerate(shown) if f.drifted)))
    if len(shown) < len(c.features):
        rest = [f for f in c.features if f not in shown]
        page.add(Para((f"{len(rest)} more features, none drifted, are not listed (largest PSI "
                       f"{_stat(max((f.psi for f in rest if _finite(f.psi)), default=None))}).",), "note"))
    baseline, served = _sides(c)
    plotted = [f for f in c.features if f.drifted][:TOP_PLOTS] or c.features[:TOP_PLOTS]
    for j, f in enumerate(plotted):
        _bars(page, f"c{i}-feature{j}", f.name, {baseline: f.baseline_bins, served: f.served_bins},
              f.labels)


def _bars(page: Page, name: str, what: str, counts: dict[str, list[int]], labels: list[str]) -> None:
    """A plot of the sides' shares per bin (the sides with counts; none without any)."""
    sides = [side for side, bins in counts.items() if sum(bins) > 0]
    if sides:
        page.plot(name, f"{what}: {' and '.join(sides)} shares per bin",
                  partial(draw.bin_bars, labels=labels, xlabel=f"{what} (bins)", counts=counts))


def _predictions(page: Page, i: int, c: Comparison, p: PredictionDrift) -> None:
    page.add(Heading(3, ("Predictions",)))
    differ = "differs" if p.drifted else "does not differ noticeably"
    page.add(Para((f"The predictions' distribution {differ} from that of ", *_baseline(c),
                   f" (PSI {_stat(p.psi)}).")))
    page.add(Table(["kind", "PSI", "JS", "chi-square p", "baseline rows", "served rows",
                    "drifted"],
                   [[p.kind, _stat(p.psi), _stat(p.js), _p(p.chi2_p), f"{p.baseline_rows:,}",
                     f"{p.served_rows:,}", "yes" if p.drifted else ""]],
                   frozenset({0}) if p.drifted else frozenset()))
    baseline, served = _sides(c)
    _bars(page, f"c{i}-predictions", "predictions", {baseline: p.baseline_bins, served: p.served_bins},
          p.labels)


def _timeline(page: Page, s: DriftSummary) -> None:
    page.add(Heading(2, ("Predictions over time",)))
    variants = list(dict.fromkeys(p.variant for p in s.timeline))
    if not variants:
        page.add(Para(("No hourly predictions in the window.",)))
        return
    page.add(Para(("Per variant, each hour's predictions spread over the prediction bins "
                   "(brighter: a larger share of that hour's predictions; hours without "
                   "predictions are blank).",)))
    rows: list[list[Cell]] = []
    for v in variants:
        points = [p for p in s.timeline if p.variant == v]
        hours = sorted(p.hour for p in points)
        rows.append([Code(v), str(len(set(hours))), f"{sum(p.rows for p in points):,}",
                     hours[0], hours[-1]])
    page.add(Table(["variant", "hours", "rows", "first hour", "last hour"], rows))
    page.plot("timeline", "each variant's predictions per hour",
              partial(draw.timeline, points=s.timeline, labels=s.prediction_labels))


# -- HTML -----------------------------------------------------------------------------------


def _html_text(parts: Sequence[Inline]) -> str:
    return "".join(f"<code>{html.escape(p.text)}</code>" if isinstance(p, Code)
                   else html.escape(p) for p in parts)


def _html_cell(cell: Cell) -> str:
    return _html_text(cell if isinstance(cell, tuple) else (cell,))


def _html_block(block: Block, plots: dict[str, bytes]) -> str:
    e = html.escape
    if isinstance(block, Heading):
        return f"<h{block.level}>{_html_text(block.text)}</h{block.level}>"
    if isinstance(block, Para):
        css = f" class={block.css}" if block.css else ""
        return f"<p{css}>{_html_text(block.text)}</p>"
    if isinstance(block, Table):
        head = "".join(f"<th>{e(h)}</th>" for h in block.header)
        body = "".join(("<tr class=drifted>" if k in block.marked else "<tr>")
                       + "".join(f"<td>{_html_cell(c)}</td>" for c in row) + "</tr>"
                       for k, row in enumerate(block.rows))
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    if block.name not in plots:
        return ""
    data = base64.b64encode(plots[block.name]).decode("ascii")
    return f"<p><img alt='{e(block.alt)}' src='data:image/png;base64,{data}'></p>"


def html_page(page: Page, plots: dict[str, bytes]) -> str:
    """The page as one self-contained HTML document (plots inline as base64 PNG)."""
    head = (f"<!doctype html><html lang=en><head><meta charset=utf-8>"
            f"<title>{html.escape(page.title)}</title><style>{CSS}{_CSS_MORE}</style></head><body>")
    body = [_html_block(b, plots) for b in page.blocks]
    return "\n".join([head, *(b for b in body if b), "</body></html>"])


# -- Markdown -------------------------------------------------------------------------------


def _md_code(text: str) -> str:
    """``text`` as a Markdown code span (literal: no HTML, no emphasis)."""
    text = " ".join(text.splitlines())
    fence = "`" * (max((len(run) for run in re.findall("`+", text)), default=0) + 1)
    return f"{fence} {text} {fence}" if "`" in text else f"{fence}{text}{fence}"


def _md_plain(text: str) -> str:
    """Text that is no tag: ``<`` before what could start one is escaped (``< 0.1`` stays)."""
    return re.sub(r"<(?=[A-Za-z/!?])", "&lt;", " ".join(text.splitlines()))


def _md_text(parts: Sequence[Inline], in_table: bool = False) -> str:
    out = "".join(_md_code(p.text) if isinstance(p, Code) else _md_plain(p) for p in parts)
    return out.replace("|", "\\|") if in_table else out


def _md_block(block: Block, links: dict[str, str]) -> list[str]:
    if isinstance(block, Heading):
        return ["", "#" * block.level + " " + _md_text(block.text), ""]
    if isinstance(block, Para):
        if block.css == "meta":  # consecutive lines, kept apart by a hard line break
            return [_md_text(block.text) + "  "]
        return ["", _md_text(block.text), ""]
    if isinstance(block, Table):
        def row(cells: Sequence[Cell]) -> str:
            return "| " + " | ".join(_md_text(c if isinstance(c, tuple) else (c,), True) or " "
                                     for c in cells) + " |"
        return ([row(block.header), "|" + "---|" * len(block.header)]
                + [row(r) for r in block.rows] + [""])
    if block.name not in links:
        return []
    alt = _md_plain(re.sub(r"[\[\]]", " ", block.alt))
    return ["", f"![{alt}]({links[block.name]})", ""]


def markdown(page: Page, links: dict[str, str]) -> str:
    """The page as Markdown; ``links``: each drawn plot's file, relative to the page."""
    lines: list[str] = []
    for block in page.blocks:
        lines += _md_block(block, links)
    text = "\n".join(lines).strip("\n")
    while "\n\n\n" in text:
        text = text.replace("\n\n\n", "\n\n")
    return text + "\n"
