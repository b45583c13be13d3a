"""Model names with "/" (``churn/v2``, as blobs and the CLI name them) over real HTTP to the
local host serving function_app.py, models in a real Azurite: the routes take them with
ASP.NET catch-all parameters, and what is no route stays the host's empty 404."""

from __future__ import annotations

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
KEY = "slash-key"
ROW = [12, 70.5, 1, 12, 40, 33.2, 0, 5]


@pytest.fixture(scope="module")
def models(azurite, demo_models):

    container = new_container(azurite.connection_string, f"slash{uuid.uuid4().hex[:10]}")
    upload(container, "churn/v2.txt", demo_models["churn"].path)
    upload(container, "team/a/churn_v1.txt", demo_models["churn_v1"].path)
    upload(container, "ready/infer.txt", demo_models["churn_v1"].path)  # operation words as names
    yield container
    container.delete_container()


@pytest.fixture(scope="module")
def host(azurite, models):
    env = {"AzureWebJobsStorage": azurite.connection_string, "MODEL_CONTAINER": models.container_name,
           "DEVHOST_FUNCTION_KEY": KEY, "SCORE_QUEUE_NAME": "unused", "RESULTS_QUEUE_NAME": "unused"}
    with DevHost(ROOT, env, queues=False) as server:
        yield server


@pytest.fixture
def client(host):
    with httpx.Client(base_url=host.url, headers={"x-functions-key": KEY}, timeout=30) as c:
        yield c


def expected(demo_models, demo: str, rows) -> list[float]:
    return lgb.Booster(model_file=str(demo_models[demo].path)).predict(np.array(rows)).tolist()


def v2_body(rows) -> dict:
    return {"inputs": [{"name": "input-0", "shape": [len(rows), 8], "datatype": "FP64",
                        "data": rows}]}


@pytest.mark.parametrize("name,demo", [("churn/v2", "churn"), ("team/a/churn_v1", "churn_v1"),
                                       ("churn/v2.txt", "churn")])
def test_score_takes_a_name_with_slashes(client, demo_models, name, demo):
    response = client.post(f"/api/score/{name}", json={"rows": [ROW]})
    assert response.status_code == 200, response.text
    doc = response.json()
    assert doc["predictions"] == expected(demo_models, demo, [ROW])
    assert doc["model"]["name"] == name and doc["request_id"] == response.headers["x-request-id"]


@pytest.mark.parametrize("name,demo", [("churn/v2", "churn"), ("team/a/churn_v1", "churn_v1")])
def test_the_v2_routes_take_a_name_with_slashes(client, demo_models, name, demo):
    rows = [ROW, [3, 20.0, 4, 1, 22, 80.0, 2, 0]]
    inferred = client.post(f"/api/v2/models/{name}/infer", json={"id": "r-1", **v2_body(rows)})
    assert inferred.status_code == 200, inferred.text
    doc = inferred.json()
    assert doc["model_name"] == name and doc["id"] == "r-1"
    assert doc["outputs"][0]["data"] == expected(demo_models, demo, rows)
    metadata = client.get(f"/api/v2/models/{name}")
    assert metadata.status_code == 200 and metadata.json()["name"] == name
    assert metadata.json()["inputs"][0]["shape"] == [-1, 8]
    ready = client.get(f"/api/v2/models/{name}/ready")
    assert (ready.status_code, ready.json()) == (200, {"name": name, "ready": True})


def test_the_operation_segment_matches_in_any_case_as_a_route_literal_did(client, demo_models):
    response = client.post("/api/v2/models/churn/v2/INFER", json=v2_body([ROW]))
    assert response.json()["outputs"][0]["data"] == expected(demo_models, "churn", [ROW])
    assert client.get("/api/v2/models/churn/v2/Ready").json() == {"name": "churn/v2", "ready": True}


def test_infer_and_ready_are_operations_only_as_the_last_segment(client, demo_models):
    # A model named ready/infer: inferred at .../ready/infer/infer, its metadata at .../ready/infer.
    response = client.post("/api/v2/models/ready/infer/infer", json=v2_body([ROW]))
    assert response.json()["outputs"][0]["data"] == expected(demo_models, "churn_v1", [ROW])
    assert client.get("/api/v2/models/ready/infer").json()["name"] == "ready/infer"
    assert client.get("/api/v2/models/ready/infer/ready").json()["ready"] is True
    # GET on an .../infer path is the metadata of the model of that name: here, none.
    missing = client.get("/api/v2/models/churn/v2/infer")
    assert (missing.status_code, missing.json()["error"]) == (404, "model_not_found")


def test_a_trailing_slash_is_ignored_as_before(client, demo_models):
    doc = client.post("/api/score/churn/v2/", json={"rows": [ROW]}).json()
    assert doc["model"]["name"] == "churn/v2"
    assert client.get("/api/v2/models/churn/v2/ready/").json() == {"name": "churn/v2", "ready": True}


@pytest.mark.parametrize("path", [
    "/api/score/churn%2Fv2",  # the host never decodes an escaped "/": the name has a "%"
    "/api/score/churn//v2", "/api/score/churn/v2//",  # "//" is no name
    "/api/score/a%20b/c",
])
def test_a_name_that_is_invalid_is_a_400_with_a_json_error(client, path):
    response = client.post(path, json={"rows": [ROW]})
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_name" and response.json()["message"]
    assert response.headers["x-request-id"]


def test_escaped_names_are_invalid_on_the_v2_routes_too(client):
    for response in (client.post("/api/v2/models/churn%2Fv2/infer", json=v2_body([ROW])),
                     client.get("/api/v2/models/churn%2Fv2"),
                     client.get("/api/v2/models/churn%2Fv2/ready")):
        assert (response.status_code, response.json()["error"]) == (400, "invalid_name")


def test_outcomes_take_the_rest_of_the_path_and_refuse_a_slash_in_an_endpoint(client):
    # Outcome endpoints are router endpoint names, which have no "/": the app says so.
    response = client.post("/api/outcomes/churn/v2", json={"outcomes": [{"key": "k", "label": 1}]})
    assert (response.status_code, response.json()["error"]) == (400, "invalid_name")


@pytest.mark.parametrize("method,path", [
    ("POST", "/api/score"), ("POST", "/api/score/"),  # no name
    ("POST", "/api/v2/models/churn/v2"), ("POST", "/api/v2/models/infer"),  # no "/infer" after a name
    ("GET", "/api/v2/models"), ("GET", "/api/v2/models/"),
    ("POST", "/api/outcomes"),
    ("PUT", "/api/v2/models/churn/v2/infer"), ("DELETE", "/api/v2/models/churn/v2"),
    ("GET", "/api/score/churn/v2"), ("GET", "/api/scores/churn"),
    ("POST", "/api//score/churn"), ("POST", "/api/score//churn"),  # "//" before the name
])
def test_what_is_no_route_stays_the_hosts_empty_404(host, method, path):
    response = httpx.request(method, host.url + path, headers={"x-functions-key": KEY},
                             json={"rows": [ROW]})
    assert (response.status_code, response.content) == (404, b""), response.text
    assert "x-request-id" not in response.headers


def test_a_name_with_slashes_still_needs_a_key(host):
    assert httpx.post(f"{host.url}/api/score/churn/v2", json={"rows": [ROW]}).status_code == 401
    assert httpx.get(f"{host.url}/api/v2/models/churn/v2/ready").status_code == 401
