"""Batch jobs' rows are counted exactly: a blob job scored in one invocation and the same job
fanned out in chunks give the same profile, and a redelivered chunk is not counted twice.
Real Azurite, the batch runner and the chunk queue (as tests/batch/fanout does)."""

from __future__ import annotations

import dataclasses
import uuid

import numpy as np
import orjson
import pytest

from shared.batch.runner import BatchJobs
from shared.monitoring.blobs import ServedBlob
from shared.monitoring.collector import Collector
from shared.monitoring.profile import merge
from shared.monitoring.references import Binnings
from shared.scoring.service import ScoringService
from tests.azurite_support import new_container
from tests.batch_support import rig, sample, to_csv  # noqa: F401

CHURN = ("tenure_months", "monthly_charges", "support_calls", "contract_months", "age",
         "usage_gb", "late_payments", "discount_pct")


@pytest.fixture
def monitoring(blob_service):
    client = new_container(blob_service, f"m{uuid.uuid4().hex[:20]}")
    yield client
    client.delete_container()


def runner(rig, monitoring, fanout_bytes: int) -> BatchJobs:
    models = rig.blobs.get_container_client(rig.settings.model_container)
    service = ScoringService(rig.settings, rig.jobs.service.store,
                             monitor=Collector(lambda: monitoring, Binnings(lambda: models)))
    settings = dataclasses.replace(rig.settings, batch_fanout_bytes=fanout_bytes,
                                   batch_fanout_chunk_bytes=16_000, batch_chunk_rows=37)
    return BatchJobs(settings, service, rig.blobs, rig.queues)


def job(job_id: str, **extra) -> bytes:
    return orjson.dumps({"id": job_id, "endpoint": "churn", "input": {"blob": "in/x.csv"},
                         **extra})


def served_by(monitoring, job_id: str) -> list[ServedBlob]:
    return [ServedBlob.decode(monitoring.get_blob_client(b.name).download_blob().readall())
            for b in monitoring.list_blobs(name_starts_with="served/churn/")
            if f"/job-{job_id}" in b.name]


def test_one_invocation_and_chunks_count_the_same_rows(rig, monitoring):
    X = sample(8, 2500, seed=4)
    rig.upload("in/x.csv", to_csv(X, CHURN))
    single = runner(rig, monitoring, fanout_bytes=0)
    assert single.handle(job("whole"), message_id="m1").status == "succeeded"
    fanned = runner(rig, monitoring, fanout_bytes=20_000)
    fanned.handle(job("parts"), message_id="m2")
    outcomes = rig.drain_chunks(fanned)
    assert len(outcomes) > 5 and {o.status for o in outcomes} == {"scored"}
    [whole] = served_by(monitoring, "whole")
    parts = served_by(monitoring, "parts")
    assert len(parts) == len(outcomes)
    entry = whole.entries[0]
    assert entry.profile.rows == 2500 and entry.profile.predicted_rows == 2500
    assert entry.model == "churn" and entry.variant == "default"
    total = merge([p.entries[0].profile for p in parts], entry.binning)
    assert total.to_dict() == entry.profile.to_dict()
    assert entry.profile.missing.tolist() == np.isnan(X).sum(axis=0).tolist()


def test_a_job_scored_again_writes_its_counts_over_not_beside(rig, monitoring):
    rig.upload("in/x.csv", to_csv(sample(8, 300, seed=6), CHURN))
    jobs = runner(rig, monitoring, fanout_bytes=0)
    jobs.handle(job("again"), message_id="m1")
    # The same job's blob written again (a delivery that scored it after a lost result).
    jobs.blob_jobs.monitor.write_job(_counts_of(monitoring, "again", jobs))
    [blob] = served_by(monitoring, "again")
    assert blob.entries[0].profile.rows == 300


def _counts_of(monitoring, job_id, jobs):
    from shared.monitoring.jobs import JobCounts

    [blob] = served_by(monitoring, job_id)
    e = blob.entries[0]
    model, _ = jobs.service.store.get("churn")
    return JobCounts("churn", e.variant, model.info, e.binning, blob.hour, blob.writer, e.profile)
