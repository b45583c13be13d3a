"""``upload-model --reference-data`` and ``python -m scorefn monitor``: a reference profile is
stored beside the model, served rows are compared with it, and the report names the feature
whose units changed first. Real Azurite, the demo churn model, the CLI's own entry point."""

from __future__ import annotations

import uuid

import numpy as np
import orjson
import pytest

from scorefn.__main__ import main as cli
from scorefn.demo.models import CHURN_FEATURES, churn_features
from shared.models.blob_source import BlobSource
from shared.models.store import ModelStore
from shared.monitoring.blobs import read_reference
from shared.monitoring.collector import Collector
from shared.monitoring.references import Binnings
from shared.scoring.service import ScoringService
from shared.settings import Settings
from tests.azurite_support import new_container
from tests.batch_support import to_csv

QUICK = ("--no-latency-check", "--no-compile")


@pytest.fixture
def monitoring(blob_service):
    client = new_container(blob_service, f"m{uuid.uuid4().hex[:20]}")
    yield client
    client.delete_container()


def upload(container, azurite, *args: str) -> int:
    return cli(["upload-model", *args, *QUICK, "--container", container.container_name,
                "--connection-string", azurite.connection_string])


def validation_csv(tmp_path, n: int = 5000, *, label: bool = False):
    X = churn_features(n, np.random.default_rng(2))
    columns = list(CHURN_FEATURES)
    if label:
        X = np.column_stack([X, np.arange(n) % 2])
        columns.append("churned")
    path = tmp_path / "validation.csv"
    path.write_bytes(to_csv(X, columns))
    return path


def test_upload_model_stores_a_reference_profile_beside_the_model(
        container, azurite, demo_models, tmp_path, capsys):
    data = validation_csv(tmp_path, label=True)
    assert upload(container, azurite, str(demo_models["churn"].path), "churn",
                  "--reference-data", str(data), "--reference-label", "churned") == 0
    out = capsys.readouterr().out
    assert "reference: 5,000 rows read, 5,000 profiled" in out
    assert f"{container.container_name}/churn.txt.reference.json" in out
    reference = read_reference(container, "churn.txt")
    assert reference is not None and reference.profile.rows == 5000
    assert reference.source == "validation.csv"
    assert [f.name for f in reference.binning.features] == list(CHURN_FEATURES)


def test_a_reference_file_the_batch_rules_refuse_uploads_nothing(
        container, azurite, demo_models, tmp_path, capsys):
    data = validation_csv(tmp_path, label=True)  # the label column, not named as such
    assert upload(container, azurite, str(demo_models["churn"].path), "churn",
                  "--reference-data", str(data)) == 1
    err = capsys.readouterr().err
    assert "reference refused" in err and "'churned' is not a feature" in err
    assert not container.get_blob_client("churn.txt").exists()
    parquet = tmp_path / "rows.parquet"
    parquet.write_bytes(b"PAR1")
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        assert upload(container, azurite, str(demo_models["churn"].path), "churn",
                      "--reference-data", str(parquet)) == 1
        assert "needs pyarrow" in capsys.readouterr().err


def test_monitor_names_the_shifted_feature_first(container, monitoring, azurite, demo_models,
                                                 tmp_path, capsys, monkeypatch):
    assert upload(container, azurite, str(demo_models["churn"].path), "churn",
                  "--reference-data", str(validation_csv(tmp_path))) == 0
    store = ModelStore(BlobSource(container, 64 * 1024 * 1024), refresh_seconds=3600)
    collector = Collector(lambda: monitoring, Binnings(lambda: container))
    service = ScoringService(Settings.from_env({}), store, monitor=collector)
    X = churn_features(3000, np.random.default_rng(3))
    X[::4, CHURN_FEATURES.index("age")] *= 12  # age sent in months by one client
    for i in range(0, len(X), 100):
        rows = [[None if np.isnan(v) else float(v) for v in r] for r in X[i:i + 100]]
        service.score("churn", orjson.dumps({"rows": rows}))
    collector.close()
    capsys.readouterr()
    out_dir = tmp_path / "reports"
    code = cli(["monitor", "--endpoint", "churn", "--out", str(out_dir), "--write-summary",
                "--monitor-container", monitoring.container_name,
                "--models-container", container.container_name,
                "--connection-string", azurite.connection_string])
    out = capsys.readouterr().out
    assert code == 0
    assert "default (churn) vs reference validation.csv: 3,000 rows, most drifted age" in out
    html = (out_dir / "monitor-churn.html").read_text(encoding="utf-8")
    assert "Most drifted: <code>age</code>" in html
    assert monitoring.get_blob_client("summaries/churn/latest.json").exists()


def test_monitor_without_counts_says_so(monitoring, container, azurite, tmp_path, capsys):
    code = cli(["monitor", "--out", str(tmp_path), "--monitor-container",
                monitoring.container_name, "--models-container", container.container_name,
                "--connection-string", azurite.connection_string])
    assert code == 1 and "no served counts" in capsys.readouterr().out
