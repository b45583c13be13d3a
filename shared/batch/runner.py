"""Queue-triggered batch scoring: one job per message, any input size, results exactly once.

:func:`handle_message` is all the queue handler calls. For each delivery it

1. decodes the message (``shared.batch.messages``) and claims the job's record
   (``shared.batch.records``: a redelivered or duplicate job is acknowledged here, a job
   whose output was committed but whose result was not sent gets its result sent, and a
   different message under an id already used fails with ``job_id_reused``);
2. resolves the endpoint to one model for the whole job (``ScoringService.model``);
3. inline jobs: parses the rows with the HTTP payload parsers and predicts them; the
   predictions go in the result message when it stays under ~47 KiB, else in
   ``results/{id}.json``;
   blob jobs: streams the input blob in chunks of ``BATCH_CHUNK_ROWS`` lines, each parsed
   and predicted in units of at most ``UNIT_ROWS`` (parsed in a background thread, ahead of
   the unit being predicted: :func:`score_units`), stages each chunk's output rows as a
   block of the output blob, and commits the block list at the end, atomically, with the job
   id and model version in the blob's metadata;
4. records the result in the job record, sends it to the results queue, marks the job done.

A blob input larger than ``BATCH_FANOUT_BYTES`` is not scored here: step 3 becomes planning,
and chunk deliveries on ``CHUNK_QUEUE_NAME`` score it on any number of instances
(``shared.batch.fanout``; :func:`handle_chunk_message`, :func:`handle_chunk_poison`).

Permanent faults (a bad message, unknown model, bad rows, missing or too large input) end
the job: one ``failed`` result, one log line with the code (never the payload), and the
function returns normally so the message is deleted. Anything else (storage unreachable,
the job's lease held elsewhere, an unexpected error) raises: the host retries the message
and, after ``maxDequeueCount`` deliveries, moves it to ``<queue>-poison``.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import queue
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Sequence, TypeVar

import numpy as np
from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import BlobBlock, BlobClient, BlobServiceClient, ContentSettings
from azure.storage.queue import QueueServiceClient

from shared.batch.io import (CsvLayout, CsvWriter, Features, Ids, JsonlWriter, as_schema, csv_layout,
                       line_chunks, max_line_bytes, parse_csv_chunk, parse_jsonl_chunk,
                       range_blocks, split_first_line, writer_for)
from shared.errors import InputNotFound, InvalidPayload, PayloadTooLarge, ScoreError
from shared.batch.messages import (JOB_ID_RE, BlobJob, InlineJob, JobIdentity, decode_message,
                           job_digest, job_identity, parse_job)
from shared.batch.records import LEASE_SECONDS, Claim, JobRecords
from shared.models.model import LoadedModel
from shared.payloads import ScoringInput, dumps
from shared.payloads.common import json_numbers
from shared.payloads.common import Options
from shared.scoring.predict import predict
from shared.router import Route
from shared.scoring.service import ScoringService
from shared.settings import Settings

log = logging.getLogger("scorefn.batch")

BATCH_CONNECTION = "AzureWebJobsStorage"  # the queue trigger's connection
RESULT_MAX_BYTES = 47 * 1024  # base64 of this still fits a 64 KiB queue message
MAX_BLOCKS = 50_000  # committed blocks per block blob
# Rows parsed and predicted at a time: chunks of BATCH_CHUNK_ROWS lines are cut into units of at
# most UNIT_ROWS (of near equal sizes), the very first one FIRST_UNIT_ROWS, so prediction starts
# after a short parse that nothing overlaps (~15 ms for 100 features) and never waits long for
# the parser; output is still staged a whole chunk per block.
UNIT_ROWS = 8192
FIRST_UNIT_ROWS = 2048
PREFETCH_UNITS = 2  # parsed units queued ahead of the one being predicted
# Unseen category counts ("j:count,...") kept in blob metadata (8 KiB in all): longer ones go
# in a chunk marker's body; an output's metadata leaves them out (then only a result rebuilt
# after a crash between commit and record lacks them).
MAX_UNSEEN_METADATA = 2048
_META = "scorefn_"
T = TypeVar("T")


@dataclass
class JobOutcome:
    """What one delivery did: ``succeeded``/``failed`` (a result was sent) or ``duplicate``
    (acknowledged with nothing to do). ``scored``: this delivery ran the model."""

    job_id: str
    status: str
    result: dict[str, Any] | None
    scored: bool


class BatchJobs:
    """Runs job messages against a scoring service, with the batch container and results
    queue of one storage account."""

    def __init__(self, settings: Settings, service: ScoringService, blobs: BlobServiceClient,
                 queues: QueueServiceClient, *, lease_seconds: int = LEASE_SECONDS) -> None:
        self.settings = settings
        self.service = service
        self.blobs = blobs
        self.batch = blobs.get_container_client(settings.batch_container)
        self.records = JobRecords(self.batch, lease_seconds=lease_seconds)
        self.queues = queues
        self.results = queues.get_queue_client(settings.results_queue_name)
        self._fanout: Any = None

    @property
    def fanout(self) -> Any:
        """The fan-out of large jobs (``shared.batch.fanout.FanOut``), built on first use."""
        if self._fanout is None:
            from shared.batch.fanout import FanOut

            self._fanout = FanOut(self)
        return self._fanout

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
                return self._reused(identity, claim, doc, time.perf_counter())
            with claim:
                if claim.state in ("done", "duplicate"):
                    log.info("job %s: delivery %d acknowledged, the job is %s", job_id,
                             dequeue_count, "done" if claim.state == "done" else
                             "running under another message")
                    return JobOutcome(job_id, "duplicate", None, scored=False)
                if claim.state == "committed" and claim.result is not None:
                    log.info("job %s: output was committed earlier; sending its result", job_id)
                    self._send(claim.result)
                    claim.mark_done()
                    return JobOutcome(job_id, claim.result["status"], claim.result, scored=False)
                if claim.state == "fanned_out":
                    log.info("job %s: delivery %d acknowledged, the job is fanned out to chunks",
                             job_id, dequeue_count)
                    self.fanout.resume(claim)
                    return JobOutcome(job_id, "duplicate", None, scored=False)
                scored = False
                started = time.perf_counter()  # the job's time, not the wait for its lease
                resolved: dict[str, Any] = {}  # the model and route, once known (for metrics)
                try:
                    if bad_message is not None:
                        raise bad_message
                    job = parse_job(doc or {}, identity, batch_container=self.settings.batch_container,
                                    allowed_containers=self.settings.batch_allowed_containers)
                    result, scored = self._run(job, claim, started, resolved)
                    if result is None:  # fanned out: chunk deliveries finish the job
                        return JobOutcome(job_id, "fanned_out", None, scored=False)
                except ScoreError as exc:
                    # Every failed delivery is measured, a retried one too (by its code).
                    self._record(doc, "failed", exc.code, started, **resolved)
                    if not exc.permanent:
                        raise
                    result = self._result(identity, "failed", started,
                                          error={"code": exc.code, "message": exc.message})
                    log.warning("job %s failed: %s (delivery %d)", job_id, exc.code, dequeue_count)
                except Exception:
                    self._record(doc, "failed", "internal_error", started, **resolved)
                    raise
                claim.commit(result)
                self._send(result)
                claim.mark_done()
        except Exception as exc:
            code = exc.code if isinstance(exc, ScoreError) else type(exc).__name__
            log.warning("job %s: delivery %d failed (%s); the queue will retry it", job_id,
                        dequeue_count, code)
            raise
        if result["status"] == "succeeded":
            log.info("job %s succeeded: %d rows in %.0f ms (%s rows/s)", job_id, result["rows"],
                     result["elapsed_ms"], result["rows_per_second"])
        return JobOutcome(job_id, result["status"], result, scored=scored)

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
            return self._reused(identity, claim, doc, started)
        with claim:
            if claim.state in ("done", "duplicate", "fanned_out"):
                log.info("job %s: poisoned message acknowledged, the job is %s", job_id,
                         claim.state if claim.state != "duplicate" else "running elsewhere")
                return JobOutcome(job_id, "duplicate", None, scored=False)
            if claim.state == "committed" and claim.result is not None:
                self._send(claim.result)
                claim.mark_done()
                return JobOutcome(job_id, claim.result["status"], claim.result, scored=False)
            result = self._result(identity, "failed", started, error={
                "code": "job_failed",
                "message": f"its message failed on every delivery (transient errors such as "
                           f"storage unreachable, or a worker that died or timed out) and was "
                           f"moved to {self.settings.score_queue_name}-poison"})
            claim.commit(result)
            self._send(result)
            claim.mark_done()
        log.warning("job %s failed: job_failed (its message was poisoned)", job_id)
        self._record(doc, "failed", "job_failed", started)
        return JobOutcome(job_id, "failed", result, scored=False)

    def _reused(self, identity: JobIdentity, claim: Claim, doc: dict[str, Any] | None,
                started: float) -> JobOutcome:
        """A message whose id belongs to another job (another message, with other fields,
        used it first): its one ``failed`` result. The other job's record is left alone."""
        job_id = identity.job_id
        state = claim.doc.get("state", "running")
        error = InvalidPayload(
            f"job id {job_id!r} was already used by a different job (created "
            f"{claim.doc.get('created', 'earlier')}, now {state}); this message was not run, "
            f"and the first job's result stands: send it with a new id", code="job_id_reused")
        result = self._result(identity, "failed", started,
                              error={"code": error.code, "message": error.message})
        self._send(result)
        self._record(doc, "failed", error.code, started)
        log.warning("job %s failed: %s (a different message used this id first)", job_id,
                    error.code)
        return JobOutcome(job_id, "failed", result, scored=False)

    # -- jobs ------------------------------------------------------------------------------

    def _run(self, job: InlineJob | BlobJob, claim: Claim, started: float,
             resolved: dict[str, Any]) -> tuple[dict[str, Any] | None, bool]:
        # A whole job gets one variant: routed by its key, or else by its id.
        route, model, _ = self.service.resolve(job.endpoint, key=job.key or job.identity.job_id)
        resolved.update(model=model, endpoint=job.endpoint, variant=route.variant)
        if isinstance(job, InlineJob):
            result, scored = self._run_inline(job, model, started, route), True
        else:
            result, scored = self._run_blob(job, model, claim, started, route.variant)
        if result is not None:
            result["variant"] = route.variant
        return result, scored

    def _run_inline(self, job: InlineJob, model: LoadedModel, started: float,
                    route: Route) -> dict[str, Any]:
        scored = self.service.score_document(model, job.document, fmt="score", route=route,
                                             extra_fields=frozenset())
        # In the prediction log like an HTTP request (when the endpoint logs): the job id is
        # its request id, its key the sticky key. Blob jobs are not logged (their output is).
        self.service.log_prediction(scored, trigger="queue", request_id=job.identity.job_id,
                                    latency_ms=(time.perf_counter() - started) * 1000)
        rows = int(scored.request.X.shape[0])
        result = self._result(job.identity, "succeeded", started, rows=rows, model=model)
        predictions = json_numbers(scored.predictions)  # inf is "Infinity", never null
        result["predictions"] = predictions
        if len(dumps(result)) > RESULT_MAX_BYTES:
            del result["predictions"]
            name = f"results/{job.identity.job_id}.json"
            body = dumps({"id": job.identity.job_id, "model": model.info.to_dict(),
                          "predictions": predictions})
            self.batch.get_blob_client(name).upload_blob(
                body, overwrite=True, metadata=self._metadata(job.identity, model, rows, result),
                content_settings=ContentSettings(content_type="application/json"))
            result.update(output_blob=name, output_container=self.settings.batch_container)
        self._record(job.document, "ok", None, started, model=model, rows=rows,
                     endpoint=job.endpoint, variant=route.variant,
                     predict_ms=scored.predict_seconds * 1000)
        return result

    def _run_blob(self, job: BlobJob, model: LoadedModel, claim: Claim,
                  started: float, variant: str) -> tuple[dict[str, Any] | None, bool]:
        """Score a blob job here, or fan it out (then the result is None)."""
        info = model.info
        out = self.blobs.get_blob_client(job.output.container, job.output.blob)
        done = self._committed_output(out, job, started, model)
        if done is not None:
            log.info("job %s: output %s already committed; not scoring again",
                     job.identity.job_id, job.output.describe())
            return done, False
        source = self.blobs.get_blob_client(job.input.container, job.input.blob)
        try:
            props = source.get_blob_properties()
        except ResourceNotFoundError:
            raise InputNotFound(f"input blob {job.input.describe()!r} does not exist") from None
        self._check_input_size(props.size)
        if self.settings.batch_fanout_bytes and self.fanout.wants(props.size):
            self.fanout.plan(job, model, variant, claim, props)
            return None, False
        # Ranges of READ_BYTES, each pinned to the version read first (a blob replaced mid-job
        # fails the delivery, and the retry reads the new one): the first unit is parsed after
        # one small GET, not the SDK's first 32 MiB.
        stream: Iterable[bytes] = range_blocks(
            lambda offset, length: source.download_blob(
                offset=offset, length=length, etag=props.etag,
                match_condition=MatchConditions.IfNotModified, max_concurrency=1).readall(),
            0, props.size)
        layout = None
        if job.input.format == "csv":
            header, stream = split_first_line(stream)
            layout = csv_layout(header, info.schema, job.id_column)
        unseen: dict[int, int] = {}
        units = parse_units(stream, self.settings.batch_chunk_rows, layout=layout,
                            feature_names=info.schema, id_column=job.id_column,
                            first_line=2 if layout is not None else 1, unseen=unseen)
        writer = writer_for(job.output.format, job.id_column, info.num_outputs)
        token = uuid.uuid4().hex[:12]  # this attempt's block ids: never mixed with another's
        blocks: list[BlobBlock] = []
        rows, _, predict_seconds = score_units(
            units, model, job.options, writer, self.settings, header=writer.header,
            stage=lambda index, data: blocks.append(self._stage(out, job, token, index, data)),
            progress=claim.progress)
        result = self._result(job.identity, "succeeded", started, rows=rows, model=model,
                              output=(job.output.container, job.output.blob))
        add_unseen(result, unseen, info.feature_names)
        metadata = self._metadata(job.identity, model, rows, result)
        if unseen and len(encode_unseen(unseen)) <= MAX_UNSEEN_METADATA:
            metadata[f"{_META}unseen"] = encode_unseen(unseen)
        claim.check()  # only the lease holder commits
        out.commit_block_list(blocks, metadata=metadata,
                              content_settings=ContentSettings(content_type=writer.content_type))
        self._record(None, "ok", None, started, model=model, rows=rows,
                     endpoint=job.endpoint, variant=variant,
                     predict_ms=predict_seconds * 1000)
        return result, True

    def _check_input_size(self, size: int) -> None:
        limit = self.settings.batch_max_input_mb * 1024 * 1024
        if size > limit:
            raise PayloadTooLarge(f"input blob is {size:,} bytes, over BATCH_MAX_INPUT_MB "
                                  f"({self.settings.batch_max_input_mb} MiB)", code="input_too_large")

    def _stage(self, out: BlobClient, job: BlobJob, token: str, index: int, data: bytes) -> BlobBlock:
        if index >= MAX_BLOCKS:
            raise PayloadTooLarge(f"the output would need more than {MAX_BLOCKS} blocks; raise "
                                  f"BATCH_CHUNK_ROWS", code="input_too_large")
        block_id = base64.b64encode(f"{token}-{index:08d}".encode()).decode()
        for attempt in range(2):
            try:
                out.stage_block(block_id, data)
                return BlobBlock(block_id=block_id)
            except ResourceNotFoundError:
                if attempt or job.output.container != self.settings.batch_container:
                    raise InvalidPayload(f"output container {job.output.container!r} does not exist",
                                         code="output_container_not_found") from None
                try:
                    self.batch.create_container()
                except ResourceExistsError:
                    pass
        raise AssertionError("unreachable")

    def _committed_output(self, out: BlobClient, job: BlobJob, started: float,
                          loaded: LoadedModel | None = None) -> dict[str, Any] | None:
        """The result of an earlier delivery whose output is committed, from its metadata."""
        try:
            meta = out.get_blob_properties().metadata or {}
        except ResourceNotFoundError:
            return None
        if meta.get(f"{_META}job_id") != job.identity.job_id:
            return None
        try:
            rows = int(meta[f"{_META}rows"])
            elapsed_ms = float(meta[f"{_META}elapsed_ms"])
            model = {"name": meta[f"{_META}model"], "version": meta[f"{_META}model_version"]}
        except (KeyError, ValueError):
            return None
        result = self._result(job.identity, "succeeded", started, rows=rows,
                              output=(job.output.container, job.output.blob))
        result.update(model=model, elapsed_ms=elapsed_ms,
                      rows_per_second=_rate(rows, elapsed_ms / 1000))
        if loaded is not None:
            add_unseen(result, decode_unseen(meta.get(f"{_META}unseen")),
                       loaded.info.feature_names)
        return result

    # -- results ---------------------------------------------------------------------------

    def _result(self, identity: JobIdentity, status: str, started: float, *, rows: int = 0,
                model: LoadedModel | None = None, output: tuple[str, str] | None = None,
                error: dict[str, str] | None = None) -> dict[str, Any]:
        elapsed = time.perf_counter() - started
        result: dict[str, Any] = {
            "id": identity.job_id, "status": status, "rows": rows,
            "output_blob": output[1] if output else None,
            "output_container": output[0] if output else None,
            "model": model.info.to_dict() if model is not None else None,
            "error": error, "elapsed_ms": round(elapsed * 1000, 1),
            "rows_per_second": _rate(rows, elapsed),
        }
        if identity.generated:
            result["id_generated"] = True
        return result

    @staticmethod
    def _metadata(identity: JobIdentity, model: LoadedModel, rows: int,
                  result: dict[str, Any]) -> dict[str, str]:
        return {f"{_META}job_id": identity.job_id, f"{_META}model": model.info.name,
                f"{_META}model_version": model.info.version, f"{_META}rows": str(rows),
                f"{_META}elapsed_ms": str(result["elapsed_ms"])}

    def _send(self, result: dict[str, Any]) -> None:
        """Put the result on the results queue, base64-encoded as the Functions host expects."""
        text = base64.b64encode(dumps(result)).decode("ascii")
        try:
            self.results.send_message(text)
        except ResourceNotFoundError:
            try:
                self.results.create_queue()
            except ResourceExistsError:
                pass
            self.results.send_message(text)

    def _record(self, doc: dict[str, Any] | None, outcome: str, code: str | None, started: float,
                *, model: LoadedModel | None = None, rows: int = 0,
                predict_ms: float | None = None, endpoint: str | None = None,
                variant: str | None = None) -> None:
        """Latency/row/error metrics for the job (best effort; low-cardinality attributes)."""
        telemetry = getattr(self.service, "telemetry", None)
        if telemetry is None:
            return
        attrs: dict[str, Any] = {"trigger": "queue", "outcome": code or outcome}
        if model is not None:
            attrs.update({"endpoint": endpoint or model.info.name, "variant": variant or "default",
                          "model.name": model.info.name, "model.version": model.info.version})
        else:
            attrs["endpoint"] = "(unresolved)"
        try:
            telemetry.record(attrs, duration_ms=(time.perf_counter() - started) * 1000,
                             predict_ms=predict_ms, rows=rows)
        except Exception:  # metrics never fail a job
            log.debug("batch telemetry failed", exc_info=True)


def add_unseen(result: dict[str, Any], unseen: dict[int, int], names: Sequence[str]) -> None:
    """Put the unseen category values' counts in a job's result (only when there are some):
    the app sees how many values were read as missing."""
    summary = unseen_summary(unseen, names)
    if summary:
        result["unseen_categories"] = summary


def _rate(rows: int, seconds: float) -> float | None:
    return round(rows / seconds, 1) if seconds > 0 and rows else None


def parse_units(stream: Iterable[bytes], chunk_rows: int, *, layout: CsvLayout | None,
                feature_names: Features, id_column: str | None, first_line: int,
                unseen: dict[int, int] | None = None
                ) -> Iterator[tuple[np.ndarray, Ids | None, bool]]:
    """The rows of a CSV (``layout``; ``stream`` after the header) or JSON Lines stream, as
    ``(X, ids, ends_block)`` per unit of at most ``UNIT_ROWS`` lines; ``ends_block`` marks
    the last unit of each chunk of ``chunk_rows`` lines (one output block).
    ``feature_names``: the model's schema (or plain names); category values the model was not
    trained on are counted in ``unseen`` (by feature index)."""
    schema = as_schema(feature_names)
    # Columns of a CSV are those of its header; a JSON Lines record may name each feature
    # and the id column (other fields are refused).
    columns = layout.columns if layout is not None else (*schema.names, id_column or "id")
    for unit in line_chunks(stream, chunk_rows, first_line=first_line, unit_rows=UNIT_ROWS,
                            first_unit_rows=FIRST_UNIT_ROWS,
                            max_line_bytes=max_line_bytes(columns),
                            code="invalid_csv" if layout is not None else "invalid_json"):
        if layout is not None:
            X, ids = parse_csv_chunk(unit, layout, unseen)
        else:
            X, ids = parse_jsonl_chunk(unit, schema, id_column, unseen)
        yield X, ids, unit.ends_block


def unseen_summary(unseen: dict[int, int], names: Sequence[str]) -> dict[str, int]:
    """Unseen category values by feature name (only features that had some), in feature
    order: what a job's result reports as ``unseen_categories``."""
    return {names[j]: count for j, count in sorted(unseen.items()) if count}


def encode_unseen(unseen: dict[int, int]) -> str:
    """Counts by feature index as ``j:count,...`` (ASCII: blob metadata)."""
    return ",".join(f"{j}:{count}" for j, count in sorted(unseen.items()) if count)


def decode_unseen(text: str | None) -> dict[int, int]:
    found: dict[int, int] = {}
    for part in (text or "").split(","):
        j, _, count = part.partition(":")
        if j.isdigit() and count.isdigit():
            found[int(j)] = found.get(int(j), 0) + int(count)
    return found


def score_units(units: Iterable[tuple[np.ndarray, Ids | None, bool]], model: LoadedModel,
                options: Options, writer: CsvWriter | JsonlWriter, settings: Settings, *,
                header: bytes, stage: Callable[[int, bytes], Any],
                progress: Callable[[int], Any] | None = None) -> tuple[int, int, float]:
    """Predict each unit as soon as it is parsed (parsing runs ahead in a background thread:
    :func:`prefetch`) and hand the output rows of each chunk, ``header`` first, to
    ``stage(index, data)`` as one block (an input without rows gives the header alone).
    Returns (rows, blocks staged, predict seconds)."""
    parts, index, rows, predict_seconds = [header], 0, 0, 0.0
    for X, ids, ends_block in prefetch(units, depth=PREFETCH_UNITS):
        start = time.perf_counter()
        predictions = predict(model, ScoringInput(X=X, options=options),
                              parallel_min_rows=settings.predict_parallel_min_rows,
                              max_threads=settings.predict_max_threads)
        predict_seconds += time.perf_counter() - start
        parts.append(writer.rows(predictions, ids))
        rows += X.shape[0]
        if progress is not None:
            progress(rows)
        if ends_block:
            data, parts = b"".join(parts), []
            if data:
                stage(index, data)
                index += 1
    data = b"".join(parts)  # the input ended inside a chunk, or had no rows (the header alone)
    if data:
        stage(index, data)
        index += 1
    return rows, index, predict_seconds


def prefetch(items: Iterable[T], depth: int = 1) -> Iterator[T]:
    """Iterate ``items`` in a background thread, ``depth`` items ahead: the next units are
    downloaded and parsed while this one is predicted (LightGBM releases the GIL). Errors
    surface here, in order; closing the iterator stops the thread."""
    slots: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    _END = object()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                slots.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def run() -> None:
        try:
            for item in items:
                if not put((item, None)):
                    return
            put((_END, None))
        except BaseException as exc:  # handed to the consumer
            put((None, exc))

    thread = threading.Thread(target=run, name="scorefn-batch-reader", daemon=True)
    thread.start()
    try:
        while True:
            item, error = slots.get()
            if error is not None:
                raise error
            if item is _END:
                return
            yield item
    finally:
        stop.set()
        thread.join(timeout=30)


_jobs: BatchJobs | None = None
_jobs_lock = threading.Lock()


def get_batch_jobs() -> BatchJobs:
    """The process-wide job runner, built on first use from the app settings."""
    global _jobs
    if _jobs is None:
        with _jobs_lock:
            if _jobs is None:
                from shared.scoring.service import get_service
                from shared.settings import resolve_connection
                from shared.storage import blob_service, queue_service

                service = get_service()
                settings = service.settings
                conn = resolve_connection(BATCH_CONNECTION)
                timeout = settings.storage_timeout_seconds
                _jobs = BatchJobs(settings, service, blob_service(conn, timeout),
                                  queue_service(conn, timeout))
    return _jobs


def reset_batch_jobs() -> None:
    """Forget the process-wide runner (tests, and the local host after settings change)."""
    global _jobs
    with _jobs_lock:
        _jobs = None


def handle_message(body: bytes, *, message_id: str | None = None,
                   dequeue_count: int = 1) -> JobOutcome:
    """Process one delivery of a queue job message; raises only for transient faults."""
    return get_batch_jobs().handle(body, message_id=message_id, dequeue_count=dequeue_count)


def handle_chunk_message(body: bytes, *, message_id: str | None = None,
                         dequeue_count: int = 1) -> Any:
    """Process one delivery of a chunk of a fanned-out job; raises only for transient faults."""
    return get_batch_jobs().fanout.handle_chunk(body, message_id=message_id,
                                                dequeue_count=dequeue_count)


def handle_job_poison(body: bytes, *, message_id: str | None = None) -> JobOutcome:
    """A job message moved to the poison queue: send its failed result."""
    return get_batch_jobs().handle_poison(body, message_id=message_id)


def handle_chunk_poison(body: bytes, *, message_id: str | None = None) -> Any:
    """A chunk message moved to the poison queue: fail its job."""
    return get_batch_jobs().fanout.handle_poison(body, message_id=message_id)
