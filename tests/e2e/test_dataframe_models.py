"""Models trained from pandas DataFrames over real HTTP to the local host serving
function_app.py: records under the DataFrame's own names and values score as
``Booster.predict(DataFrame)`` (the scoring itself: tests/scoring/test_dataframe_models.py)."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import numpy as np
import pytest

from devhost.process import DevHost
from tests.conftest import upload
from tests.scoring.test_dataframe_models import as_records, booster, new_customers

ROOT = Path(__file__).resolve().parents[2]
FUNCTION_KEY = "df-function-key"


@pytest.fixture(scope="module")
def host(azurite, demo_models):
    from azure.storage.blob import BlobServiceClient

    container = BlobServiceClient.from_connection_string(azurite.connection_string) \
        .get_container_client(f"df{uuid.uuid4().hex[:12]}")
    container.create_container()
    for name in ("plans", "cancer"):
        upload(container, f"{name}.txt", demo_models[name].path)
    env = {"AzureWebJobsStorage": azurite.connection_string,
           "MODEL_CONTAINER": container.container_name, "DEVHOST_FUNCTION_KEY": FUNCTION_KEY,
           "SCORE_QUEUE_NAME": f"q{uuid.uuid4().hex[:12]}", "RESULTS_QUEUE_NAME": "unused"}
    with DevHost(ROOT, env, queues=False) as server:
        yield server


def test_over_http_the_dataframes_records_score_as_booster_predict(host, demo_models):
    frame = new_customers()
    with httpx.Client(base_url=host.url, headers={"x-functions-key": FUNCTION_KEY},
                      timeout=30) as client:
        answer = client.post("/api/score/plans", json={"records": as_records(frame)})
        assert answer.status_code == 200, answer.text
        np.testing.assert_array_equal(np.array(answer.json()["predictions"]),
                                      booster(demo_models, "plans").predict(frame))
        wrong = client.post("/api/score/plans", json={"records": [{"contract": 0}]})
        assert wrong.status_code == 400
        assert wrong.json()["error"] == "invalid_category_value"
        assert "month" in wrong.json()["message"]  # names the categories it takes
