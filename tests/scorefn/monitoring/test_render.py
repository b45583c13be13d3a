"""The drift report: the most drifted feature named first, the figures in its tables, names
escaped, the advice when a model has no reference profile, and its plots (HTML inline,
Markdown as files beside it)."""

from __future__ import annotations

import re
from pathlib import Path

import orjson

from scorefn.monitoring import render
from scorefn.monitoring.render import monitor_command, monitor_report_name, write_report
from shared.monitoring.records import (
    Comparison,
    DriftSummary,
    FeatureDrift,
    PredictionDrift,
    RateChange,
    WindowPoint,
)

HOSTILE = "<script>alert('x')</script>|`tick`"
LABELS = ["< 10", "[10, 20)", "[20, 40)", ">= 40"]


def feature(name, psi, *, drifted=False, baseline=(25, 25, 25, 25), served=(25, 25, 25, 25),
            missing=(0.01, 0.012, 0.6), out_of_range=(0.0, 0.0, 1.0)):
    return FeatureDrift(name=name, kind="numeric", psi=psi, js=psi / 6, chi2_p=1e-9 if drifted else 0.42,
                        missing=RateChange(*missing), out_of_range=RateChange(*out_of_range),
                        baseline_rows=sum(baseline), served_rows=sum(served), labels=LABELS,
                        baseline_bins=list(baseline), served_bins=list(served), drifted=drifted)


def predictions(psi, drifted):
    return PredictionDrift(kind="probability", psi=psi, js=0.2, chi2_p=0.001, baseline_rows=100,
                           served_rows=80, labels=["< 0.5", ">= 0.5"], baseline_bins=[70, 30],
                           served_bins=[30, 50], drifted=drifted)


def drift_summary(endpoint: str = "churn") -> DriftSummary:
    """control against its reference (``basket_value`` shifted up, a hostile name unchanged),
    candidate without a reference (out-of-range values), candidate against control."""
    control = Comparison(
        endpoint=endpoint, variant="control", model="churn", version="3", against="reference",
        baseline_name="train.parquet", served_rows=100,
        features=[feature("basket_value", 3.2, drifted=True, served=(2, 3, 15, 80),
                          out_of_range=(0.0, 0.125, 1e-6)),
                  feature(HOSTILE, 0.05), feature("age", 0.01)],
        predictions=predictions(0.31, True))
    candidate = Comparison(
        endpoint=endpoint, variant="candidate", model="churn", version="4", against="model",
        baseline_name="", served_rows=80,
        features=[feature("tenure", float("nan"), drifted=True, baseline=(0, 0, 0, 0),
                          out_of_range=(0.0, 0.2, 1e-8))],
        predictions=None, note="Model churn 4 has no reference profile.")
    between = Comparison(
        endpoint=endpoint, variant="candidate", model="churn", version="4", against="variant",
        baseline_name="control", served_rows=80, features=[feature("age", 0.02)],
        predictions=predictions(0.28, True))
    timeline = [WindowPoint(hour=f"2026-12-07T{h:02d}", variant=v, rows=10 + h,
                            prediction_bins=[7 - h, 3 + h] if v == "control" else [3, 7])
                for h in range(3) for v in ("control", "candidate")]
    return DriftSummary(endpoint=endpoint, evaluated_at="2026-12-07T20:00:00+00:00",
                        window_start="2026-12-06T20:00:00+00:00",
                        window_end="2026-12-07T20:00:00+00:00", psi_threshold=0.2, min_rows=50,
                        comparisons=[control, candidate, between], timeline=timeline,
                        prediction_labels=["< 0.5", ">= 0.5"])


def test_html_names_the_most_drifted_feature_first_and_its_tables_hold_the_figures(tmp_path):
    out = tmp_path / "monitor-churn.html"
    assert write_report(drift_summary(), out) == [out]
    page = out.read_text()
    assert "<title>Drift report: churn</title>" in page
    assert "Window: 2026-12-06T20:00:00+00:00 to 2026-12-07T20:00:00+00:00 (UTC)" in page
    assert "Evaluated at: 2026-12-07T20:00:00+00:00" in page
    assert "Thresholds: PSI 0.2 (psi_threshold), at least 50 rows (min_rows)" in page
    control = page[page.index("<h2>Variant <code>control</code>"):]
    # The sentence naming the worst feature comes before its table, and names it first.
    sentence = re.search(r"<p>Most drifted: (.*?)</p>", control).group(1)
    assert sentence.startswith("<code>basket_value</code> (PSI 3.200, out of range 0% → 12.5%)")
    assert "1 of 3 features drifted" in sentence
    assert control.index("Most drifted") < control.index("<table>")
    assert ("<tr class=drifted><td>1</td><td><code>basket_value</code></td><td>numeric</td>"
            "<td>3.200</td><td>0.533</td><td>&lt; 0.0001</td><td>1.0% → 1.2%</td>"
            "<td>0% → 12.5%</td><td>yes</td></tr>") in control
    assert "<tr><td>3</td><td><code>age</code></td><td>numeric</td><td>0.010</td>" in control
    # Predictions: measures, and the comparison between variants.
    assert ("<td>probability</td><td>0.310</td><td>0.200</td><td>0.0010</td><td>100</td>"
            "<td>80</td><td>yes</td>") in control
    assert "<h2>Variant <code>candidate</code> (<code>churn 4</code>) against variant <code>control</code>" \
        in page
    assert "<h2>Predictions over time</h2>" in page


def test_names_from_models_are_escaped(tmp_path):
    out = tmp_path / "r.html"
    write_report(drift_summary(), out)
    page = out.read_text()
    assert "<script>" not in page
    assert "<code>&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;|`tick`</code>" in page
    md = tmp_path / "r.md"
    write_report(drift_summary(), md)
    text = md.read_text()
    # A code span (literal), its fence longer than any backtick run, the pipe escaped in tables.
    assert "| `` <script>alert('x')</script>\\|`tick` `` |" in text
    assert "<script>" not in text.replace("`` <script>", "")


def test_a_model_without_a_reference_says_how_to_upload_one_and_notes_are_shown(tmp_path):
    # As stored: its PSI (NaN, no baseline distribution) is read back as None.
    stored = DriftSummary.from_dict(orjson.loads(orjson.dumps(drift_summary().to_dict())))
    assert stored.comparisons[1].features[0].psi is None
    for name in ("r.html", "r.md"):
        write_report(stored, tmp_path / name)
        text = (tmp_path / name).read_text()
        candidate = text[text.index("candidate"):]
        assert "No reference profile was uploaded for this model, so only missing and out-of-range " \
            "values were checked" in candidate
        assert "python -m scorefn upload-model MODEL NAME --reference-data FILE" in candidate
        assert "Model churn 4 has no reference profile." in candidate
        assert "(out of range 0% → 20.0%)" in candidate  # no PSI without a baseline distribution
        assert "numeric | n/a | n/a | < 0.0001" in candidate or \
            "<td>numeric</td><td>n/a</td><td>n/a</td><td>&lt; 0.0001</td>" in candidate


def test_html_plots_are_inline_and_markdown_plots_are_files_beside_it(tmp_path):
    page_file = tmp_path / "r.html"
    write_report(drift_summary(), page_file)
    page = page_file.read_text()
    # control: basket_value (the one drifted) and predictions; candidate vs model: tenure
    # (served only); between: top-3 = age and predictions; the timeline.
    assert page.count("src='data:image/png;base64,") == 6
    assert "alt='basket_value: reference and served shares per bin'" in page
    assert "Plots need matplotlib" not in page

    md = tmp_path / "out" / "monitor-churn.md"
    files = write_report(drift_summary(), md, title="Drift of churn")
    assert files[0] == md and len(files) == 7
    assert all(f.parent == tmp_path / "out" / "monitor-churn-plots" and f.read_bytes()[:4] == b"\x89PNG"
               for f in files[1:])
    text = md.read_text()
    assert text.startswith("# Drift of churn\n")
    assert "![basket_value: reference and served shares per bin](monitor-churn-plots/c0-feature0.png)" \
        in text
    assert "![each variant's predictions per hour](monitor-churn-plots/timeline.png)" in text
    assert "| 1 | `basket_value` | numeric | 3.200 | 0.533 | < 0.0001 | 1.0% → 1.2% | 0% → 12.5% | yes |" \
        in text
    first_row = text.index("| 1 | `basket_value` | numeric")
    assert text.index("Most drifted: `basket_value` (PSI 3.200") < first_row


def test_without_matplotlib_the_report_says_how_to_get_the_plots(tmp_path, monkeypatch):
    monkeypatch.setattr(render, "pyplot", lambda: None)
    md = tmp_path / "r.md"
    assert write_report(drift_summary(), md) == [md]
    assert not (tmp_path / "r-plots").exists()
    assert "pip install -r requirements-report.txt" in md.read_text()
    write_report(drift_summary(), tmp_path / "r.html")
    assert "data:image/png" not in (tmp_path / "r.html").read_text()


def test_an_empty_summary_and_the_report_names():
    empty = DriftSummary(endpoint="churn/v2", evaluated_at="t", window_start="a", window_end="b",
                         psi_threshold=0.2, min_rows=50, comparisons=[])
    page = render.html_page(render.build_page(empty), {})
    assert "nothing was compared" in page and "No hourly predictions in the window." in page
    assert monitor_report_name("churn/v2") == "monitor-churn_v2.html"
    assert monitor_report_name("churn", markdown=True) == "monitor-churn.md"
    assert monitor_command("churn/v2", Path("reports")) == \
        "python -m scorefn monitor --endpoint churn/v2 --out reports"
    assert monitor_command("churn", Path("r"), markdown=True).endswith("--out r --format md")
