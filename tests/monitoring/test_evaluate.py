"""The drift evaluation: served counts merged over the window and compared with the model's
reference profile; a feature whose units changed on part of the traffic is named first, an
unshifted endpoint raises nothing, a model without a reference is checked against its
training ranges. Real Azurite, the demo churn model, its reference built by the CLI's code."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import numpy as np
import orjson
import pytest

from scorefn.demo.models import CHURN_FEATURES, churn_features
from scorefn.monitoring.reference_data import build_reference
from shared.models.blob_source import BlobSource
from shared.models.store import ModelStore
from shared.monitoring.blobs import latest_summary, write_reference
from shared.monitoring.collector import Collector
from shared.monitoring.evaluate import DriftMonitor, Thresholds
from shared.monitoring.references import Binnings
from shared.scoring.service import ScoringService
from shared.settings import Settings
from tests.azurite_support import new_container
from tests.batch_support import to_csv
from tests.conftest import upload

MB = 1024 * 1024


@pytest.fixture
def monitoring(blob_service):
    client = new_container(blob_service, f"m{uuid.uuid4().hex[:20]}")
    yield client
    client.delete_container()


@pytest.fixture
def churn_with_reference(container, demo_models, tmp_path):
    """The churn model in ``container`` with a reference profile of 20,000 rows."""
    upload(container, "churn.txt", demo_models["churn"].path)
    store = ModelStore(BlobSource(container, 64 * MB), refresh_seconds=3600)
    model, _ = store.get("churn")
    path = tmp_path / "validation.csv"
    path.write_bytes(to_csv(churn_features(20_000, np.random.default_rng(5)), CHURN_FEATURES))
    reference, total = build_reference(path, model)
    assert total == 20_000 and reference.profile.rows == 20_000
    write_reference(container, "churn.txt", reference)
    return store


def serve(store, container, monitoring, X: np.ndarray, endpoint: str = "churn") -> None:
    collector = Collector(lambda: monitoring, Binnings(lambda: container))
    service = ScoringService(Settings.from_env({}), store, monitor=collector)
    for i in range(0, len(X), 50):
        rows = [[None if np.isnan(v) else float(v) for v in r] for r in X[i:i + 50]]
        service.score(endpoint, orjson.dumps({"rows": rows}))
    collector.close()


def test_a_unit_change_on_part_of_the_traffic_is_named_first(churn_with_reference, container,
                                                              monitoring):
    X = churn_features(4000, np.random.default_rng(8))
    shifted = np.random.default_rng(9).random(len(X)) < 0.3
    X[shifted, 1] *= 100  # monthly_charges sent in cents by one upstream client
    serve(churn_with_reference, container, monitoring, X)
    drift = DriftMonitor(monitoring, container, Thresholds())
    summaries = drift.run()
    [summary] = summaries
    [comparison] = summary.comparisons
    assert comparison.against == "reference" and comparison.served_rows == 4000
    worst = comparison.worst
    assert worst is not None and worst.name == "monthly_charges" and worst.drifted
    assert worst.out_of_range.served == pytest.approx(shifted.mean(), abs=0.01)
    assert [f.name for f in comparison.features if f.drifted] == ["monthly_charges"]
    # The summary blob holds what the report and the A/B report read.
    stored = latest_summary(monitoring, "churn")
    assert stored is not None and stored.comparisons[0].worst.name == "monthly_charges"


def test_unshifted_traffic_raises_no_alarm(churn_with_reference, container, monitoring):
    serve(churn_with_reference, container, monitoring,
          churn_features(4000, np.random.default_rng(10)))
    [comparison] = DriftMonitor(monitoring, container, Thresholds()).evaluate("churn").comparisons
    assert comparison.against == "reference"
    assert not [f.name for f in comparison.features if f.drifted]
    assert comparison.predictions is not None and not comparison.predictions.drifted
    assert max(f.psi for f in comparison.features) < 0.05


def test_without_a_reference_the_training_ranges_still_catch_a_unit_change(
        container, monitoring, demo_models):
    upload(container, "churn.txt", demo_models["churn"].path)
    store = ModelStore(BlobSource(container, 64 * MB), refresh_seconds=3600)
    X = churn_features(2000, np.random.default_rng(11))
    X[:500, 5] *= 1000  # usage_gb sent in MB
    serve(store, container, monitoring, X)
    [comparison] = DriftMonitor(monitoring, container, Thresholds()).evaluate("churn").comparisons
    assert comparison.against == "model" and "no reference" in comparison.note
    assert comparison.worst.name == "usage_gb" and comparison.worst.drifted
    assert comparison.worst.out_of_range.served == pytest.approx(0.25, abs=0.01)


def test_the_window_leaves_out_older_hours(churn_with_reference, container, monitoring):
    serve(churn_with_reference, container, monitoring,
          churn_features(300, np.random.default_rng(12)))
    drift = DriftMonitor(monitoring, container, Thresholds(window_hours=1))
    later = datetime.now(UTC).replace(year=datetime.now(UTC).year + 1)
    assert drift.endpoints(later) == [] and drift.endpoints(datetime.now(UTC)) == ["churn"]


def test_two_variants_are_compared_with_their_references_and_with_each_other(
        container, monitoring, demo_models, tmp_path):
    """churn and churn_v1 behind one endpoint, references from the same validation rows."""
    store = ModelStore(BlobSource(container, 64 * MB), refresh_seconds=3600)
    path = tmp_path / "validation.csv"
    path.write_bytes(to_csv(churn_features(10_000, np.random.default_rng(5)), CHURN_FEATURES))
    for name in ("churn", "churn_v1"):
        upload(container, f"{name}.txt", demo_models[name].path)
        model, _ = store.get(name)
        write_reference(container, f"{name}.txt", build_reference(path, model)[0])
    collector = Collector(lambda: monitoring, Binnings(lambda: container))
    X = churn_features(7000, np.random.default_rng(13))
    # "default": the endpoint's traffic before its router config (the most rows, never a
    # baseline for the variants).
    for variant, name, rows in (("control", "churn_v1", X[:2000]), ("treatment", "churn", X[2000:4000]),
                                ("default", "churn", X[4000:])):
        model, _ = store.get(name)
        collector.observe("ab", variant, model.info, rows, model.predict(rows))
    collector.close()
    summary = DriftMonitor(monitoring, container, Thresholds()).evaluate("ab")
    against = sorted((c.variant, c.against) for c in summary.comparisons)
    assert against == [("control", "reference"), ("default", "reference"),
                       ("treatment", "reference"), ("treatment", "variant")]
    [between] = [c for c in summary.comparisons if c.against == "variant"]
    assert between.baseline_name == "control" and between.served_rows == 2000
    # The same traffic split at random: no feature differs between the variants.
    assert not [f.name for f in between.features if f.drifted]
    assert {p.variant for p in summary.timeline} == {"control", "treatment", "default"}


def test_a_damaged_served_blob_is_left_out_and_said_so(churn_with_reference, container,
                                                       monitoring):
    serve(churn_with_reference, container, monitoring,
          churn_features(500, np.random.default_rng(14)))
    [good] = [b.name for b in monitoring.list_blobs(name_starts_with="served/churn/")]
    hour = good.split("/")[2]
    for i, damage in enumerate((b"[]", b'{"format": 1, "entries": [{"profile": 3}]}', b"\xff")):
        monitoring.upload_blob(f"served/churn/{hour}/bad-{i}.json", damage)
    [comparison] = DriftMonitor(monitoring, container, Thresholds()).evaluate("churn").comparisons
    assert comparison.served_rows == 500
    assert "3 served blob(s) could not be read" in comparison.note
