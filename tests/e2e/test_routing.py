"""The router end to end: A/B splits, sticky keys across hosts, overrides, shadows and hot
reload of the config blob, over real HTTP to the local host with models in Azurite."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import httpx
import lightgbm as lgb
import numpy as np
import pytest

from devhost.process import DevHost
from tests.azurite_support import new_container
from tests.conftest import upload

ROOT = Path(__file__).resolve().parents[2]
KEY = "routing-key"
ROW = [12, 70.5, 1, 12, 40, 33.2, 0, 5]


def config(**churn) -> bytes:
    endpoint = {"variants": [{"name": "control", "model": "churn/v1.txt", "weight": 50},
                             {"name": "candidate", "model": "churn/v2.txt", "weight": 50}],
                "sticky": {"header": "x-user-id"}}
    endpoint.update(churn)
    return json.dumps({"endpoints": {"churn": endpoint}}).encode()


@pytest.fixture(scope="module")
def models(azurite, demo_models):

    container = new_container(azurite.connection_string, f"route{uuid.uuid4().hex[:10]}")
    upload(container, "churn/v1.txt", demo_models["churn_v1"].path)
    upload(container, "churn/v2.txt", demo_models["churn"].path)
    upload(container, "config/router.json", config(allow_override=True))
    return container


def start_host(azurite, models) -> DevHost:
    env = {"AzureWebJobsStorage": azurite.connection_string, "MODEL_CONTAINER": models.container_name,
           "ROUTER_CONFIG_BLOB": "config/router.json", "ROUTER_REFRESH_SECONDS": "0.3",
           "DEVHOST_FUNCTION_KEY": KEY, "SCORE_QUEUE_NAME": "unused", "RESULTS_QUEUE_NAME": "unused"}
    return DevHost(ROOT, env, queues=False).start()


@pytest.fixture(scope="module")
def host(azurite, models):
    server = start_host(azurite, models)
    yield server
    server.stop()


@pytest.fixture
def client(host):
    with httpx.Client(base_url=host.url, headers={"x-functions-key": KEY}, timeout=30) as c:
        yield c


def score(client, headers=None):
    response = client.post("/api/score/churn", json={"rows": [ROW]}, headers=headers or {})
    assert response.status_code == 200, response.text
    return response.json()


REJECTED = "router config update rejected"


@pytest.fixture
def set_config(models, client, host):
    """Upload a config and wait until the host has taken it up (``/api/endpoints`` shows its
    version) or refused it (a new "rejected" line in its log)."""
    def put(data: bytes) -> None:
        refused_before = host.log_path.read_text().count(REJECTED)
        blob = models.get_blob_client("config/router.json")
        etag = blob.upload_blob(data, overwrite=True)["etag"]

        def settled() -> bool:
            client.post("/api/score/churn", json={"rows": [ROW]})  # a due refresh starts on one
            version = client.get("/api/endpoints").json()["config"]["version"] or ""
            return version.strip('"') == etag.strip('"') or \
                host.log_path.read_text().count(REJECTED) > refused_before

        deadline = time.monotonic() + 30
        while not settled():
            assert time.monotonic() < deadline, f"config neither used nor refused:\n{host.log_tail()}"
            time.sleep(0.1)
    return put


def test_the_response_names_the_variant_and_its_model(client, demo_models):
    doc = score(client, {"x-user-id": "alice"})
    expected_model = {"control": "churn/v1.txt", "candidate": "churn/v2.txt"}[doc["variant"]]
    assert doc["model"]["name"] == expected_model
    demo = demo_models["churn_v1" if doc["variant"] == "control" else "churn"]
    assert doc["predictions"] == lgb.Booster(model_file=str(demo.path)).predict(np.array([ROW])).tolist()


def test_requests_without_a_key_split_by_weight(client):
    n = 400
    candidate = sum(score(client)["variant"] == "candidate" for _ in range(n))
    assert abs(candidate - n / 2) < 4 * (n * 0.25) ** 0.5  # within 4 sd of 50/50


def test_a_sticky_key_gets_the_same_variant_on_every_host(azurite, models, host, client):
    keys = [f"user-{i}" for i in range(60)]
    first = {k: score(client, {"x-user-id": k})["variant"] for k in keys}
    assert set(first.values()) == {"control", "candidate"}
    again = {k: score(client, {"x-user-id": k})["variant"] for k in keys}
    assert again == first
    other = start_host(azurite, models)
    try:
        with httpx.Client(base_url=other.url, headers={"x-functions-key": KEY}) as c2:
            assert {k: score(c2, {"x-user-id": k})["variant"] for k in keys} == first
    finally:
        other.stop()


def test_a_caller_may_pin_a_variant_only_when_the_config_allows(client, set_config):
    assert score(client, {"x-scorefn-variant": "candidate"})["variant"] == "candidate"
    response = client.post("/api/score/churn", json={"rows": [ROW]},
                           headers={"x-scorefn-variant": "nope"})
    assert response.status_code == 400 and response.json()["error"] == "unknown_variant"
    set_config(config(allow_override=False))
    response = client.post("/api/score/churn", json={"rows": [ROW]},
                           headers={"x-scorefn-variant": "candidate"})
    assert response.status_code == 403 and response.json()["error"] == "override_not_allowed"
    set_config(config(allow_override=True))


def test_shadows_never_change_the_answer_even_when_they_fail(models, client, host, set_config,
                                                            demo_models):
    pinned = {"x-scorefn-variant": "control"}
    before = score(client, pinned)
    shadowed = config(allow_override=True, shadow=[
        {"name": "next", "model": "churn/v2.txt", "fraction": 1.0}])
    set_config(shadowed)
    with_shadow = [score(client, pinned) for _ in range(20)]
    assert all(doc["predictions"] == before["predictions"] for doc in with_shadow)
    assert all(doc["variant"] == "control" for doc in with_shadow)
    # A shadow whose model cannot score these rows (another model's features: shadows need
    # not match the variants') fails off the request path: the caller never sees it.
    assert len(demo_models["price"].feature_names) != len(ROW)
    upload(models, "price.txt", demo_models["price"].path)
    failed = "shadow task failed: wrong_row_width"  # logged at most every few seconds
    failed_before = host.log_path.read_text().count(failed)
    set_config(config(allow_override=True, shadow=[
        {"name": "wrong", "model": "price", "fraction": 1.0}]))
    answers = [score(client, pinned) for _ in range(20)]
    assert all(doc["predictions"] == before["predictions"] for doc in answers)
    deadline = time.monotonic() + 15  # the shadows ran, and failed, after the answers
    while host.log_path.read_text().count(failed) == failed_before:
        assert time.monotonic() < deadline, host.log_tail()
        time.sleep(0.1)
    set_config(config(allow_override=True))


def test_a_changed_config_takes_effect_without_restart_and_a_bad_one_is_ignored(client,
                                                                               set_config):
    only_candidate = json.dumps({"endpoints": {"churn": {
        "variants": [{"name": "candidate", "model": "churn/v2.txt"}]}}}).encode()
    set_config(only_candidate)
    assert {score(client)["variant"] for _ in range(20)} == {"candidate"}
    for bad in (b"{not json", json.dumps({"endpoints": {"churn": {"variants": [
            {"name": "x", "model": "churn/v1.txt", "weight": -1}]}}}).encode(),
                json.dumps({"endpoints": {"churn": {"variants": [
                    {"name": "x", "model": "churn/missing.txt"}]}}}).encode()):
        set_config(bad)
        assert {score(client)["variant"] for _ in range(10)} == {"candidate"}
    set_config(config(allow_override=True))
    assert {score(client)["variant"] for _ in range(60)} == {"control", "candidate"}


def test_endpoints_lists_variants_weights_and_loaded_versions(client):
    score(client)
    doc = client.get("/api/endpoints").json()
    churn = next(e for e in doc["endpoints"] if e["name"] == "churn")
    assert [(v["name"], v["weight"]) for v in churn["variants"]] == [("control", 50), ("candidate", 50)]
    assert {m["blob"] for m in doc["loaded_models"]} >= {"churn/v1.txt", "churn/v2.txt"}
    assert all(m["version"] for m in doc["loaded_models"])


def test_a_variants_model_is_scored_on_its_own_by_its_name_with_a_slash(client, demo_models):
    # Router endpoint names have no "/": a name with one is always the model of that name,
    # taken whole by the route's catch-all, outside any experiment.
    response = client.post("/api/score/churn/v1.txt", json={"rows": [ROW]})
    assert response.status_code == 200, response.text
    doc = response.json()
    assert (doc["variant"], doc["model"]["name"]) == ("default", "churn/v1.txt")
    assert doc["predictions"] == lgb.Booster(model_file=str(demo_models["churn_v1"].path)).predict(
        np.array([ROW])).tolist()
    pinned = client.post("/api/score/churn/v1.txt", json={"rows": [ROW]},
                         headers={"x-scorefn-variant": "candidate"})
    assert (pinned.status_code, pinned.json()["error"]) == (403, "override_not_allowed")
