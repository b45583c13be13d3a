"""Served rows counted in process and written by each instance: every scoring path's rows,
bounded memory, failed writes retried with the hour's totals, never a raw value stored.
Real Azurite, real demo models."""

from __future__ import annotations

import time
import uuid

import numpy as np
import orjson
import pytest
from azure.storage.blob import BlobServiceClient

from scorefn.demo.models import churn_features
from shared.models.blob_source import BlobSource
from shared.models.store import ModelStore
from shared.monitoring.blobs import ServedBlob, hour_of
from shared.monitoring.collector import PENDING_FULL, Collector
from shared.monitoring.references import Binnings
from shared.scoring.service import ScoringService
from shared.settings import Settings
from tests.azurite_support import new_container
from tests.conftest import upload

MB = 1024 * 1024


@pytest.fixture
def monitoring(blob_service):
    client = new_container(blob_service, f"m{uuid.uuid4().hex[:20]}")
    yield client
    client.delete_container()


def make_service(models, monitoring, target_factory=None, **collector_kwargs) -> ScoringService:
    store = ModelStore(BlobSource(models, 64 * MB), refresh_seconds=3600)
    collector = Collector(target_factory or (lambda: monitoring), Binnings(lambda: models),
                          flush_seconds=3600, **collector_kwargs)
    return ScoringService(Settings.from_env({}), store, monitor=collector)


def served(monitoring) -> list[ServedBlob]:
    return [ServedBlob.decode(monitoring.get_blob_client(b.name).download_blob().readall())
            for b in monitoring.list_blobs(name_starts_with="served/")]


def rows(n: int, seed: int = 1) -> np.ndarray:
    return churn_features(n, np.random.default_rng(seed))


def body(X: np.ndarray) -> bytes:
    return orjson.dumps({"rows": [[None if np.isnan(v) else float(v) for v in r] for r in X]})


def test_every_scored_row_is_counted_once_in_one_blob_per_endpoint_and_hour(
        container, monitoring, demo_models):
    upload(container, "churn.txt", demo_models["churn"].path)
    service = make_service(container, monitoring)
    X = rows(60)
    for i in range(0, 60, 3):  # single rows and small batches, direct and parsed bodies
        service.score("churn", body(X[i:i + 3]))
    service.score("churn", orjson.dumps({"rows": [[0] * 8], "options": {"raw_score": True}}))
    assert service.monitor.flush() == 1
    [blob] = served(monitoring)
    assert blob.endpoint == "churn" and blob.hour == hour_of(time.time())
    [entry] = blob.entries
    assert entry.variant == "default" and entry.model == "churn"
    assert entry.binning.source == "model"  # no reference uploaded
    assert entry.profile.rows == 61
    # Raw scores are not predictions: their row counts for the features only.
    assert entry.profile.predicted_rows == 60
    assert entry.profile.missing[1] == np.isnan(X[:, 1]).sum()
    # Written again at the next flush with the hour's running totals, not a second blob.
    service.score("churn", body(X[:5]))
    service.monitor.flush()
    [blob] = served(monitoring)
    assert blob.entries[0].profile.rows == 66
    service.close()


def test_no_served_value_reaches_storage(container, monitoring, demo_models):
    upload(container, "churn.txt", demo_models["churn"].path)
    service = make_service(container, monitoring)
    X = rows(40, seed=9)
    X[:, 1] = np.round(X[:, 1], 6) + 0.123457  # values that cannot be an edge or a count
    service.score("churn", body(X))
    service.monitor.flush()
    stored = b"".join(monitoring.get_blob_client(b.name).download_blob().readall()
                      for b in monitoring.list_blobs())
    assert all(repr(float(v)).encode() not in stored for v in X[:, 1] if not np.isnan(v))
    service.close()


def test_a_full_backlog_drops_rows_and_counts_them_never_blocking(container, monitoring,
                                                                   demo_models):
    upload(container, "churn.txt", demo_models["churn"].path)
    service = make_service(container, monitoring, max_pending_rows=1000)
    service.monitor.count_pending = lambda: 0  # the counting thread is stuck
    X = rows(400)
    for _ in range(4):
        service.score("churn", body(X))
    # 800 rows wait; each later request of 400 would pass the bound of 1000.
    assert service.monitor.stats.dropped == {PENDING_FULL: 800}
    service.close()


def test_a_failed_write_loses_nothing_while_the_hour_lasts(container, demo_models, azurite):
    upload(container, "churn.txt", demo_models["churn"].path)
    blobs = BlobServiceClient.from_connection_string(azurite.connection_string)
    name = f"m{uuid.uuid4().hex[:20]}"
    target = blobs.get_container_client(name)
    failing = {"on": True}

    def factory():
        if failing["on"]:
            raise ConnectionError("storage is down")
        return target

    service = make_service(container, target, target_factory=factory)
    service.score("churn", body(rows(10)))
    assert service.monitor.flush() == 0 and service.monitor.stats.failed_writes == 1
    failing["on"] = False
    service.score("churn", body(rows(5)))
    assert service.monitor.flush() == 1  # the container is created when missing
    [blob] = served(target)
    assert blob.entries[0].profile.rows == 15 and service.monitor.stats.dropped == {}
    service.close()
    target.delete_container()


def test_monitoring_off_counts_nothing(container, demo_models):
    from shared.app import build_collector

    assert build_collector(Settings.from_env({"MONITOR_ENABLED": "false"}), container,
                           None) is None
    assert build_collector(Settings.from_env({}), container, None) is not None
