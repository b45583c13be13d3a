"""A chunk delivery (the ``%CHUNK_QUEUE_NAME%`` trigger): stream the chunk's byte range and
score it with the job's pinned model as a single-invocation job does
(``shared.batch.units``), staging each sub-block of ``BATCH_CHUNK_ROWS`` rows as a block of
the output blob under a deterministic id (``{token}-{chunk}-{sub}``: a redelivered chunk
overwrites its own blocks), then write the chunk's marker and see whether the job is complete
(``shared.batch.fanout.completion``). A chunk whose marker exists is not scored again.

A transient error raises (the host retries the chunk, then moves it to ``<queue>-poison``,
whose trigger fails the job with ``chunk_failed``: :meth:`ChunkWorker.handle_poison`). A
permanent one (a bad row, the input changed) fails the job at once. Chunks delivered after
that are acknowledged without work.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING

from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob import BlobClient, BlobServiceClient, ContainerClient

from shared.batch.csv_layout import csv_layout
from shared.batch.fanout.chunk_messages import ChunkMessage, decode_chunk, peek_job_id
from shared.batch.fanout.completion import Completion
from shared.batch.fanout.job_blobs import block_id
from shared.batch.fanout.markers import marker_exists, write_marker
from shared.batch.fanout.pinned_input import pinned_reader
from shared.batch.fanout.pinned_models import PinnedModels
from shared.batch.fanout.plan import Plan, read_plan
from shared.batch.job_metrics import JobMetrics, JobRoute
from shared.batch.output import writer_for
from shared.batch.ranges import range_blocks
from shared.batch.records import JobRecords
from shared.batch.units import ScoredOutput, parse_units, score_units
from shared.errors import InvalidPayload, JobBusy, PayloadTooLarge, ScoreError
from shared.monitoring.jobs import job_writer
from shared.payloads.common import Options
from shared.settings import Settings

if TYPE_CHECKING:
    from shared.monitoring.collector import Collector

log = logging.getLogger("scorefn.batch")

SLOT_WAIT_SECONDS = 240.0  # a chunk waiting longer for a scoring slot is retried later
CACHED_PLANS = 64  # plans kept per process (least recently used dropped)
MAX_SUB_BLOCKS = 100_000  # output blocks per chunk (the width of the block id's sub field)


@dataclass
class ChunkOutcome:
    """What one chunk delivery did: ``scored``, ``skipped`` (already scored: only the
    completion check ran), ``duplicate`` (the job is finished), ``failed`` (this chunk failed
    the job), ``invalid`` or ``orphan`` (dropped). ``finished``: this delivery sent the job's
    result."""

    job_id: str | None
    index: int | None
    status: str
    rows: int = 0
    finished: bool = False


@dataclass(frozen=True)
class ScoredChunk:
    """A chunk scored: its output, its unseen category values by feature index, and the
    ``perf_counter`` reading its work started at (after the wait for a slot)."""

    output: ScoredOutput
    unseen: dict[int, int]
    started: float


class ChunkWorker:
    """Scores the chunks of fanned-out jobs, a few at a time per process."""

    def __init__(self, settings: Settings, blobs: BlobServiceClient, batch: ContainerClient,
                 records: JobRecords, completion: Completion, metrics: JobMetrics,
                 monitor: Collector | None = None) -> None:
        self.settings = settings
        self.monitor = monitor
        self.blobs = blobs
        self.batch = batch
        self.records = records
        self.completion = completion
        self.metrics = metrics
        self.models = PinnedModels(batch, settings.max_model_mb * 1024 * 1024)
        slots = settings.batch_fanout_concurrency or (os.cpu_count() or 1)
        self._slots = threading.BoundedSemaphore(slots)
        self._lock = threading.Lock()
        self._plans: OrderedDict[str, Plan] = OrderedDict()

    def handle(self, body: bytes, *, message_id: str | None = None,
               dequeue_count: int = 1) -> ChunkOutcome:
        """Process one delivery of a chunk message; raises only for transient faults."""
        try:
            msg = decode_chunk(body)
        except ScoreError as exc:
            log.error("chunk message %s dropped: %s (job %s)", message_id, exc.code,
                      peek_job_id(body) or "unknown")
            return ChunkOutcome(peek_job_id(body), None, "invalid")
        state = self.records.state_of(msg.job_id)
        if state is None:
            log.warning("job %s: %s has no job record; dropped", msg.job_id, msg.describe())
            return ChunkOutcome(msg.job_id, msg.index, "orphan")
        if state in ("committed", "done"):
            log.info("job %s: %s acknowledged, the job is finished", msg.job_id, msg.describe())
            # "committed": whoever committed died before sending the result; send it now.
            finished = state == "committed" and self.completion.finish(
                msg.job_id, self._plan(msg.job_id), message_id)
            return ChunkOutcome(msg.job_id, msg.index, "duplicate", finished=finished)
        plan = self._plan(msg.job_id)
        if plan is None or plan.token != msg.token:
            log.warning("job %s: %s does not belong to the job's plan; dropped", msg.job_id,
                        msg.describe())
            return ChunkOutcome(msg.job_id, msg.index, "orphan")
        status, rows = "skipped", 0
        if not marker_exists(self.batch, msg.job_id, msg.index):
            try:
                scored = self._score(msg, plan)
            except ScoreError as exc:
                if not exc.permanent:
                    log.warning("job %s: %s failed (%s, delivery %d); the queue will retry it",
                                msg.job_id, msg.describe(), exc.code, dequeue_count)
                    raise
                failed = self.completion.fail(msg, plan, exc.code, exc.message, message_id)
                return ChunkOutcome(msg.job_id, msg.index, "failed" if failed else "duplicate")
            elapsed = time.perf_counter() - scored.started
            rows = scored.output.rows
            write_marker(self.batch, msg, rows=rows, blocks=scored.output.blocks,
                         elapsed=elapsed, unseen=scored.unseen)
            self.metrics.record("ok", scored.started, route=_route(plan), rows=rows,
                                predict_ms=scored.output.predict_seconds * 1000)
            log.info("job %s: %s scored, %d rows in %.0f ms", msg.job_id, msg.describe(), rows,
                     elapsed * 1000)
            status = "scored"
        finished = (self.completion.all_chunks_done(msg)
                    and self.completion.finish(msg.job_id, plan, message_id))
        return ChunkOutcome(msg.job_id, msg.index, status, rows, finished)

    def handle_poison(self, body: bytes, *, message_id: str | None = None) -> ChunkOutcome:
        """A chunk message the host moved to ``<queue>-poison`` after retries: fail its job
        (unless another delivery of the chunk scored it)."""
        try:
            msg = decode_chunk(body)
        except ScoreError as exc:
            log.error("poisoned chunk message %s dropped: %s", message_id, exc.code)
            return ChunkOutcome(peek_job_id(body), None, "invalid")
        plan = self._plan(msg.job_id)
        if plan is None or plan.token != msg.token:
            return ChunkOutcome(msg.job_id, msg.index, "orphan")
        if marker_exists(self.batch, msg.job_id, msg.index):
            finished = (self.completion.all_chunks_done(msg)
                        and self.completion.finish(msg.job_id, plan, message_id))
            return ChunkOutcome(msg.job_id, msg.index, "skipped", finished=finished)
        failed = self.completion.fail(
            msg, plan, "chunk_failed", f"its message failed on every delivery (transient errors "
            f"such as storage unreachable, or a worker that died or timed out) and was moved to "
            f"{self.settings.chunk_queue_name}-poison", message_id)
        return ChunkOutcome(msg.job_id, msg.index, "failed" if failed else "duplicate")

    def _plan(self, job_id: str) -> Plan | None:
        """The job's plan (kept per process: a plan never changes)."""
        with self._lock:
            plan = self._plans.get(job_id)
            if plan is not None:
                self._plans.move_to_end(job_id)
                return plan
        plan = read_plan(self.batch, job_id)
        if plan is None:
            return None
        with self._lock:
            self._plans[job_id] = plan
            while len(self._plans) > CACHED_PLANS:
                self._plans.popitem(last=False)
        return plan

    def _score(self, msg: ChunkMessage, plan: Plan) -> ScoredChunk:
        """Score the chunk's byte range and stage its blocks, once a scoring slot is free. A
        failure is measured (by its code) before it is raised."""
        if not self._slots.acquire(timeout=SLOT_WAIT_SECONDS):
            raise JobBusy(f"job {msg.job_id}: no free chunk slot in {SLOT_WAIT_SECONDS:.0f} s")
        started = time.perf_counter()
        try:
            unseen: dict[int, int] = {}
            output = self._score_range(msg, plan, unseen)
            return ScoredChunk(output, unseen, started)
        except Exception as exc:
            self.metrics.record(exc.code if isinstance(exc, ScoreError) else "internal_error",
                                started, route=_route(plan))
            raise
        finally:
            self._slots.release()

    def _score_range(self, msg: ChunkMessage, plan: Plan,
                     unseen: dict[int, int]) -> ScoredOutput:
        model = self.models.get(plan.model)
        schema = model.info.schema
        source = self.blobs.get_blob_client(plan.input.container, plan.input.blob)
        out = self.blobs.get_blob_client(plan.output.container, plan.output.blob)
        read = pinned_reader(source, plan.input.etag, plan.input.describe())
        stream = range_blocks(read, msg.start, msg.end)
        layout = None
        if plan.header is not None:
            layout = csv_layout(plan.header.encode("utf-8"), schema, plan.id_column)
        units = parse_units(stream, plan.chunk_rows, layout=layout,
                            feature_names=schema, id_column=plan.id_column,
                            first_line=2 if msg.index == 0 and layout is not None else 1,
                            unseen=unseen)
        writer = writer_for(plan.output.format, plan.id_column, model.info.num_outputs)
        accepted = plan.accepted_at if plan.accepted_at is not None else plan.created_at
        counts = (self.monitor.for_job(plan.endpoint, plan.variant, model.info, accepted,
                                       job_writer(msg.job_id, msg.index))
                  if self.monitor is not None else None)
        output = score_units(  # the CSV header: chunk 0's first block only
            units, model, Options(raw_score=plan.raw_score), writer, self.settings,
            header=writer.header if msg.index == 0 else b"",
            stage=lambda sub, data: self._stage(out, msg, sub, data, plan.output.container),
            observe=counts.observe if counts is not None else None)
        if counts is not None and self.monitor is not None:
            self.monitor.write_job(counts)
        return output

    @staticmethod
    def _stage(out: BlobClient, msg: ChunkMessage, sub: int, data: bytes,
               container: str) -> None:
        if sub >= MAX_SUB_BLOCKS:
            raise PayloadTooLarge("a chunk would need more than 100,000 blocks; raise "
                                  "BATCH_CHUNK_ROWS", code="input_too_large")
        try:
            out.stage_block(block_id(msg.token, msg.index, sub), data)
        except ResourceNotFoundError:
            raise InvalidPayload(f"output container {container!r} does not exist",
                                 code="output_container_not_found") from None


def _route(plan: Plan) -> JobRoute:
    return JobRoute(plan.endpoint, plan.variant, plan.model.version_ref)
