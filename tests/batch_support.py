"""Helpers of the batch tests: a per-test rig (its own model and batch containers and queues on
the session's Azurite), reference predictions, and CSV/JSONL writers for test inputs."""

from __future__ import annotations

import base64
import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import lightgbm as lgb
import numpy as np
import orjson
import pytest

from shared.batch.runner import BatchJobs, JobOutcome
from shared.models.blob_source import BlobSource
from shared.models.store import ModelStore
from shared.scoring.service import ScoringService
from shared.settings import Settings
from tests.azurite_support import new_container, unique

MODELS = ("churn", "price", "segment")



def sample(n_features: int, n: int, seed: int = 0, missing: float = 0.05) -> np.ndarray:
    rng = np.random.default_rng(seed)
    X = rng.normal(40, 30, size=(n, n_features))
    X[rng.random(X.shape) < missing] = np.nan
    return X


def reference(demo_models, name: str, X: np.ndarray, **kwargs) -> np.ndarray:
    return lgb.Booster(model_file=str(demo_models[name].path)).predict(X, **kwargs)


def fmt(value: float) -> str:
    return "" if np.isnan(value) else repr(float(value))


def to_csv(X: np.ndarray, columns: Sequence[str], ids: Sequence[str] | None = None,
           id_column: str | None = None, id_position: int = 0) -> bytes:
    """A CSV file of ``X`` (exact reprs, NaN as an empty cell), with an id column inserted."""
    header = list(columns)
    if id_column is not None:
        header.insert(id_position, id_column)
    lines = [",".join(header)]
    for i, row in enumerate(X):
        fields = [fmt(v) for v in row]
        if ids is not None:
            fields.insert(id_position, ids[i])
        lines.append(",".join(fields))
    return ("\n".join(lines) + "\n").encode()


def to_jsonl(X: np.ndarray, columns: Sequence[str], ids: Sequence[Any] | None = None,
             id_column: str | None = None) -> bytes:
    out = []
    for i, row in enumerate(X):
        rec: dict[str, Any] = {c: float(v) for c, v in zip(columns, row) if not np.isnan(v)}
        if ids is not None:
            rec[id_column] = ids[i]
        out.append(orjson.dumps(rec))
    return b"\n".join(out) + b"\n"


def read_csv(data: bytes) -> tuple[list[str], list[list[str]]]:
    rows = list(csv.reader(io.StringIO(data.decode())))
    return rows[0], rows[1:]


def decode_result(content: str) -> dict[str, Any]:
    return orjson.loads(base64.b64decode(content))


@dataclass
class BatchRig:
    """A batch job runner on fresh containers and queues; ``env`` holds the app settings
    that name them (for the local host)."""

    azurite: Any
    blobs: Any
    queues: Any
    env: dict[str, str]
    settings: Settings
    jobs: BatchJobs
    created: list[tuple[str, str]] = field(default_factory=list)

    @property
    def batch(self):
        return self.blobs.get_container_client(self.settings.batch_container)

    @property
    def results(self):
        return self.queues.get_queue_client(self.settings.results_queue_name)

    def run(self, message: dict[str, Any] | bytes, *, message_id: str = "m-1",
            dequeue_count: int = 1) -> JobOutcome:
        body = message if isinstance(message, bytes) else orjson.dumps(message)
        return self.jobs.handle(body, message_id=message_id, dequeue_count=dequeue_count)

    @property
    def chunk_queue(self):
        return self.queues.get_queue_client(self.settings.chunk_queue_name)

    def chunk_messages(self) -> list[Any]:
        """Every chunk message now on the chunk queue, received (invisible for a minute)."""
        client, found = self.chunk_queue, []
        try:
            while True:
                batch = list(client.receive_messages(max_messages=32, visibility_timeout=60))
                if not batch:
                    return found
                found += batch
        except Exception as exc:  # no queue yet: nothing was sent
            if getattr(exc, "status_code", None) == 404:
                return found
            raise

    def run_chunk(self, message, jobs: BatchJobs | None = None, *, dequeue_count: int = 1,
                  delete: bool = True):
        """Deliver one received chunk message to the chunk handler (as the host would)."""
        outcome = (jobs or self.jobs).chunk_worker.handle(
            base64.b64decode(message.content), message_id=message.id, dequeue_count=dequeue_count)
        if delete:
            self.chunk_queue.delete_message(message)
        return outcome

    def drain_chunks(self, jobs: BatchJobs | None = None) -> list[Any]:
        """Run every chunk message on the queue (and any they lead to) until none is left."""
        outcomes = []
        while True:
            messages = self.chunk_messages()
            if not messages:
                return outcomes
            outcomes += [self.run_chunk(m, jobs) for m in messages]

    def upload(self, name: str, data: bytes, container: str | None = None) -> None:
        client = self.blobs.get_container_client(container or self.settings.batch_container)
        if not client.exists():
            new_container(self.blobs, client.container_name)
            self.created.append(("container", client.container_name))
        client.upload_blob(name, data, overwrite=True)

    def upload_model(self, name: str, booster) -> None:
        """A model trained in a test, as the blob ``{name}.txt`` of the model container (its
        endpoint is ``name``)."""
        self.blobs.get_container_client(self.settings.model_container).upload_blob(
            f"{name}.txt", booster.model_to_string().encode(), overwrite=True)

    def download(self, name: str, container: str | None = None) -> bytes:
        return self.blobs.get_blob_client(container or self.settings.batch_container,
                                          name).download_blob().readall()

    def exists(self, name: str, container: str | None = None) -> bool:
        return self.blobs.get_blob_client(container or self.settings.batch_container,
                                          name).exists()

    def sent_results(self) -> list[dict[str, Any]]:
        """Every result message now on the results queue (left in place)."""
        client = self.results
        try:
            return [decode_result(m.content) for m in client.peek_messages(max_messages=32)]
        except Exception as exc:  # no queue yet: nothing was sent
            if getattr(exc, "status_code", None) == 404:
                return []
            raise

    def cleanup(self) -> None:
        for kind, name in self.created:
            try:
                if kind == "container":
                    self.blobs.delete_container(name)
                else:
                    self.queues.delete_queue(name)
            except Exception:
                pass


def make_rig(azurite, demo_models, env: dict[str, str] | None = None, *,
             models: Sequence[str] = MODELS, lease_seconds: int = 15) -> BatchRig:
    from azure.storage.blob import BlobServiceClient
    from azure.storage.queue import QueueServiceClient

    blobs = BlobServiceClient.from_connection_string(azurite.connection_string)
    queues = QueueServiceClient.from_connection_string(azurite.connection_string)
    names = {"MODEL_CONTAINER": unique("m"), "BATCH_CONTAINER": unique("b"),
             "SCORE_QUEUE_NAME": unique("q"), "RESULTS_QUEUE_NAME": unique("r"),
             "CHUNK_QUEUE_NAME": unique("c")}
    full_env = {"AzureWebJobsStorage": azurite.connection_string, **names, **(env or {})}
    settings = Settings.from_env(full_env)
    model_container = new_container(blobs, settings.model_container)
    for name in models:
        model_container.upload_blob(f"{name}.txt", demo_models[name].path.read_bytes())
    store = ModelStore(BlobSource(model_container, 64 * 1024 * 1024), refresh_seconds=3600)
    jobs = BatchJobs(settings, ScoringService(settings, store), blobs, queues,
                     lease_seconds=lease_seconds)
    rig = BatchRig(azurite, blobs, queues, full_env, settings, jobs)
    rig.created += [("container", settings.model_container), ("container", settings.batch_container),
                    ("queue", settings.results_queue_name), ("queue", settings.score_queue_name),
                    ("queue", settings.score_queue_name + "-poison"),
                    ("queue", settings.chunk_queue_name),
                    ("queue", settings.chunk_queue_name + "-poison")]
    return rig


@pytest.fixture
def rig(azurite, demo_models):
    rig = make_rig(azurite, demo_models)
    yield rig
    rig.cleanup()


def metered(rig, settings=None):
    """A runner whose service records metrics into an in-memory reader; and a function that
    returns the attributes of every ``scorefn.request.duration`` point recorded so far."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from shared.telemetry import Telemetry

    reader = InMemoryMetricReader()
    telemetry = Telemetry(MeterProvider(metric_readers=[reader]))
    settings = settings or rig.settings
    service = ScoringService(settings, rig.jobs.service.store, telemetry=telemetry)
    jobs = BatchJobs(settings, service, rig.blobs, rig.queues)

    def durations() -> list[dict]:
        telemetry.flush()
        data = reader.get_metrics_data()
        return [dict(point.attributes)
                for rm in (data.resource_metrics if data else [])
                for sm in rm.scope_metrics for metric in sm.metrics
                if metric.name == "scorefn.request.duration"
                for point in metric.data.data_points]
    return jobs, durations
