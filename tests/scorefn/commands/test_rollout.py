"""``python -m scorefn rollout``: start a candidate's rollout in the stored config, show where it
stands, and pause, resume or abort it, each written over the version read."""

from __future__ import annotations

import json

import orjson
import pytest

from scorefn.__main__ import main as cli
from tests.azurite_support import unique
from tests.conftest import upload

CONFIG = "config/router.json"
ONE = {"endpoints": {"churn": {"variants": [{"name": "control", "model": "churn_v1"}],
                              "sticky": {"header": "x-user-id"}}}}


@pytest.fixture
def rig(container, demo_models, azurite, monkeypatch):
    for name in ("churn", "churn_v1"):
        upload(container, f"{name}.txt", demo_models[name].path)
    container.upload_blob(CONFIG, json.dumps(ONE))
    # The logs' containers: fresh names (this process's settings, as the app reads them).
    monkeypatch.setenv("PREDICTION_LOG_CONTAINER", unique("log"))
    monkeypatch.setenv("OUTCOME_LOG_CONTAINER", unique("out"))

    def run(*args: str) -> int:
        action, *rest = args
        return cli(["rollout", action, *rest, "--container", container.container_name,
                    "--connection-string", azurite.connection_string])

    def config():
        return orjson.loads(container.download_blob(CONFIG).readall())

    return run, config


def test_start_adds_the_candidate_at_its_first_step_and_turns_the_log_on(rig, capsys):
    run, config = rig
    assert run("start", "churn", "--model", "churn", "--steps", "10,50",
               "--metric", "log_loss", "--min-effect", "0.01") == 0
    ep = config()["endpoints"]["churn"]
    assert [(v["name"], v["model"], v["weight"]) for v in ep["variants"]] == \
        [("control", "churn_v1", 90), ("candidate", "churn", 10)]
    assert ep["rollout"]["state"]["status"] == "running"
    assert ep["rollout"]["decision"] == {"metric": "log_loss", "min_effect": 0.01, "alpha": 0.05}
    assert ep["log"] == {"sample": 1.0}
    assert "gets 10%, then 50%" in capsys.readouterr().out


def test_start_refuses_a_model_that_does_not_load_and_a_second_rollout(rig, capsys):
    run, config = rig
    assert run("start", "churn", "--model", "nothing_here") == 1
    assert "model_not_found" in capsys.readouterr().out
    assert config() == ONE  # nothing written
    assert run("start", "churn", "--model", "churn") == 0
    assert run("start", "churn", "--model", "churn") == 1
    assert "has a rollout running already" in capsys.readouterr().err


def test_status_shows_the_step_each_guardrail_and_the_next_decision(rig, capsys):
    run, _ = rig
    assert run("start", "churn", "--model", "churn", "--min-minutes", "0") == 0
    capsys.readouterr()
    assert run("status", "churn") == 0
    out = capsys.readouterr().out
    assert "rollout of churn: candidate against control, status running" in out
    assert "step 1 of 3 (5, 25, 50%): candidate share 5%" in out
    assert "error rate increase" in out and "p99 latency ratio" in out and "not judged yet" in out
    assert "next: hold" in out  # no traffic logged yet
    assert "when: the controller's next run, " in out and "UTC" in out


def test_pause_resume_and_abort_set_the_status_and_the_weights(rig, capsys):
    run, config = rig
    assert run("start", "churn", "--model", "churn", "--steps", "20") == 0
    assert run("pause", "churn") == 0
    assert config()["endpoints"]["churn"]["rollout"]["state"]["status"] == "paused"
    assert run("resume", "churn") == 0
    ep = config()["endpoints"]["churn"]
    assert ep["rollout"]["state"]["status"] == "running"
    assert [v["weight"] for v in ep["variants"]] == [80, 20]
    assert run("abort", "churn", "--reason", "wrong model") == 0
    ep = config()["endpoints"]["churn"]
    assert ep["rollout"]["state"]["status"] == "aborted"
    assert ep["rollout"]["state"]["reason"] == "wrong model"
    assert [v["weight"] for v in ep["variants"]] == [100, 0]
    assert run("pause", "churn") == 1
    assert "no active rollout" in capsys.readouterr().err
