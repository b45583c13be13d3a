"""Queue-triggered batch scoring: one job per message, any input size, results exactly once.

:meth:`BatchJobs.handle` is all the queue handler calls (the app builds one runner,
``shared.app``). For each delivery it

1. decodes the message (``shared.batch.messages``) and claims the job's record
   (``shared.batch.records``: a redelivered or duplicate job is acknowledged here, a job
   whose output was committed but whose result was not sent gets its result sent, and a
   different message under an id already used fails with ``job_id_reused``);
2. resolves the endpoint to one model for the whole job (``ScoringService.resolve``);
3. runs the job: inline (``shared.batch.inline_jobs``) or from a blob
   (``shared.batch.blob_jobs``: streamed, scored in units, its output committed at once; or,
   when larger than ``BATCH_FANOUT_BYTES``, planned into chunks that deliveries on
   ``CHUNK_QUEUE_NAME`` score on any number of instances: ``shared.batch.fanout``);
4. records the result (``shared.batch.results``) in the job record, sends it to the results
   queue, marks the job done.

Permanent faults (a bad message, unknown model, bad rows, missing or too large input) end
the job: one ``failed`` result, one log line with the code (never the payload), and the
function returns normally so the message is deleted. Anything else (storage unreachable,
the job's lease held elsewhere, an unexpected error) raises: the host retries the message
and, after ``maxDequeueCount`` deliveries, moves it to ``<queue>-poison``
(:meth:`BatchJobs.handle_poison`; a chunk's delivery: ``BatchJobs.chunk_worker``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from dataclasses import dataclass
from typing import Any

from azure.storage.blob import BlobServiceClient
from azure.storage.queue import QueueServiceClient

from shared.batch.blob_jobs import BlobJobs
from shared.batch.fanout.chunk_worker import ChunkWorker
from shared.batch.fanout.completion import Completion
from shared.batch.fanout.planner import Planner
from shared.batch.inline_jobs import InlineJobs
from shared.batch.job_metrics import JobMetrics, JobRoute
from shared.batch.messages import (
    JOB_ID_RE,
    InlineJob,
    JobIdentity,
    decode_message,
    job_digest,
    job_identity,
    parse_job,
)
from shared.batch.records import LEASE_SECONDS, Claim, JobRecords
from shared.batch.results import JobError, JobResult, ModelVersion, ResultQueue, status_of
from shared.errors import InvalidPayload, ScoreError
from shared.scoring.service import ScoringService
from shared.settings import Settings

log = logging.getLogger("scorefn.batch")

BATCH_CONNECTION = "AzureWebJobsStorage"  # the queue trigger's connection (shared.app)


@dataclass
class JobOutcome:
    """What one delivery did: ``succeeded``/``failed`` (a result was sent: ``result`` is its
    message) or ``duplicate`` (acknowledged with nothing to do), ``fanned_out`` (chunks do the
    job). ``scored``: this delivery ran the model."""

    job_id: str
    status: str
    result: dict[str, Any] | None
    scored: bool


class BatchJobs:
    """Runs job messages against a scoring service, with the batch container and queues of one
    storage account; builds the batch package's parts and hands each its share."""

    def __init__(self, settings: Settings, service: ScoringService, blobs: BlobServiceClient,
                 queues: QueueServiceClient, *, lease_seconds: int = LEASE_SECONDS) -> None:
        self.settings = settings
        self.service = service
        self.blobs = blobs
        self.batch = blobs.get_container_client(settings.batch_container)
        self.records = JobRecords(self.batch, lease_seconds=lease_seconds)
        self.queues = queues
        self.results = ResultQueue(queues.get_queue_client(settings.results_queue_name))
        self.metrics = JobMetrics(service)
        completion = Completion(blobs, self.batch, self.records, self.results)
        self.planner = Planner(settings, blobs, self.batch,
                               queues.get_queue_client(settings.chunk_queue_name), service.store,
                               completion)
        self.chunk_worker = ChunkWorker(settings, blobs, self.batch, self.records, completion,
                                        self.metrics, monitor=service.monitor)
        self.inline_jobs = InlineJobs(service, self.batch, self.metrics)
        self.blob_jobs = BlobJobs(settings, blobs, self.batch, self.planner, self.metrics,
                                  monitor=service.monitor)

    def handle(self, body: bytes, *, message_id: str | None = None,
               dequeue_count: int = 1) -> JobOutcome:
        """Process one delivery of a job message (see the module docstring)."""
        doc: dict[str, Any] | None = None
        bad_message: ScoreError | None = None
        try:
            doc = decode_message(body)
        except ScoreError as exc:
            bad_message = exc
        identity = job_identity(doc, message_id)
        job_id = identity.job_id
        try:
            claim = self.records.claim(job_id, message_id=message_id,
                                       digest=hashlib.sha256(body).hexdigest(),
                                       job_digest=job_digest(doc, body))
            if claim.state == "reused":
                return self._reused(identity, claim, time.perf_counter())
            with claim:
                if claim.state in ("done", "duplicate"):
                    log.info("job %s: delivery %d acknowledged, the job is %s", job_id,
                             dequeue_count, "done" if claim.state == "done" else
                             "running under another message")
                    return JobOutcome(job_id, "duplicate", None, scored=False)
                if claim.state == "committed" and claim.result is not None:
                    log.info("job %s: output was committed earlier; sending its result", job_id)
                    return self._send_committed(claim)
                if claim.state == "fanned_out":
                    log.info("job %s: delivery %d acknowledged, the job is fanned out to chunks",
                             job_id, dequeue_count)
                    self.planner.resume(claim)
                    return JobOutcome(job_id, "duplicate", None, scored=False)
                scored = False
                started = time.perf_counter()  # the job's time, not the wait for its lease
                route: JobRoute | None = None  # where the job went, once known (for metrics)
                try:
                    if bad_message is not None:
                        raise bad_message
                    job = parse_job(doc or {}, identity, batch_container=self.settings.batch_container,
                                    allowed_containers=self.settings.batch_allowed_containers)
                    # A whole job gets one variant: routed by its key, or else by its id.
                    chosen, model, _ = self.service.resolve(job.endpoint,
                                                            key=job.key or job.identity.job_id)
                    route = JobRoute(job.endpoint, chosen.variant, ModelVersion.of(model))
                    if isinstance(job, InlineJob):
                        result = self.inline_jobs.run(job, model, chosen, started)
                        scored = True
                    else:
                        run = self.blob_jobs.run(job, model, chosen.variant, claim, started)
                        if run.result is None:  # fanned out: chunk deliveries finish the job
                            return JobOutcome(job_id, "fanned_out", None, scored=False)
                        result, scored = run.result, run.scored
                    result = dataclasses.replace(result, variant=chosen.variant)
                except ScoreError as exc:
                    # Every failed delivery is measured, a retried one too (by its code).
                    self.metrics.record(exc.code, started, route=route)
                    if not exc.permanent:
                        raise
                    result = self._failed(identity, started, JobError(exc.code, exc.message))
                    log.warning("job %s failed: %s (delivery %d)", job_id, exc.code, dequeue_count)
                except Exception:
                    self.metrics.record("internal_error", started, route=route)
                    raise
                message = result.to_json()
                claim.commit(message)
                self.results.send(message)
                claim.mark_done()
        except Exception as exc:
            code = exc.code if isinstance(exc, ScoreError) else type(exc).__name__
            log.warning("job %s: delivery %d failed (%s); the queue will retry it", job_id,
                        dequeue_count, code)
            raise
        if result.status == "succeeded":
            log.info("job %s succeeded: %d rows in %.0f ms (%s rows/s)", job_id, result.rows,
                     result.elapsed_ms, result.rows_per_second)
        return JobOutcome(job_id, result.status, message, scored=scored)

    def handle_poison(self, body: bytes, *, message_id: str | None = None) -> JobOutcome:
        """A job message the host moved to ``<queue>-poison`` after its deliveries kept failing
        (storage down for long, a worker that died or timed out each time): send the job's one
        ``failed`` result (``job_failed``), unless it finished meanwhile or is fanned out (its
        chunks finish or fail it), so that nobody waits for it forever. A job without an
        ``id`` had its id made from the first message's id, which the poison copy does not
        keep: its result carries a new generated id."""
        try:
            doc: dict[str, Any] | None = decode_message(body)
        except ScoreError:
            doc = None
        given = doc.get("id") if doc is not None else None
        identity = (JobIdentity(given, False) if isinstance(given, str) and JOB_ID_RE.match(given)
                    else job_identity(None, None))
        job_id = identity.job_id
        started = time.perf_counter()
        claim = self.records.claim(job_id, message_id=message_id,
                                   digest=hashlib.sha256(body).hexdigest(),
                                   job_digest=job_digest(doc, body))
        if claim.state == "reused":  # a poisoned copy of another job's message
            return self._reused(identity, claim, started)
        with claim:
            if claim.state in ("done", "duplicate", "fanned_out"):
                log.info("job %s: poisoned message acknowledged, the job is %s", job_id,
                         claim.state if claim.state != "duplicate" else "running elsewhere")
                return JobOutcome(job_id, "duplicate", None, scored=False)
            if claim.state == "committed" and claim.result is not None:
                return self._send_committed(claim)
            result = self._failed(identity, started, JobError(
                "job_failed",
                f"its message failed on every delivery (transient errors such as storage "
                f"unreachable, or a worker that died or timed out) and was moved to "
                f"{self.settings.score_queue_name}-poison"))
            message = result.to_json()
            claim.commit(message)
            self.results.send(message)
            claim.mark_done()
        log.warning("job %s failed: job_failed (its message was poisoned)", job_id)
        self.metrics.record("job_failed", started)
        return JobOutcome(job_id, "failed", message, scored=False)

    def _send_committed(self, claim: Claim) -> JobOutcome:
        """Send the result committed in the record before a crash, and mark the job done."""
        message = claim.result
        assert message is not None
        self.results.send(message)
        claim.mark_done()
        return JobOutcome(claim.job_id, status_of(message), message, scored=False)

    def _reused(self, identity: JobIdentity, claim: Claim, started: float) -> JobOutcome:
        """A message whose id belongs to another job (another message, with other fields,
        used it first): its one ``failed`` result. The other job's record is left alone."""
        job_id = identity.job_id
        error = InvalidPayload(
            f"job id {job_id!r} was already used by a different job (created "
            f"{claim.created or 'earlier'}, now {claim.recorded_state}); this message was not "
            f"run, and the first job's result stands: send it with a new id",
            code="job_id_reused")
        message = self._failed(identity, started, JobError(error.code, error.message)).to_json()
        self.results.send(message)
        self.metrics.record(error.code, started)
        log.warning("job %s failed: %s (a different message used this id first)", job_id,
                    error.code)
        return JobOutcome(job_id, "failed", message, scored=False)

    @staticmethod
    def _failed(identity: JobIdentity, started: float, error: JobError) -> JobResult:
        return JobResult.timed(identity.job_id, "failed", time.perf_counter() - started,
                               error=error, id_generated=identity.generated)

