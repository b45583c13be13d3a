"""Rollouts end to end: the app's timer runs the controller on the local host, over the logs the
app writes while it serves; a healthy canary is promoted, a candidate that does not load is
rolled back, each with its reason in the config and the audit log."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import httpx
import orjson
import pytest

from devhost.process import DevHost
from shared.rollout.audit import AuditLog
from tests.azurite_support import new_container
from tests.conftest import upload

ROOT = Path(__file__).resolve().parents[2]
KEY = "rollout-key"
ROW = [12, 70.5, 1, 12, 40, 33.2, 0, 5]
CONFIG = "config/router.json"


def endpoint(control: str, candidate: str) -> dict:
    return {"variants": [{"name": "control", "model": control, "weight": 100},
                         {"name": "candidate", "model": candidate, "weight": 0}],
            "sticky": {"header": "x-user-id"}, "log": {"sample": 1.0},
            "rollout": {"control": "control", "candidate": "candidate", "steps": [30],
                        "min_minutes": 0, "min_requests": 20,
                        "guardrails": {"min_requests": 10, "latency_warmup_seconds": 0}}}


@pytest.fixture(scope="module")
def rig(azurite, demo_models):
    models = new_container(azurite.connection_string, f"roll{uuid.uuid4().hex[:10]}")
    logs = new_container(azurite.connection_string, f"rlog{uuid.uuid4().hex[:10]}")
    upload(models, "churn.txt", demo_models["churn"].path)
    upload(models, "churn_v1.txt", demo_models["churn_v1"].path)
    upload(models, "broken.txt", b"tree\nversion=v4\nthis is not a model\n")
    upload(models, CONFIG, json.dumps({"endpoints": {
        "canary": endpoint("churn_v1", "churn"), "broken": endpoint("churn", "broken")}}).encode())
    env = {"AzureWebJobsStorage": azurite.connection_string, "MODEL_CONTAINER": models.container_name,
           "ROUTER_CONFIG_BLOB": CONFIG, "ROUTER_REFRESH_SECONDS": "0.3",
           "PREDICTION_LOG_CONTAINER": logs.container_name, "PREDICTION_LOG_FLUSH_SECONDS": "0.5",
           "ROLLOUT_SCHEDULE": "*/1 * * * * *", "DEVHOST_FUNCTION_KEY": KEY,
           "SCORE_QUEUE_NAME": "unused", "RESULTS_QUEUE_NAME": "unused"}
    host = DevHost(ROOT, env, queues=False).start()
    yield host, models, AuditLog(logs)
    host.stop()
    logs.delete_container()


def status(models, name: str) -> dict:
    return orjson.loads(models.download_blob(CONFIG).readall())["endpoints"][name]


def wait_for(check, timeout: float = 40.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError("timed out")


def test_the_timer_runs_the_controller_a_healthy_canary_is_promoted_a_broken_one_rolled_back(rig):
    host, models, audit = rig
    # The controller starts both pending rollouts at its first run.
    wait_for(lambda: status(models, "canary")["rollout"].get("state", {}).get("status") == "running")
    # The broken candidate's model does not load: rolled back, and out of the variants.
    broken = wait_for(lambda: (s := status(models, "broken"))["rollout"].get("state", {}).get(
        "status") == "rolled_back" and s)
    assert "cannot be loaded" in broken["rollout"]["state"]["reason"]
    assert [v["name"] for v in broken["variants"]] == ["control"]
    # Traffic to the canary, until the app serves the candidate its 30% and the log has it.
    with httpx.Client(base_url=host.url, headers={"x-functions-key": KEY}, timeout=30) as client:
        wait_for(lambda: client.get("/api/endpoints").json() and any(
            v["name"] == "candidate" and v["weight"] == 30
            for e in client.get("/api/endpoints").json()["endpoints"] if e["name"] == "canary"
            for v in e["variants"]))
        variants = set()
        for i in range(200):
            r = client.post("/api/score/canary", json={"rows": [ROW]}, headers={"x-user-id": f"u{i}"})
            assert r.status_code == 200
            variants.add(r.headers["x-scorefn-variant"])
        assert variants == {"control", "candidate"}
    promoted = wait_for(lambda: (s := status(models, "canary"))["rollout"]["state"]["status"]
                        == "promoted" and s)
    assert [(v["name"], v["weight"]) for v in promoted["variants"]] == [("candidate", 100)]
    actions = [line["action"] for line in audit.read("canary") if line["action"] != "hold"]
    assert actions == ["start", "promote"]
    assert [line["action"] for line in audit.read("broken") if line["action"] != "hold"] == \
        ["start", "rollback"]
