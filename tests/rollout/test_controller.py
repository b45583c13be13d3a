"""The rollout controller on a real Azurite: it reads the router config and the logs the app
writes, writes the next config with a conditional write, and audits what took effect."""

from __future__ import annotations

import json
import time

import numpy as np
import orjson
import pytest
from azure.core.exceptions import ServiceRequestError
from azure.storage.blob import BlobServiceClient

from shared.ablog.blobs import AppendTarget, hour_prefix
from shared.ablog.record import PredictionRecord
from shared.models.blob_source import BlobSource
from shared.models.store import ModelStore
from shared.rollout.audit import AuditLog
from shared.rollout.controller import RolloutController
from tests.azurite_support import new_container
from tests.conftest import upload

CONFIG = "config/router.json"


def config_doc(state=None, candidate_model="churn", **rollout):
    block = {"control": "control", "candidate": "candidate", "steps": [5, 50], "min_minutes": 0,
             "min_requests": 50, "guardrails": {"min_requests": 30}, **rollout}
    weights = {"control": 100, "candidate": 0}
    if state:
        block["state"] = state
        weights = state.get("weights", weights)
    return {"endpoints": {"churn": {
        "variants": [{"name": "control", "model": "churn_v1", "weight": weights["control"]},
                     {"name": "candidate", "model": candidate_model, "weight": weights["candidate"]}],
        "sticky": {"header": "x-user-id"}, "log": {"sample": 1.0}, "rollout": block}}}


def running(share=5, step=0, minutes=30):
    now = time.time()
    from shared.ablog.times import iso_time
    return {"status": "running", "step": step, "started": iso_time(now - 3600),
            "step_started": iso_time(now - 60 * minutes),
            "weights": {"control": 100 - share, "candidate": share}}


@pytest.fixture
def rig(container, blob_service, demo_models):
    upload(container, "churn.txt", demo_models["churn"].path)
    upload(container, "churn_v1.txt", demo_models["churn_v1"].path)
    logs = new_container(blob_service, prefix="log")
    outcomes = new_container(blob_service, prefix="out")

    class Rig:
        models = container
        predictions = logs
        audit = AuditLog(logs)

        def controller(self, **options):
            store = ModelStore(BlobSource(container, 64 << 20), refresh_seconds=3600)
            return RolloutController(container.get_blob_client(CONFIG), predictions=logs,
                                     outcomes=outcomes, audit=AuditLog(logs), store=store,
                                     **options)

        def set_config(self, doc):
            container.upload_blob(CONFIG, json.dumps(doc), overwrite=True)

        def config(self):
            return orjson.loads(container.download_blob(CONFIG).readall())

        def log(self, variant, n, *, failures=0, latency_ms=5.0, start=0):
            target = AppendTarget(logs, "test")
            lines = []
            t = time.time() - 60
            for i in range(n):
                failed = i < failures
                record = PredictionRecord(
                    time=t, endpoint="churn", request_id=f"{variant}-{start + i}",
                    key=f"user-{variant}-{start + i}", trigger="http", variant=variant,
                    model_name="m", model_version="1", objective="binary", rows=0 if failed else 1,
                    predictions=None if failed else np.array([0.3 + 0.001 * (i % 50)]),
                    latency_ms=latency_ms, error="model_unavailable" if failed else None)
                lines.append(record.json_line(1 << 20))
            target.append(hour_prefix("churn", t), b"".join(lines))

    yield Rig()
    logs.delete_container()
    outcomes.delete_container()


def test_a_pending_rollout_is_started_and_audited(rig):
    rig.set_config(config_doc())
    runs = rig.controller().run()
    assert [(r.endpoint, r.decision.action, r.applied) for r in runs] == [("churn", "start", True)]
    ep = rig.config()["endpoints"]["churn"]
    assert [v["weight"] for v in ep["variants"]] == [95, 5]
    assert ep["rollout"]["state"]["status"] == "running" and ep["rollout"]["state"]["step"] == 0
    assert ep["sticky"] == {"header": "x-user-id"}  # the rest of the document as it was
    audit = rig.audit.read("churn")
    assert [a["action"] for a in audit] == ["start"] and audit[0]["config_version"]


def test_two_controllers_racing_make_one_decision(rig):
    rig.set_config(config_doc())
    first, second = rig.controller(), rig.controller()
    stored = second.read()  # the second read the same version before the first wrote
    assert first.run()[0].applied
    second.read = lambda: stored  # type: ignore[method-assign]
    runs = second.run()
    assert [(r.decision.action, r.applied) for r in runs] == [("start", False)]
    assert [a["action"] for a in rig.audit.read("churn")] == ["start"]


def test_a_healthy_step_advances_and_a_failing_candidate_is_rolled_back(rig):
    rig.set_config(config_doc(running()))
    rig.log("control", 200)
    rig.log("candidate", 200)
    assert rig.controller().run()[0].decision.action == "advance"
    ep = rig.config()["endpoints"]["churn"]
    assert [v["weight"] for v in ep["variants"]] == [50, 50]
    # The next step starts now: its figures are new. The candidate now fails 20% of requests.
    rig.log("control", 100, start=1000)
    rig.log("candidate", 100, failures=20, start=1000)
    doc = rig.config()
    doc["endpoints"]["churn"]["rollout"]["state"]["step_started"] = "2000-01-01T00:00:00Z"
    rig.set_config(doc)
    run = rig.controller().run()[0]
    assert run.decision.action == "rollback" and "error rate increase" in run.decision.reason
    ep = rig.config()["endpoints"]["churn"]
    assert [v["weight"] for v in ep["variants"]] == [100, 0]
    assert ep["rollout"]["state"]["status"] == "rolled_back"
    assert "error rate increase" in ep["rollout"]["state"]["reason"]
    assert [a["action"] for a in rig.audit.read("churn")] == ["advance", "rollback"]
    assert rig.controller().run() == []  # a finished rollout is left alone


def test_a_candidate_whose_model_does_not_load_is_rolled_back(rig):
    rig.models.upload_blob("broken.txt", b"tree\nversion=v4\nnot a model", overwrite=True)
    rig.set_config(config_doc(running(), candidate_model="broken"))
    run = rig.controller().run()[0]
    assert run.decision.action == "rollback" and "cannot be loaded" in run.decision.reason
    # It leaves the variants: the app refuses a config naming a model that does not load.
    ep = rig.config()["endpoints"]["churn"]
    assert [(v["name"], v["weight"]) for v in ep["variants"]] == [("control", 100)]
    assert ep["rollout"]["state"]["status"] == "rolled_back"


def test_weights_edited_by_a_person_pause_the_rollout(rig):
    doc = config_doc(running())
    doc["endpoints"]["churn"]["variants"][1]["weight"] = 40  # the state says 5
    rig.set_config(doc)
    run = rig.controller().run()[0]
    assert run.decision.action == "pause"
    ep = rig.config()["endpoints"]["churn"]
    assert ep["rollout"]["state"]["status"] == "paused"
    assert [v["weight"] for v in ep["variants"]] == [95, 40]  # the person's weights stay


def test_a_run_that_cannot_read_storage_changes_nothing_and_raises(rig, azurite):
    rig.set_config(config_doc(running()))
    before = rig.models.get_blob_client(CONFIG).get_blob_properties().etag
    dead = BlobServiceClient.from_connection_string(
        azurite.connection_string.replace(str(azurite.blob_port), "9"), connection_timeout=1,
        retry_total=0)
    controller = rig.controller()
    controller.predictions = dead.get_container_client(rig.predictions.container_name)
    with pytest.raises(ServiceRequestError):
        controller.run()
    assert rig.models.get_blob_client(CONFIG).get_blob_properties().etag == before


def test_an_invalid_stored_config_is_left_alone(rig):
    rig.set_config({"endpoints": {"churn": {"variants": []}}})
    assert rig.controller().run() == []
