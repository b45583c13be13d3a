"""The HTTP API end to end: real HTTP to the local Functions host serving function_app.py,
models in a real Azurite."""

from __future__ import annotations

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
FUNCTION_KEY = "test-function-key"
MASTER_KEY = "test-master-key"


@pytest.fixture(scope="module")
def models_container(azurite, demo_models):

    container = new_container(azurite.connection_string, f"http{uuid.uuid4().hex[:12]}")
    for name in ("churn", "price", "segment"):
        upload(container, f"{name}.txt", demo_models[name].path)
    upload(container, "team/churn.txt", demo_models["churn"].path)  # a name with "/"
    return container


@pytest.fixture(scope="module")
def host(azurite, models_container):
    env = {"AzureWebJobsStorage": azurite.connection_string,
           "MODEL_CONTAINER": models_container.container_name, "MODEL_REFRESH_SECONDS": "0.5",
           "MAX_REQUEST_BYTES": "200000", "MAX_ROWS_PER_REQUEST": "500",
           "DEVHOST_FUNCTION_KEY": FUNCTION_KEY, "DEVHOST_MASTER_KEY": MASTER_KEY,
           "SCORE_QUEUE_NAME": f"q{uuid.uuid4().hex[:12]}", "RESULTS_QUEUE_NAME": "unused-results"}
    with DevHost(ROOT, env, queues=False) as server:
        yield server


@pytest.fixture
def client(host):
    with httpx.Client(base_url=host.url, headers={"x-functions-key": FUNCTION_KEY}, timeout=30) as c:
        yield c


def rows_of(n_features, n=5, seed=0):
    X = np.random.default_rng(seed).normal(40, 25, size=(n, n_features))
    X[0, 1] = np.nan
    return X, [[None if np.isnan(v) else float(v) for v in row] for row in X]


def booster(demo_models, name):
    return lgb.Booster(model_file=str(demo_models[name].path))


class TestScore:
    @pytest.mark.parametrize("name", ["churn", "price", "segment"])
    def test_rows_are_scored_exactly_like_booster_predict(self, client, demo_models, name):
        X, rows = rows_of(len(demo_models[name].feature_names))
        response = client.post(f"/api/score/{name}", json={"rows": rows})
        assert response.status_code == 200
        doc = response.json()
        assert np.array_equal(np.array(doc["predictions"]), booster(demo_models, name).predict(X))
        assert doc["model"]["name"] == name and doc["model"]["version"]
        assert doc["request_id"] == response.headers["x-request-id"]
        assert response.headers["content-type"].startswith("application/json")

    def test_a_single_row_uses_the_same_numbers(self, client, demo_models):
        X, rows = rows_of(8, n=1, seed=3)
        doc = client.post("/api/score/churn", json={"rows": rows}).json()
        assert doc["predictions"] == booster(demo_models, "churn").predict(X).tolist()

    def test_records_and_options(self, client, demo_models):
        names = demo_models["churn"].feature_names
        X, _ = rows_of(8, n=3, seed=4)
        records = [{f: float(v) for f, v in zip(names, row) if not np.isnan(v)} for row in X]
        doc = client.post("/api/score/churn", json={"records": records,
                                                    "options": {"raw_score": True}}).json()
        assert doc["predictions"] == booster(demo_models, "churn").predict(X, raw_score=True).tolist()

    def test_the_callers_request_id_is_echoed(self, client):
        response = client.post("/api/score/price", json={"rows": [[1] * 6]},
                               headers={"x-request-id": "abc-123"})
        assert response.headers["x-request-id"] == "abc-123"
        assert response.json()["request_id"] == "abc-123"


class TestV2:
    def test_infer_equals_booster_predict(self, client, demo_models):
        X, rows = rows_of(4, n=4, seed=8)
        body = {"id": "r1", "inputs": [{"name": "input-0", "shape": [4, 4], "datatype": "FP64",
                                        "data": rows}]}
        response = client.post("/api/v2/models/segment/infer", json=body)
        assert response.status_code == 200
        doc = response.json()
        assert doc["model_name"] == "segment" and doc["id"] == "r1"
        out = doc["outputs"][0]
        expected = booster(demo_models, "segment").predict(X)
        assert out["shape"] == [4, 3]
        assert np.array_equal(np.array(out["data"]).reshape(4, 3), expected)

    def test_metadata(self, client, demo_models):
        doc = client.get("/api/v2/models/churn").json()
        assert doc["name"] == "churn" and doc["platform"] == "lightgbm"
        assert doc["inputs"][0]["parameters"]["feature_names"] == list(demo_models["churn"].feature_names)

    def test_health_routes_are_anonymous(self, host):
        assert httpx.get(f"{host.url}/api/v2/health/live").json() == {"live": True}
        ready = httpx.get(f"{host.url}/api/v2/health/ready")
        assert ready.status_code == 200 and ready.json()["ready"] is True


class TestTritonClient:
    """tritonclient's own HTTP client with its defaults: inputs and outputs as binary tensor
    data (the binary data extension), names quoted with "/" kept."""

    @pytest.fixture
    def triton(self, host):
        import tritonclient.http as httpclient

        with httpclient.InferenceServerClient(url=host.url.removeprefix("http://") + "/api") as c:
            yield c

    KEY = {"x-functions-key": FUNCTION_KEY}

    @pytest.mark.parametrize("name,demo", [("churn", "churn"), ("price", "price"),
                                           ("segment", "segment"), ("team/churn", "churn")])
    def test_binary_infer_equals_booster_predict(self, triton, demo_models, name, demo):
        import tritonclient.http as httpclient

        X, _ = rows_of(len(demo_models[demo].feature_names), n=6, seed=21)  # a NaN in row 0
        tensor = httpclient.InferInput("input-0", list(X.shape), "FP64")
        tensor.set_data_from_numpy(X)  # binary_data=True: the default
        result = triton.infer(name, [tensor], request_id="t-1", headers=self.KEY)
        got = result.as_numpy("predict")
        want = booster(demo_models, demo).predict(X)
        assert got.shape == want.shape and np.array_equal(got, want)
        response = result.get_response()
        assert (response["model_name"], response["id"]) == (name, "t-1")
        assert response["outputs"][0]["parameters"] == {"binary_data_size": want.size * 8}  # binary

    def test_fp32_columns_and_a_json_output_as_asked(self, triton, demo_models):
        import tritonclient.http as httpclient

        X, _ = rows_of(4, n=3, seed=22)
        names = demo_models["segment"].feature_names
        columns = []
        for j, feature in enumerate(names):  # one FP32 tensor per feature, binary
            column = httpclient.InferInput(feature, [3], "FP32")
            column.set_data_from_numpy(X[:, j].astype(np.float32))
            columns.append(column)
        wanted = [httpclient.InferRequestedOutput("predict", binary_data=False)]
        result = triton.infer("segment", columns, outputs=wanted, headers=self.KEY)
        output = result.get_response()["outputs"][0]
        assert "data" in output and "parameters" not in output  # JSON, as asked
        expected = booster(demo_models, "segment").predict(X.astype(np.float32).astype(np.float64))
        assert np.array_equal(result.as_numpy("predict"), expected)

    def test_the_clients_other_calls(self, triton, demo_models):
        assert triton.is_server_live() and triton.is_server_ready()
        assert "binary_tensor_data" in triton.get_server_metadata(headers=self.KEY)["extensions"]
        assert triton.is_model_ready("team/churn", headers=self.KEY)
        metadata = triton.get_model_metadata("team/churn", headers=self.KEY)
        assert metadata["name"] == "team/churn"
        assert metadata["inputs"][0]["parameters"]["feature_names"] == list(
            demo_models["churn"].feature_names)

    def test_errors_reach_the_client_with_their_code(self, triton):
        import tritonclient.http as httpclient
        from tritonclient.utils import InferenceServerException

        tensor = httpclient.InferInput("input-0", [1, 3], "FP64")
        tensor.set_data_from_numpy(np.ones((1, 3)))
        with pytest.raises(InferenceServerException) as caught:
            triton.infer("churn", [tensor], headers=self.KEY)
        assert (caught.value.status(), caught.value.message()) == ("400", "shape_mismatch")
        with pytest.raises(InferenceServerException) as caught:
            triton.infer("team/nope", [tensor], headers=self.KEY)
        assert (caught.value.status(), caught.value.message()) == ("404", "model_not_found")


class TestAuth:
    @pytest.mark.parametrize("route,method", [("/api/score/price", "POST"),
                                              ("/api/v2/models/price/infer", "POST"),
                                              ("/api/v2/models/price", "GET")])
    def test_scoring_routes_need_a_key(self, host, route, method):
        body = {"rows": [[1] * 6]}
        assert httpx.request(method, host.url + route, json=body).status_code == 401
        assert httpx.request(method, host.url + route, json=body,
                             headers={"x-functions-key": "wrong"}).status_code == 401
        for key in (FUNCTION_KEY, MASTER_KEY):
            ok = httpx.request(method, host.url + route, headers={"x-functions-key": key},
                               json=body if method == "POST" and "infer" not in route else
                               {"inputs": [{"name": "x", "shape": [1, 6], "datatype": "FP64",
                                            "data": [1] * 6}]} if method == "POST" else None)
            assert ok.status_code == 200, (route, key, ok.text)
        assert httpx.request(method, f"{host.url}{route}?code={FUNCTION_KEY}",
                             json=body if "score" in route else None).status_code != 401


class TestErrors:
    @pytest.mark.parametrize("body,code,status", [
        (b"{not json", "invalid_json", 400),
        (b'{"rows": [[1, 2]]}', "wrong_row_width", 400),
        (b'{"rows": [[1, "2", 3, 4, 5, 6]]}', "non_numeric_value", 400),
        (b'{"rows": []}', "empty_input", 400),
        (b'{"records": [{"sqft_typo": 1}]}', "unknown_feature", 400),
        (b'{"rows": [[1, 2, 3, 4, 5, 6]], "options": {"explain": true}}', "invalid_options", 400),
        (b'[1, 2, 3]', "invalid_payload", 400),
    ])
    def test_bad_bodies_are_4xx_with_a_json_error(self, client, body, code, status):
        response = client.post("/api/score/price", content=body,
                               headers={"content-type": "application/json"})
        assert response.status_code == status
        assert response.json()["error"] == code and response.json()["message"]
        assert "Traceback" not in response.text

    def test_unknown_model_is_404(self, client):
        response = client.post("/api/score/nope", json={"rows": [[1]]})
        assert response.status_code == 404 and response.json()["error"] == "model_not_found"

    def test_bad_model_name_is_400(self, client):
        response = client.post("/api/score/a%20b", json={"rows": [[1]]})
        assert response.status_code == 400 and response.json()["error"] == "invalid_name"

    def test_wrong_content_type_is_415(self, client):
        response = client.post("/api/score/price", content=b"1,2,3",
                               headers={"content-type": "text/csv"})
        assert response.status_code == 415 and response.json()["error"] == "unsupported_media_type"

    def test_too_many_rows_is_413(self, client):
        response = client.post("/api/score/price", json={"rows": [[1] * 6] * 501})
        assert response.status_code == 413 and response.json()["error"] == "too_many_rows"

    def test_oversized_body_is_413(self, client):
        response = client.post("/api/score/price", content=b" " * 200_001,
                               headers={"content-type": "application/json"})
        assert response.status_code == 413 and response.json()["error"] == "payload_too_large"

    def test_a_damaged_model_never_loaded_is_422(self, client, models_container):
        upload(models_container, "broken.txt", b"tree\nversion=v4\ngarbage")
        response = client.post("/api/score/broken", json={"rows": [[1]]})
        assert response.status_code == 422 and response.json()["error"] == "invalid_model"


def test_a_model_swapped_in_storage_is_served_without_restart(client, models_container, demo_models):
    upload(models_container, "swap.txt", demo_models["churn"].path)
    X, rows = rows_of(8, n=2, seed=11)
    first = client.post("/api/score/swap", json={"rows": rows}).json()
    assert first["predictions"] == booster(demo_models, "churn").predict(X).tolist()
    upload(models_container, "swap.txt", demo_models["churn_v1"].path)
    expected = booster(demo_models, "churn_v1").predict(X).tolist()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        doc = client.post("/api/score/swap", json={"rows": rows}).json()
        assert "predictions" in doc  # every request in between is answered
        if doc["model"]["version"] != first["model"]["version"]:
            break
        time.sleep(0.2)
    assert doc["predictions"] == expected


def test_storage_unreachable_for_a_model_never_loaded_is_503_with_retry_after(tmp_path):
    env = {"AzureWebJobsStorage": "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
                                  "AccountKey=ZmFrZQ==;BlobEndpoint=http://127.0.0.1:9/devstoreaccount1;",
           "STORAGE_TIMEOUT_SECONDS": "2", "DEVHOST_FUNCTION_KEY": FUNCTION_KEY,
           "SCORE_QUEUE_NAME": "unused", "RESULTS_QUEUE_NAME": "unused"}
    with DevHost(ROOT, env, queues=False) as server:
        response = httpx.post(f"{server.url}/api/score/churn", json={"rows": [[1]]},
                              headers={"x-functions-key": FUNCTION_KEY}, timeout=60)
    assert response.status_code == 503
    assert response.json()["error"] == "model_unavailable"
    assert int(response.headers["retry-after"]) > 0
