"""The rollout part of the demo: three rollouts the app's controller runs by itself, on the
local host's timer (``ROLLOUT_SCHEDULE``, every two seconds in the demo):

- ``rollout-better``: ``churn`` (the better model) against ``churn_v1``, deciding on log loss
  over outcomes: it ramps up and is promoted once the always-valid interval says better;
- ``rollout-broken``: ``churn_inverted`` (trained on inverted labels: it loads and answers like
  any model) against ``churn``: the outcomes say worse at the first step and it is rolled back;
- ``rollout-aa``: ``churn`` against itself, deciding on log loss: never promoted.

Simulated users send requests and their outcomes (drawn from the generating process) each
round; the demo prints every decision with its reason as the controller makes it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from scorefn.demo.ab import CONFIG_BLOB, json_rows, wait_for_config

DEMO_ROUNDS = 12
USERS_PER_ROUND = 300
ROWS_PER_REQUEST = 4


def rollout_config(existing: dict[str, Any]) -> dict[str, Any]:
    """``existing`` with the demo's three rollout endpoints added (pending: the controller
    starts them)."""
    def endpoint(control: str, candidate: str, **rollout: Any) -> dict[str, Any]:
        return {"variants": [{"name": "control", "model": control, "weight": 100},
                             {"name": "candidate", "model": candidate, "weight": 0}],
                "sticky": {"header": "x-user-id"}, "log": {"sample": 1.0},
                "rollout": {"control": "control", "candidate": "candidate", "steps": [10, 50],
                            "min_minutes": 0, "min_requests": 60,
                            # The demo's steps last seconds, not the default's minutes.
                            "guardrails": {"min_requests": 40, "latency_warmup_seconds": 4},
                            **rollout}}

    decision = {"metric": "log_loss", "min_effect": 0.02}
    doc = json.loads(json.dumps(existing))
    doc.setdefault("endpoints", {}).update({
        "rollout-better": endpoint("churn_v1", "churn", decision=decision),
        "rollout-broken": endpoint("churn", "churn_inverted", decision=decision),
        "rollout-aa": endpoint("churn", "churn", decision=decision)})
    return doc


def run_rollout_demo(client: Any, azurite_connection_string: str, models_container: str,
                     work_dir: Path, say: Callable[[str], None] = print, *,
                     predictions_container: str = "predictions", seed: int = 17) -> dict[str, str]:
    """Run the three rollouts; returns each endpoint's final status."""
    from azure.storage.blob import BlobServiceClient

    from scorefn.demo.models import train_broken_churn
    from shared.rollout.audit import AuditLog

    blobs = BlobServiceClient.from_connection_string(azurite_connection_string)
    models = blobs.get_container_client(models_container)
    broken = train_broken_churn(work_dir)
    models.upload_blob("churn_inverted.txt", broken.path.read_bytes(), overwrite=True)
    config = models.get_blob_client(CONFIG_BLOB)
    existing = json.loads(config.download_blob().readall()) if config.exists() else {"endpoints": {}}
    config.upload_blob(json.dumps(rollout_config(existing), indent=2), overwrite=True)
    if not wait_for_config(client, "rollout-aa"):
        say("  the host does not pick up the router config: skipping the rollouts")
        return {}
    say("\nProgressive rollouts (the app's controller decides, every 2 s; `python -m scorefn "
        "rollout status ENDPOINT` shows one)")
    endpoints = ("rollout-better", "rollout-broken", "rollout-aa")
    audit = AuditLog(blobs.get_container_client(predictions_container))
    seen = {e: 0 for e in endpoints}
    rng = np.random.default_rng(seed)
    final: dict[str, str] = {}
    for round_ in range(DEMO_ROUNDS):
        for endpoint in endpoints:
            if endpoint not in final:
                _traffic(client, endpoint, rng, round_)
        time.sleep(3.5)  # a log flush (1 s) and a controller run (2 s)
        for endpoint in endpoints:
            lines = audit.read(endpoint)
            for line in lines[seen[endpoint]:]:
                if line["action"] != "hold":
                    say(f"  {endpoint:15s} {line['action']:8s} at {line['share']:g}%: {line['reason']}")
            seen[endpoint] = len(lines)
            status = _status(config, endpoint)
            if status in ("promoted", "rolled_back", "paused") and endpoint not in final:
                final[endpoint] = status
        if len(final) == len(endpoints) - 1 and "rollout-aa" not in final and round_ >= 8:
            break
    for endpoint in endpoints:
        status = final.get(endpoint) or _status(config, endpoint)
        lines = audit.read(endpoint)
        last = lines[-1] if lines else {}
        interval = last.get("interval")
        where = (f"; log loss candidate - control in [{interval[0]:.3f}, {interval[1]:.3f}]"
                 if interval and None not in interval else "")
        say(f"  {endpoint:15s} ends {status}{where}")
        final[endpoint] = status
    return final


def _traffic(client: Any, endpoint: str, rng: np.random.Generator, round_: int) -> None:
    """A round of users: one request of a few rows each, and an outcome per row (by request
    id and row) drawn from the true churn probability."""
    from scorefn.demo.models import churn_features, churn_probability

    outcomes = []
    for i in range(USERS_PER_ROUND):
        X = churn_features(ROWS_PER_REQUEST, rng)
        request_id = f"{endpoint}-{round_}-{i}"
        response = client.post(f"/api/score/{endpoint}", json={"rows": json_rows(X)},
                               headers={"x-user-id": f"user-{round_}-{i}",
                                        "x-request-id": request_id})
        if response.status_code != 200:
            continue  # a failure is logged by the app; the controller counts it
        labels = (rng.random(ROWS_PER_REQUEST) < churn_probability(X)).astype(int)
        outcomes += [{"request_id": request_id, "row": row, "label": int(label)}
                     for row, label in enumerate(labels)]
    if outcomes:
        client.post(f"/api/outcomes/{endpoint}", json={"outcomes": outcomes})


def _status(config: Any, endpoint: str) -> str:
    doc = json.loads(config.download_blob().readall())
    block = doc["endpoints"].get(endpoint, {}).get("rollout", {})
    return str(block.get("state", {}).get("status", "pending"))
