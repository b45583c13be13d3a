"""An inline job: its rows travel in the message and are scored like an HTTP request body (the
HTTP payload parsers, one prediction call, the prediction log). The predictions go in the
result message when it stays under ~47 KiB, else in ``results/{id}.json`` in the batch
container (the result then names that blob).
"""

from __future__ import annotations

import dataclasses
import time

from azure.storage.blob import ContainerClient, ContentSettings

from shared.batch.job_metrics import JobMetrics, JobRoute
from shared.batch.messages import InlineJob
from shared.batch.output_blob import OutputMetadata
from shared.batch.results import JobResult, ModelVersion
from shared.models.model import LoadedModel
from shared.payloads import dumps
from shared.payloads.common import json_numbers
from shared.router import Route
from shared.scoring.service import ScoringService

RESULT_MAX_BYTES = 47 * 1024  # base64 of this still fits a 64 KiB queue message
RESULTS_PREFIX = "results/"


class InlineJobs:
    """Scores inline jobs with ``service``; large results go to ``batch``."""

    def __init__(self, service: ScoringService, batch: ContainerClient,
                 metrics: JobMetrics) -> None:
        self.service = service
        self.batch = batch
        self.metrics = metrics

    def run(self, job: InlineJob, model: LoadedModel, route: Route, started: float) -> JobResult:
        """Score ``job`` with ``model`` (chosen by ``route``); its result, without the variant."""
        scored = self.service.score_document(model, job.document, fmt="score", route=route,
                                             extra_fields=frozenset())
        # In the prediction log like an HTTP request (when the endpoint logs): the job id is
        # its request id, its key the sticky key. Blob jobs are not logged (their output is).
        self.service.log_prediction(scored, trigger="queue", request_id=job.identity.job_id,
                                    latency_ms=(time.perf_counter() - started) * 1000)
        self.service.observe(scored)  # counted by this instance, as an HTTP request's rows
        rows = int(scored.request.X.shape[0])
        version = ModelVersion.of(model)
        predictions = json_numbers(scored.predictions)  # inf is "Infinity", never null
        result = JobResult.timed(job.identity.job_id, "succeeded", time.perf_counter() - started,
                                 rows=rows, model=version, id_generated=job.identity.generated,
                                 predictions=predictions)
        if len(dumps(result.to_json())) > RESULT_MAX_BYTES:
            name = f"{RESULTS_PREFIX}{job.identity.job_id}.json"
            body = dumps({"id": job.identity.job_id, "model": version.to_json(),
                          "predictions": predictions})
            metadata = OutputMetadata(job.identity.job_id, version, rows, result.elapsed_ms)
            self.batch.get_blob_client(name).upload_blob(
                body, overwrite=True, metadata=metadata.to_metadata(),
                content_settings=ContentSettings(content_type="application/json"))
            result = dataclasses.replace(result, predictions=None, output_blob=name,
                                         output_container=self.batch.container_name)
        self.metrics.record("ok", started, route=JobRoute(job.endpoint, route.variant, version),
                            rows=rows, predict_ms=scored.predict_seconds * 1000)
        return result
