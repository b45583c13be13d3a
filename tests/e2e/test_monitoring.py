"""Drift monitoring end to end on the local host: the app counts what it serves over HTTP,
writes the counts, and its timer evaluates them against the model's reference profile; the
summary it writes names the feature whose units changed first. No raw value is stored."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import httpx
import numpy as np
import pytest

from devhost.process import DevHost
from scorefn.demo.models import CHURN_FEATURES, churn_features
from scorefn.monitoring.reference_data import build_reference
from shared.models.model import parse_model
from shared.monitoring.blobs import latest_summary, write_reference
from tests.azurite_support import new_container
from tests.batch_support import to_csv
from tests.conftest import upload

ROOT = Path(__file__).resolve().parents[2]
KEY = "monitoring-key"


@pytest.fixture(scope="module")
def rig(azurite, demo_models, tmp_path_factory):
    models = new_container(azurite.connection_string, f"mmod{uuid.uuid4().hex[:10]}")
    monitoring = new_container(azurite.connection_string, f"mmon{uuid.uuid4().hex[:10]}")
    data = demo_models["churn"].path.read_bytes()
    upload(models, "churn.txt", data)
    csv = tmp_path_factory.mktemp("reference") / "validation.csv"
    csv.write_bytes(to_csv(churn_features(5000, np.random.default_rng(4)), CHURN_FEATURES))
    model = parse_model(data, name="churn", path="churn.txt", version="", last_modified=None)
    write_reference(models, "churn.txt", build_reference(csv, model)[0])
    env = {"AzureWebJobsStorage": azurite.connection_string, "MODEL_CONTAINER": models.container_name,
           "MONITOR_CONTAINER": monitoring.container_name, "MONITOR_FLUSH_SECONDS": "1",
           "MONITOR_SCHEDULE": "*/2 * * * * *", "DEVHOST_FUNCTION_KEY": KEY,
           "SCORE_QUEUE_NAME": "unused", "RESULTS_QUEUE_NAME": "unused"}
    host = DevHost(ROOT, env, queues=False).start()
    yield host, monitoring
    host.stop()


def test_the_timer_names_the_feature_whose_units_changed(rig):
    host, monitoring = rig
    X = churn_features(1500, np.random.default_rng(21))
    X[::3, CHURN_FEATURES.index("usage_gb")] *= 1024  # one client sends megabytes
    with httpx.Client(base_url=host.url, headers={"x-functions-key": KEY}, timeout=30) as client:
        for i in range(0, len(X), 25):
            rows = [[None if np.isnan(v) else float(v) for v in r] for r in X[i:i + 25]]
            assert client.post("/api/score/churn", json={"rows": rows}).status_code == 200
    deadline = time.monotonic() + 60
    summary = None
    while time.monotonic() < deadline:
        summary = latest_summary(monitoring, "churn")
        if summary is not None and summary.comparisons[0].served_rows == len(X):
            break
        time.sleep(0.5)
    assert summary is not None, "the timer wrote no summary"
    [comparison] = summary.comparisons
    assert comparison.served_rows == len(X) and comparison.against == "reference"
    assert comparison.worst.name == "usage_gb" and comparison.worst.drifted
    assert [f.name for f in comparison.features if f.drifted] == ["usage_gb"]
    # Counts only: no served value is in any stored blob.
    stored = b"".join(monitoring.download_blob(b.name).readall()
                      for b in monitoring.list_blobs(name_starts_with="served/"))
    assert stored and all(repr(float(v)).encode() not in stored
                          for v in X[:200, 1] if not np.isnan(v))
