"""The A/B report of an endpoint that had a rollout: its decisions, and a plot of the share and
the always-valid interval over time, read from the rollout audit log."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import numpy as np

from scorefn.ab.report import ReportOptions, make_report, rollout_history
from shared.ablog.blobs import AppendTarget, hour_prefix
from shared.ablog.dataset import Progress
from shared.ablog.record import PredictionRecord
from shared.ablog.times import iso_time
from shared.monitoring.blobs import write_summary
from shared.rollout.audit import AuditLog
from tests.azurite_support import new_container
from tests.scorefn.monitoring.test_render import drift_summary


def audit(t, action, share, low=None, high=None, reason="why"):
    return {"time": iso_time(t), "endpoint": "churn", "action": action, "share": share,
            "reason": reason, "interval": [low, high], "candidate": "candidate",
            "control": "control", "metric": "log_loss"}


def test_the_history_keeps_every_evaluation_and_lists_the_decisions_that_changed_something():
    t = 1_800_000_000.0
    lines = [audit(t, "start", 0), audit(t + 60, "hold", 5, -0.2, 0.3),
             audit(t + 120, "advance", 5, -0.1, 0.2, reason="step 1 passed"),
             audit(t + 180, "hold", 50, -0.05, -0.01), audit(t + 9999, "promote", 50)]
    history = rollout_history(lines, t, t + 3600)
    assert [p["action"] for p in history["timeline"]] == ["start", "hold", "advance", "hold"]
    assert [d["action"] for d in history["decisions"]] == ["start", "advance"]
    assert history["decisions"][1]["reason"] == "step 1 passed"
    assert rollout_history(lines, t + 10_000, t + 20_000) is None


def log_predictions(predictions, now):
    records = b"".join(PredictionRecord(
        time=now - 30, endpoint="churn", request_id=f"r{i}", trigger="http",
        variant=("control", "candidate")[i % 2], model_name="m", model_version="1",
        objective="binary", rows=1, predictions=np.array([0.2]), latency_ms=1.0).json_line(4096)
        for i in range(10))
    AppendTarget(predictions, "t").append(hour_prefix("churn", now - 30), records)


def test_the_report_shows_the_rollout_decisions_and_plots_its_history(blob_service, tmp_path):
    predictions = new_container(blob_service, prefix="p")
    outcomes = new_container(blob_service, prefix="o")
    now = time.time()
    log_predictions(predictions, now)
    log = AuditLog(predictions)
    for i, (action, share) in enumerate([("start", 0), ("hold", 10), ("rollback", 10)]):
        log.append("churn", audit(now - 20 + i, action, share, -0.1, 0.1 + i,
                                  reason="guardrail breached: p99 latency ratio 3 over its limit 1.5"
                                  if action == "rollback" else "started"))
    out = tmp_path / "report.html"
    analysis = make_report(predictions, outcomes, ReportOptions(endpoint="churn", out=out),
                           progress=Progress(None))
    assert [d["action"] for d in analysis["rollout"]["decisions"]] == ["start", "rollback"]
    page = out.read_text()
    assert "Rollout decisions" in page and "guardrail breached: p99 latency ratio 3" in page
    assert "alt='the candidate&#x27;s share and the always-valid interval over time'" in page


def test_the_report_sums_up_the_latest_drift_evaluation_and_links_the_drift_report(blob_service,
                                                                                  tmp_path):
    predictions = new_container(blob_service, prefix="p")
    monitoring = new_container(blob_service, prefix="m")
    log_predictions(predictions, time.time())
    out = tmp_path / "reports" / "ab.md"
    analysis = make_report(predictions, new_container(blob_service, prefix="o"),
                           ReportOptions(endpoint="churn", out=out), progress=Progress(None),
                           monitoring=monitoring)
    assert analysis["drift"]["evaluated"] is False
    text = out.read_text()
    assert "## Drift\n\nDrift has not been evaluated yet for this endpoint." in text
    command = f"python -m scorefn monitor --endpoint churn --out {out.parent} --format md"
    assert f"[monitor-churn.md](<monitor-churn.md>), beside this report) with `{command}`" in text

    write_summary(monitoring, drift_summary(), datetime.now(UTC))
    out = tmp_path / "ab.html"
    analysis = make_report(predictions, new_container(blob_service, prefix="o"),
                           ReportOptions(endpoint="churn", out=out), progress=Progress(None),
                           monitoring=monitoring)
    assert [(v["variant"], v["worst"], v["psi"]) for v in analysis["drift"]["variants"]] == [
        ("control", "basket_value", 3.2), ("candidate", "tenure", None)]
    page = out.read_text()
    drift = page[page.index("<h2>Drift</h2>"):]
    assert ("<tr><td>control</td><td>churn (3)</td><td>reference profile</td><td>basket_value</td>"
            "<td>3.200</td><td>1</td></tr>") in drift
    assert "Predictions of candidate against control: they differ (PSI 0.280)." in drift
    assert "Drift report: <a href='monitor-churn.html'>monitor-churn.html</a>" in drift
    assert make_report(predictions, new_container(blob_service, prefix="o"),
                       ReportOptions(endpoint="churn", out=out), progress=Progress(None)
                       ).get("drift") is None  # no monitoring container: no section
