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
from tests.conftest import upload

ROOT = Path(__file__).resolve().parent.parent
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
    from azure.storage.blob import BlobServiceClient

    container = BlobServiceClient.from_connection_string(azurite.connection_string) \
        .get_container_client(f"route{uuid.uuid4().hex[:10]}")
    container.create_container()
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


def set_config(models, data: bytes, client) -> None:
    """Upload a config and wait until the host has revalidated it at least once."""
    upload(models, "config/router.json", data)
    time.sleep(1.0)
    for _ in range(3):  # a refresh starts on a request once due; let it run
        client.post("/api/score/churn", json={"rows": [ROW]})
        time.sleep(0.3)


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


def test_a_caller_may_pin_a_variant_only_when_the_config_allows(models, client):
    assert score(client, {"x-scorefn-variant": "candidate"})["variant"] == "candidate"
    response = client.post("/api/score/churn", json={"rows": [ROW]},
                           headers={"x-scorefn-variant": "nope"})
    assert response.status_code == 400 and response.json()["error"] == "unknown_variant"
    set_config(models, config(allow_override=False), client)
    response = client.post("/api/score/churn", json={"rows": [ROW]},
                           headers={"x-scorefn-variant": "candidate"})
    assert response.status_code == 403 and response.json()["error"] == "override_not_allowed"
    set_config(models, config(allow_override=True), client)


def test_shadows_never_change_the_answer_even_when_they_fail(models, client):
    pinned = {"x-scorefn-variant": "control"}
    before = score(client, pinned)
    shadowed = config(allow_override=True, shadow=[
        {"name": "next", "model": "churn/v2.txt", "fraction": 1.0}])
    set_config(models, shadowed, client)
    with_shadow = [score(client, pinned) for _ in range(20)]
    assert all(doc["predictions"] == before["predictions"] for doc in with_shadow)
    assert all(doc["variant"] == "control" for doc in with_shadow)
    # a shadow whose model is gone fails off the request path: the caller never sees it
    broken = config(allow_override=True, shadow=[
        {"name": "gone", "model": "churn/v3.txt", "fraction": 1.0}])
    upload(models, "churn/v3.txt", (models.download_blob("churn/v1.txt").readall()))
    set_config(models, broken, client)
    models.delete_blob("churn/v3.txt")
    time.sleep(1)
    assert all(score(client, pinned)["predictions"] == before["predictions"] for _ in range(20))
    set_config(models, config(allow_override=True), client)


def test_a_changed_config_takes_effect_without_restart_and_a_bad_one_is_ignored(models, client):
    only_candidate = json.dumps({"endpoints": {"churn": {
        "variants": [{"name": "candidate", "model": "churn/v2.txt"}]}}}).encode()
    set_config(models, only_candidate, client)
    assert {score(client)["variant"] for _ in range(20)} == {"candidate"}
    for bad in (b"{not json", json.dumps({"endpoints": {"churn": {"variants": [
            {"name": "x", "model": "churn/v1.txt", "weight": -1}]}}}).encode(),
                json.dumps({"endpoints": {"churn": {"variants": [
                    {"name": "x", "model": "churn/missing.txt"}]}}}).encode()):
        set_config(models, bad, client)
        assert {score(client)["variant"] for _ in range(10)} == {"candidate"}
    set_config(models, config(allow_override=True), client)
    assert {score(client)["variant"] for _ in range(60)} == {"control", "candidate"}


def test_endpoints_lists_variants_weights_and_loaded_versions(client):
    score(client)
    doc = client.get("/api/endpoints").json()
    churn = next(e for e in doc["endpoints"] if e["name"] == "churn")
    assert [(v["name"], v["weight"]) for v in churn["variants"]] == [("control", 50), ("candidate", 50)]
    assert {m["blob"] for m in doc["loaded_models"]} >= {"churn/v1.txt", "churn/v2.txt"}
    assert all(m["version"] for m in doc["loaded_models"])
