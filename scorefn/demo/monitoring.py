"""The demo's monitoring part: one upstream client starts sending ``monthly_charges`` in cents
on part of the churn traffic, and the drift report names that feature first."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from scorefn.demo.models import CHURN_FEATURES, churn_features

SHIFTED_FEATURE = "monthly_charges"
REFERENCE_ROWS = 20_000


def write_reference_csv(path: Path, rows: int = REFERENCE_ROWS, seed: int = 77) -> Path:
    """Validation rows of the churn models (as their training data was generated), as CSV."""
    X = churn_features(rows, np.random.default_rng(seed))
    lines = [",".join(CHURN_FEATURES)]
    lines += [",".join("" if np.isnan(v) else repr(float(v)) for v in row) for row in X]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def upload_reference(container, blob_name: str, model_bytes: bytes, csv_path: Path) -> int:
    """What ``upload-model --reference-data`` does after the upload: the reference profile
    beside the model. Its size in bytes."""
    from scorefn.monitoring.reference_data import build_reference
    from shared.models.model import parse_model
    from shared.monitoring.blobs import write_reference

    model = parse_model(model_bytes, name=blob_name, path=blob_name, version="",
                        last_modified=None)
    reference, _ = build_reference(csv_path, model)
    write_reference(container, blob_name, reference)
    return len(reference.encode())


def run_monitoring_demo(client, connection_string: str, out_dir: Path,
                        say: Callable[[str], None] = print, *, requests: int = 600,
                        rows_per_request: int = 5, shifted_share: float = 0.3) -> str | None:
    """Send churn traffic with a unit change on part of it, evaluate drift as the timer would,
    write the report; returns the most drifted feature's name (``None``: no counts)."""
    from azure.storage.blob import BlobServiceClient

    from scorefn.commands.monitor import summary_lines
    from scorefn.monitoring.render import monitor_report_name, write_report
    from shared.monitoring.blobs import write_summary
    from shared.monitoring.evaluate import DriftMonitor, Thresholds

    say(f"\nMonitoring: {shifted_share:.0%} of churn requests now come from a client that sends "
        f"{SHIFTED_FEATURE} in cents")
    blobs = BlobServiceClient.from_connection_string(connection_string)
    drift = DriftMonitor(blobs.get_container_client("monitoring"),
                         blobs.get_container_client("models"), Thresholds())
    before = _counted(drift)
    rng = np.random.default_rng(31)
    X = churn_features(requests * rows_per_request, rng)
    shifted = rng.random(len(X)) < shifted_share
    X[shifted, CHURN_FEATURES.index(SHIFTED_FEATURE)] *= 100
    for i in range(0, len(X), rows_per_request):
        rows = [[None if np.isnan(v) else float(v) for v in r] for r in X[i:i + rows_per_request]]
        response = client.post("/api/score/churn", json={"rows": rows})
        if response.status_code != 200:
            raise RuntimeError(f"request failed: {response.status_code} {response.text[:200]}")
    say(f"  sent             {requests} requests, {len(X):,} rows ({int(shifted.sum()):,} in cents)")
    summary, last = None, -1
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # the instance writes its counts every few seconds here
        summary = drift.evaluate("churn")
        counted = _counted(drift, summary)
        if counted >= before + len(X) and counted == last:
            break
        last = counted
        time.sleep(1.5)
    if summary is None or not summary.comparisons:
        say("  no served counts were written (is MONITOR_ENABLED on?)")
        return None
    now = datetime.now(UTC)
    write_summary(blobs.get_container_client("monitoring"), summary, now)
    path = out_dir / monitor_report_name("churn")
    out_dir.mkdir(parents=True, exist_ok=True)
    write_report(summary, path)
    for line in summary_lines(summary)[1:]:
        say(line)
    say(f"  report           {path}  (python -m scorefn monitor --endpoint churn --out DIR)")
    worst = [c.worst for c in summary.comparisons if c.against == "reference" and c.worst]
    return worst[0].name if worst else None


def _counted(drift, summary=None) -> int:
    """The churn rows counted so far (each variant's against its baseline)."""
    summary = summary or drift.evaluate("churn")
    return sum(c.served_rows for c in summary.comparisons if c.against != "variant")
