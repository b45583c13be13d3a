"""Models trained from pandas DataFrames over real HTTP to the local host serving
function_app.py: records under the DataFrame's own names and values score as
``Booster.predict(DataFrame)`` (the scoring itself: tests/scoring/test_dataframe_models.py)."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from devhost.process import DevHost
from tests.azurite_support import new_container
from tests.conftest import upload
from tests.scoring.test_dataframe_models import as_records, booster, new_customers

ROOT = Path(__file__).resolve().parents[2]
FUNCTION_KEY = "df-function-key"


@pytest.fixture(scope="module")
def host(azurite, demo_models):

    container = new_container(azurite.connection_string, f"df{uuid.uuid4().hex[:12]}")
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


def test_tritonclient_with_its_defaults_and_bytes_tensors_scores_as_booster_predict(
        host, demo_models):
    """tritonclient's own HTTP client, binary data as it defaults to: one tensor per column,
    named as the DataFrame names it, category columns as BYTES tensors of their values."""
    import tritonclient.http as httpclient

    frame = new_customers()
    records = as_records(frame)
    inputs = []
    for column in frame.columns:
        values = [r[column] for r in records]
        if isinstance(frame[column].dtype, pd.CategoricalDtype):
            tensor = httpclient.InferInput(column, [len(values)], "BYTES")
            # Missing values are sent as what they are in the app: no value (an empty string is
            # not a category either, so it is read as missing too).
            tensor.set_data_from_numpy(np.array([v or "" for v in values], dtype=np.object_))
        else:
            tensor = httpclient.InferInput(column, [len(values)], "FP64")
            tensor.set_data_from_numpy(np.array(values, dtype=np.float64))
        inputs.append(tensor)
    with httpclient.InferenceServerClient(url=host.url.removeprefix("http://") + "/api") as c:
        result = c.infer("plans", inputs, headers={"x-functions-key": FUNCTION_KEY})
    response = result.get_response()
    assert response["outputs"][0]["parameters"]["binary_data_size"] == len(frame) * 8  # binary
    np.testing.assert_array_equal(result.as_numpy("predict"),
                                  booster(demo_models, "plans").predict(frame))


def test_a_csv_batch_job_with_the_dataframes_header_and_values_scores_as_booster_predict(
        azurite, demo_models):
    """The same customers as the CSV file pandas writes (its header with spaces, category
    values, empty cells for missing), scored as a queue job through the real storage."""
    from tests.batch_support import make_rig, read_csv

    frame = new_customers()
    csv = frame.assign(contract=[r["contract"] for r in as_records(frame)]).to_csv(index=False)
    assert "weekly" in csv and "monthly charges" in csv.splitlines()[0]
    rig = make_rig(azurite, demo_models, models=("plans",))
    try:
        rig.upload("inputs/customers.csv", csv.encode())
        outcome = rig.run({"id": "customers", "endpoint": "plans",
                           "input": {"blob": "inputs/customers.csv"}})
        assert outcome.status == "succeeded", outcome.result
        header, rows = read_csv(rig.download("predictions/customers.csv"))
        got = np.array([float(row[header.index("prediction")]) for row in rows])
        np.testing.assert_array_equal(got, booster(demo_models, "plans").predict(frame))
        assert outcome.result["unseen_categories"] == {"contract": 1}  # "weekly"
    finally:
        rig.cleanup()
