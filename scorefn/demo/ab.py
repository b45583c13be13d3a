"""The A/B part of the demo: two churn models behind a 50/50 router config with the
prediction log on, simulated users, outcomes drawn from the generating process, a report.

Called by the demo at the end, with the demo's HTTP client to the local host::

    from scorefn.demo.ab import run_ab_demo
    run_ab_demo(client, azurite.connection_string, "models", say)

The host must watch the router config blob (app settings ``ROUTER_CONFIG_BLOB=
config/router.json``; ``ROUTER_REFRESH_SECONDS=1`` and ``PREDICTION_LOG_FLUSH_SECONDS=1``
keep the demo quick). A config blob missing at startup means single-model mode, so the
rest of the demo is unaffected until this part uploads one.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
CONFIG_BLOB = "config/router.json"


def ab_config(endpoint: str = "churn", *, control: str = "churn_v1", candidate: str = "churn",
              shadow: str | None = "churn", shadow_fraction: float = 0.25) -> bytes:
    """A 50/50 split of ``endpoint`` between two models, sticky by ``x-user-id``, logged."""
    config: dict[str, Any] = {
        "variants": [{"name": "control", "model": control, "weight": 50},
                     {"name": "candidate", "model": candidate, "weight": 50}],
        "sticky": {"header": "x-user-id"}, "salt": f"{endpoint}-ab-demo",
        "log": {"sample": 1.0, "features": False}}
    if shadow:
        config["shadow"] = [{"name": "next", "model": shadow, "fraction": shadow_fraction}]
    return json.dumps({"endpoints": {endpoint: config}}).encode()


def json_rows(X: np.ndarray) -> list[list[float | None]]:
    return [[None if np.isnan(v) else float(v) for v in row] for row in X]


def send_traffic(client: Any, endpoint: str, *, users: int, rows_per_request: int,
                 repeat_share: float, seed: int, say: Callable[[str], None]) -> list[dict[str, Any]]:
    """One request per user (``rows_per_request`` rows each), then a second one for a share
    of them. Returns what was sent and answered: user, request id, variant, rows, times."""
    from scorefn.demo.models import churn_features

    rng = np.random.default_rng(seed)
    plan = [f"user-{i:05d}" for i in range(users)]
    plan += plan[: int(users * repeat_share)]
    sent: list[dict[str, Any]] = []
    started = time.monotonic()
    for n, user in enumerate(plan):
        X = churn_features(rows_per_request, rng)
        request_id = f"ab-{seed}-{n:06d}"
        response = client.post(f"/api/score/{endpoint}", json={"rows": json_rows(X)},
                               headers={"x-user-id": user, "x-request-id": request_id})
        if response.status_code != 200:
            raise RuntimeError(f"scoring failed: {response.status_code} {response.text[:200]}")
        doc = response.json()
        sent.append({"user": user, "request_id": request_id, "variant": doc["variant"],
                     "X": X, "predictions": np.asarray(doc["predictions"]), "answered": time.time()})
        if (n + 1) % 500 == 0 or n + 1 == len(plan):
            say(f"    {n + 1:,}/{len(plan):,} requests ({time.monotonic() - started:.1f} s)")
    return sent


def draw_outcomes(sent: list[dict[str, Any]], seed: int) -> list[dict[str, Any]]:
    """One label per scored row, drawn from the true churn probability. Half of them are
    reported by request id, half by user key (with the time of the request they belong
    to, so that a user's later request does not take them)."""
    from scorefn.demo.models import churn_probability

    rng = np.random.default_rng(seed + 1)
    outcomes = []
    for n, req in enumerate(sent):
        labels = (rng.random(req["X"].shape[0]) < churn_probability(req["X"])).astype(int)
        req["labels"] = labels
        for row, label in enumerate(labels.tolist()):
            if n % 2:
                outcomes.append({"request_id": req["request_id"], "row": row, "label": label})
            else:
                when = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(req["answered"]))
                frac = f"{req['answered'] % 1:.6f}"[1:]
                outcomes.append({"key": req["user"], "row": row, "label": label,
                                 "time": f"{when}{frac}Z"})
    return outcomes


def post_outcomes(client: Any, endpoint: str, outcomes: list[dict[str, Any]], chunk: int = 5000) -> int:
    accepted = 0
    for i in range(0, len(outcomes), chunk):
        response = client.post(f"/api/outcomes/{endpoint}", json={"outcomes": outcomes[i:i + chunk]})
        if response.status_code != 202:
            raise RuntimeError(f"outcomes failed: {response.status_code} {response.text[:200]}")
        accepted += response.json()["accepted"]
    return accepted


def wait_for_log(container: Any, endpoint: str, marker: bytes, records: int,
                 timeout: float = 30.0) -> int:
    """Wait until the prediction log of ``endpoint`` holds ``records`` answering records
    whose text contains ``marker`` (they are written in the background, every
    PREDICTION_LOG_FLUSH_SECONDS)."""
    deadline = time.monotonic() + timeout
    found = 0
    while True:
        found = 0
        try:
            for blob in container.list_blobs(name_starts_with=f"{endpoint}/"):
                data = container.download_blob(blob.name).readall()
                found += sum(1 for line in data.splitlines()
                             if marker in line and b'"shadow":false' in line)
        except Exception:  # the container appears with the first flush
            found = 0
        if found >= records or time.monotonic() > deadline:
            return found
        time.sleep(0.3)


def wait_for_config(client: Any, endpoint: str, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        doc = client.get("/api/endpoints").json()  # also starts a due config refresh
        if any(e.get("name") == endpoint and e.get("log") for e in doc.get("endpoints", [])):
            return True
        time.sleep(0.3)
    return False


def run_ab_demo(client: Any, azurite_connection_string: str, models_container: str = "models",
                say: Callable[[str], None] = print, *, endpoint: str = "churn", users: int = 2000,
                rows_per_request: int = 4, seed: int = 11,
                report_path: Path | None = None, config_blob: str = CONFIG_BLOB,
                predictions_container: str = "predictions",
                outcomes_container: str = "outcomes") -> dict[str, Any] | None:
    """Run the A/B demo against the host behind ``client``; returns the report's analysis
    (``None`` when the host does not watch ``config_blob``)."""
    from azure.storage.blob import BlobServiceClient

    from scorefn.ab.report import ReportOptions, make_report
    from scorefn.commands.report import print_summary
    from shared.ablog.dataset import Progress

    report_path = report_path or ROOT / ".demo" / "ab-report.html"
    blobs = BlobServiceClient.from_connection_string(azurite_connection_string)
    say(f"\nA/B test: {endpoint} split 50/50 between churn_v1 (control) and churn (candidate), "
        f"sticky by x-user-id, prediction log on")
    since = time.time() - 1
    blobs.get_container_client(models_container).upload_blob(config_blob, ab_config(endpoint),
                                                             overwrite=True)
    if not wait_for_config(client, endpoint):
        say(f"  the host does not pick up {config_blob}: start it with ROUTER_CONFIG_BLOB="
            f"{config_blob} (and ROUTER_REFRESH_SECONDS=1); skipping the A/B part")
        return None
    say(f"  router config uploaded to {models_container}/{config_blob} and active")
    say(f"  scoring: {users:,} users, {rows_per_request} rows per request, a second request "
        f"for a quarter of them")
    sent = send_traffic(client, endpoint, users=users, rows_per_request=rows_per_request,
                        repeat_share=0.25, seed=seed, say=say)
    outcomes = draw_outcomes(sent, seed)
    accepted = post_outcomes(client, endpoint, outcomes)
    say(f"  outcomes: {accepted:,} labels drawn from the true churn probability, posted to "
        f"POST /api/outcomes/{endpoint} (half by request id, half by user key)")
    written = wait_for_log(blobs.get_container_client(predictions_container), endpoint,
                           f'"request_id":"ab-{seed}-'.encode(), len(sent))
    say(f"  prediction log: {written:,} records written in the background")
    options = ReportOptions(endpoint=endpoint, out=report_path,
                            since=datetime.fromtimestamp(since, UTC),
                            until=datetime.now(UTC))
    progress = Progress(None)  # the demo prints its own lines
    analysis = make_report(blobs.get_container_client(predictions_container),
                           blobs.get_container_client(outcomes_container), options, progress=progress)
    say("  report (python -m scorefn report --endpoint churn --out ...):")
    print_summary(analysis, report_path, say=lambda line: say("  " + line))
    return analysis
