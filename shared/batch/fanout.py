"""Batch jobs larger than one instance: a planner splits the input into chunks that any number
of instances score in parallel, and exactly one delivery commits the output and sends the result.

**Planning** (the job message's delivery, holding the job record's lease; ``BatchJobs`` calls
:meth:`FanOut.plan` for a blob input over ``BATCH_FANOUT_BYTES``):

1. pins the model: the route (variant) is resolved once, the model blob's text is copied to
   ``jobs/{id}/model-{token}.txt`` and its version (ETag) recorded, so a model swapped while
   the job runs cannot mix versions in one output;
2. cuts the input into byte ranges of about ``BATCH_FANOUT_CHUNK_BYTES`` aligned to line
   starts, reading only a 64 KiB window at each cut (and the CSV header, which every chunk
   gets from the plan); the input's ETag is pinned too (a changed input fails the job with
   ``input_changed`` instead of mixing two files);
3. writes ``jobs/{id}/plan.json`` once (If-None-Match: a redelivered planner reuses it),
   sends one message per chunk not yet done to ``CHUNK_QUEUE_NAME``, and marks the job record
   ``fanned_out``. The job message is then acknowledged.

**Chunks** (:meth:`FanOut.handle_chunk`, the ``%CHUNK_QUEUE_NAME%`` trigger): stream the byte
range and score it with the pinned model as a single-invocation job does
(``shared.batch.runner.score_units``), staging each sub-block of ``BATCH_CHUNK_ROWS`` rows as a block
of the output blob under a deterministic id (``{token}-{chunk}-{sub}``: a redelivered chunk
overwrites its own blocks), then write the chunk's marker ``jobs/{id}/chunks/{chunk}``.
A chunk whose marker exists is not scored again.

**Completion**: after its marker, a chunk checks whether every marker exists (two cheap probes
first, then one listing; the last chunk to finish always sees them all). If so it takes the job
record's lease (``JobRecords.hold``): one holder at a time, and whoever holds it re-reads the
state, so only one delivery commits the block list (in input order, CSV header once, from
chunk 0) and records and sends the one result; the others find ``committed``/``done``.

**Failures**: a transient error raises (the host retries the chunk, then moves it to
``<queue>-poison``, whose trigger fails the job with ``chunk_failed``). A permanent one (a bad
row, the input changed) fails the job at once: one ``failed`` result naming the chunk and its
input byte range; no block list is ever committed, so no partial output appears (staged
blocks are discarded by Blob Storage after a week). Chunks delivered after that are
acknowledged without work.
"""

from __future__ import annotations

import base64
import logging
import os
import threading
import time
import uuid
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable

import orjson
from azure.core import MatchConditions
from azure.core.exceptions import (HttpResponseError, ResourceExistsError, ResourceModifiedError,
                                   ResourceNotFoundError)
from azure.storage.blob import BlobBlock, BlobClient, ContentSettings

from shared.batch.io import byte_ranges, csv_layout, range_blocks, read_first_line, writer_for
from shared.errors import InputNotFound, InvalidModel, InvalidPayload, JobBusy, PayloadTooLarge, ScoreError
from shared.batch.chunks import (MAX_CHUNKS, MAX_PLAN_BYTES, PLAN_KIND, ChunkMessage, block_id,
                         count_markers, decode_chunk, job_prefix, list_markers, marker_name,
                         model_copy_name, peek_job_id, plan_name, read_json, read_status)
from shared.batch.messages import BlobJob
from shared.batch.records import Claim
from shared.models.model import LoadedModel, parse_model
from shared.payloads.common import Options
from shared.storage import BlobTooLarge, read_at_most

if TYPE_CHECKING:
    from azure.storage.blob import BlobProperties

    from shared.batch.runner import BatchJobs

log = logging.getLogger("scorefn.batch")

PLAN_THREADS = 8  # parallel window reads and message sends while planning
SLOT_WAIT_SECONDS = 240.0  # a chunk waiting longer for a scoring slot is retried later
PINNED_MODELS = 4  # pinned models kept per process (least recently used dropped)
_META = "scorefn_"


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


class FanOut:
    """Plans, scores and completes fanned-out jobs for a :class:`~shared.batch.runner.BatchJobs`."""

    def __init__(self, jobs: "BatchJobs") -> None:
        self.jobs = jobs
        self.settings = jobs.settings
        self.blobs = jobs.blobs
        self.batch = jobs.batch
        self.records = jobs.records
        self.chunk_queue = jobs.queues.get_queue_client(self.settings.chunk_queue_name)
        slots = self.settings.batch_fanout_concurrency or (os.cpu_count() or 1)
        self._slots = threading.BoundedSemaphore(slots)
        self._lock = threading.Lock()
        self._plans: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._models: OrderedDict[str, LoadedModel] = OrderedDict()
        self._model_locks: dict[str, threading.Lock] = {}

    def wants(self, size: int) -> bool:
        """Whether an input of ``size`` bytes is fanned out."""
        return 0 < self.settings.batch_fanout_bytes < size

    # -- planning ----------------------------------------------------------------------------

    def plan(self, job: BlobJob, model: LoadedModel, variant: str, claim: Claim,
             props: "BlobProperties") -> dict[str, Any]:
        """Plan ``job`` (or reuse its plan), send its chunk messages, mark it ``fanned_out``;
        complete it at once if every chunk is already done. Raises permanent errors for
        inputs that cannot be planned (bad header, over the chunk limit)."""
        job_id = job.identity.job_id
        plan = read_json(self.batch, plan_name(job_id))
        if plan is None or plan.get("kind") != PLAN_KIND:
            plan = self._new_plan(job, model, variant, props)
        else:
            log.info("job %s: reusing its plan (%d chunks)", job_id, plan["chunks"])
        done = set(list_markers(self.batch, job_id))
        messages = [ChunkMessage(job_id, plan["token"], i, plan["chunks"], start, end)
                    for i, (start, end) in enumerate(plan["ranges"]) if i not in done]
        self._enqueue(messages)
        claim.fan_out({"plan": plan_name(job_id), "chunks": plan["chunks"], "token": plan["token"]})
        log.info("job %s: %s bytes fanned out in %d chunks (%d sent) to %s", job_id,
                 f"{plan['input']['size']:,}", plan["chunks"], len(messages),
                 self.settings.chunk_queue_name)
        self._finish_with(claim, plan)
        return plan

    def resume(self, claim: Claim) -> None:
        """A job message delivered again for a job already fanned out: complete the job if
        every chunk is done (its chunks do that otherwise), never plan or send again."""
        plan = read_json(self.batch, plan_name(claim.job_id))
        if plan is not None and plan.get("kind") == PLAN_KIND:
            self._finish_with(claim, plan)

    def _new_plan(self, job: BlobJob, model: LoadedModel, variant: str,
                  props: "BlobProperties") -> dict[str, Any]:
        job_id, token = job.identity.job_id, uuid.uuid4().hex[:12]
        source = self.blobs.get_blob_client(job.input.container, job.input.blob)
        etag, size = props.etag, int(props.size)
        read = _range_reader(source, etag, job.input.describe())
        pinned, text = self._pin_model(model)
        header: str | None = None
        if job.input.format == "csv":
            raw_header, data_start = read_first_line(read, size)
            csv_layout(raw_header, pinned.info.schema, job.id_column)  # fails early
            header = raw_header.decode("utf-8")
            code = "invalid_csv"
        else:
            data_start, code = 0, "invalid_json"
        with ThreadPoolExecutor(PLAN_THREADS, thread_name_prefix="scorefn-plan") as pool:
            ranges = byte_ranges(read, size, data_start, self.settings.batch_fanout_chunk_bytes,
                                 code=code, map_=pool.map)
        if len(ranges) > MAX_CHUNKS:
            raise PayloadTooLarge(f"the input would be {len(ranges):,} chunks, over {MAX_CHUNKS:,}; "
                                  f"raise BATCH_FANOUT_CHUNK_BYTES", code="input_too_large")
        self._check_output_container(job)
        copy = model_copy_name(job_id, token)
        info = pinned.info
        now = time.time()
        plan = {
            "kind": PLAN_KIND, "v": 1, "id": job_id, "token": token,
            "created": datetime.fromtimestamp(now, timezone.utc).isoformat(timespec="milliseconds"),
            "created_at": now, "endpoint": job.endpoint, "variant": variant,
            "id_generated": job.identity.generated,
            "model": {"name": info.name, "version": info.version, "path": info.path, "copy": copy},
            "input": {"container": job.input.container, "blob": job.input.blob,
                      "format": job.input.format, "etag": etag, "size": size},
            "output": {"container": job.output.container, "blob": job.output.blob,
                       "format": job.output.format},
            "id_column": job.id_column, "options": {"raw_score": job.options.raw_score},
            "header": header, "num_outputs": info.num_outputs,
            "categorical": {str(c.index): info.feature_names[c.index]
                            for c in info.schema.categorical},
            "chunk_rows": self.settings.batch_chunk_rows,
            "chunk_bytes": self.settings.batch_fanout_chunk_bytes,
            "chunks": len(ranges), "ranges": [list(r) for r in ranges],
        }
        data = orjson.dumps(plan)
        if len(data) > MAX_PLAN_BYTES:  # chunks read at most this much of it
            raise PayloadTooLarge(f"the job's plan ({len(ranges):,} chunks) would take "
                                  f"{len(data):,} bytes, over {MAX_PLAN_BYTES:,}; raise "
                                  f"BATCH_FANOUT_CHUNK_BYTES", code="input_too_large")
        self.batch.upload_blob(copy, text, overwrite=True, metadata={
            f"{_META}job_id": job_id, f"{_META}model": info.name,
            f"{_META}model_version": info.version},
            content_settings=ContentSettings(content_type="text/plain"))
        try:
            self.batch.upload_blob(plan_name(job_id), data, overwrite=False,
                                   content_settings=ContentSettings(content_type="application/json"))
        except ResourceExistsError:  # an earlier delivery's plan wins: one plan per job
            _delete_quietly(self.batch.get_blob_client(copy))
            existing = read_json(self.batch, plan_name(job_id))
            if existing is None:
                raise
            return existing
        log.info("job %s: planned %d chunks of ~%s bytes; model %s pinned at version %s",
                 job_id, len(ranges), f"{self.settings.batch_fanout_chunk_bytes:,}", info.name,
                 info.version)
        return plan

    def _pin_model(self, model: LoadedModel) -> tuple[LoadedModel, bytes]:
        """The model's blob text now, and the model it parses to (the cached one when the blob
        has not moved on since it was loaded)."""
        content = self.jobs.service.store.source.fetch(model.info.path)
        if content.etag == model.info.version:
            return model, content.data
        pinned = parse_model(content.data, name=model.info.name, path=model.info.path,
                             version=content.etag, last_modified=content.last_modified)
        return pinned, content.data

    def _check_output_container(self, job: BlobJob) -> None:
        container = self.blobs.get_container_client(job.output.container)
        if container.exists():
            return
        if job.output.container != self.settings.batch_container:
            raise InvalidPayload(f"output container {job.output.container!r} does not exist",
                                 code="output_container_not_found")
        try:
            container.create_container()
        except ResourceExistsError:
            pass

    def _enqueue(self, messages: list[ChunkMessage]) -> None:
        texts = [base64.b64encode(m.encode()).decode("ascii") for m in messages]
        if not texts:
            return
        try:
            self.chunk_queue.send_message(texts[0])
        except ResourceNotFoundError:
            try:
                self.chunk_queue.create_queue()
            except ResourceExistsError:
                pass
            self.chunk_queue.send_message(texts[0])
        with ThreadPoolExecutor(PLAN_THREADS, thread_name_prefix="scorefn-enqueue") as pool:
            list(pool.map(self.chunk_queue.send_message, texts[1:]))

    # -- chunks ------------------------------------------------------------------------------

    def handle_chunk(self, body: bytes, *, message_id: str | None = None,
                     dequeue_count: int = 1) -> ChunkOutcome:
        """Process one delivery of a chunk message; raises only for transient faults."""
        try:
            msg = decode_chunk(body)
        except ScoreError as exc:
            log.error("chunk message %s dropped: %s (job %s)", message_id, exc.code,
                      peek_job_id(body) or "unknown")
            return ChunkOutcome(peek_job_id(body), None, "invalid")
        record = self.records.read(msg.job_id)
        if record is None:
            log.warning("job %s: %s has no job record; dropped", msg.job_id, msg.describe())
            return ChunkOutcome(msg.job_id, msg.index, "orphan")
        if record.get("state") in ("committed", "done"):
            log.info("job %s: %s acknowledged, the job is finished", msg.job_id, msg.describe())
            # "committed": whoever committed died before sending the result; send it now.
            finished = record.get("state") == "committed" and self._finish(
                msg.job_id, self._plan(msg.job_id) or {}, message_id)
            return ChunkOutcome(msg.job_id, msg.index, "duplicate", finished=finished)
        plan = self._plan(msg.job_id)
        if plan is None or plan.get("token") != msg.token:
            log.warning("job %s: %s does not belong to the job's plan; dropped", msg.job_id,
                        msg.describe())
            return ChunkOutcome(msg.job_id, msg.index, "orphan")
        status, rows = "skipped", 0
        if not self.batch.get_blob_client(marker_name(msg.job_id, msg.index)).exists():
            try:
                rows, blocks, predict_seconds, unseen, started = self._score(msg, plan)
            except ScoreError as exc:
                if not exc.permanent:
                    log.warning("job %s: %s failed (%s, delivery %d); the queue will retry it",
                                msg.job_id, msg.describe(), exc.code, dequeue_count)
                    raise
                failed = self._fail(msg, plan, exc.code, exc.message, message_id)
                return ChunkOutcome(msg.job_id, msg.index, "failed" if failed else "duplicate")
            elapsed = time.perf_counter() - started
            self._write_marker(msg, rows, blocks, elapsed, unseen)
            self._record(plan, started, rows=rows, predict_seconds=predict_seconds)
            log.info("job %s: %s scored, %d rows in %.0f ms", msg.job_id, msg.describe(), rows,
                     elapsed * 1000)
            status = "scored"
        finished = self._all_done(msg) and self._finish(msg.job_id, plan, message_id)
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
        if plan is None or plan.get("token") != msg.token:
            return ChunkOutcome(msg.job_id, msg.index, "orphan")
        if self.batch.get_blob_client(marker_name(msg.job_id, msg.index)).exists():
            finished = self._all_done(msg) and self._finish(msg.job_id, plan, message_id)
            return ChunkOutcome(msg.job_id, msg.index, "skipped", finished=finished)
        failed = self._fail(msg, plan, "chunk_failed",
                            f"its message failed on every delivery (transient errors such as "
                            f"storage unreachable, or a worker that died or timed out) and was "
                            f"moved to {self.settings.chunk_queue_name}-poison", message_id)
        return ChunkOutcome(msg.job_id, msg.index, "failed" if failed else "duplicate")

    def _plan(self, job_id: str) -> dict[str, Any] | None:
        with self._lock:
            plan = self._plans.get(job_id)
            if plan is not None:
                self._plans.move_to_end(job_id)
                return plan
        plan = read_json(self.batch, plan_name(job_id))
        if plan is None or plan.get("kind") != PLAN_KIND:
            return None
        with self._lock:
            self._plans[job_id] = plan
            while len(self._plans) > 64:
                self._plans.popitem(last=False)
        return plan

    def _score(self, msg: ChunkMessage,
               plan: dict[str, Any]) -> tuple[int, int, float, dict[int, int], float]:
        """Score the chunk's byte range and stage its blocks: (rows, blocks, predict seconds,
        unseen category values by feature index, the ``perf_counter`` its work started at,
        after the wait for a slot). A failure is measured (by its code) before it is raised."""
        if not self._slots.acquire(timeout=SLOT_WAIT_SECONDS):
            raise JobBusy(f"job {msg.job_id}: no free chunk slot in {SLOT_WAIT_SECONDS:.0f} s")
        started = time.perf_counter()
        try:
            return (*self._score_range(msg, plan), started)
        except Exception as exc:
            self._record(plan, started,
                         outcome=exc.code if isinstance(exc, ScoreError) else "internal_error")
            raise
        finally:
            self._slots.release()

    def _score_range(self, msg: ChunkMessage,
                     plan: dict[str, Any]) -> tuple[int, int, float, dict[int, int]]:
        model = self._pinned_model(plan)
        schema = model.info.schema
        source_ref, output_ref = plan["input"], plan["output"]
        source = self.blobs.get_blob_client(source_ref["container"], source_ref["blob"])
        out = self.blobs.get_blob_client(output_ref["container"], output_ref["blob"])
        where = f"{source_ref['container']}/{source_ref['blob']}"
        stream = range_blocks(_range_reader(source, source_ref["etag"], where), msg.start, msg.end)
        layout = None
        if plan["header"] is not None:
            layout = csv_layout(plan["header"].encode("utf-8"), schema, plan["id_column"])
        from shared.batch.runner import parse_units, score_units

        unseen: dict[int, int] = {}
        units = parse_units(stream, plan["chunk_rows"], layout=layout,
                            feature_names=schema, id_column=plan["id_column"],
                            first_line=2 if msg.index == 0 and layout is not None else 1,
                            unseen=unseen)
        writer = writer_for(output_ref["format"], plan["id_column"], model.info.num_outputs)
        options = Options(raw_score=bool(plan["options"].get("raw_score")))
        rows, blocks, predict_seconds = score_units(  # the CSV header: chunk 0's first block only
            units, model, options, writer, self.settings,
            header=writer.header if msg.index == 0 else b"",
            stage=lambda sub, data: self._stage(out, msg, sub, data, output_ref["container"]))
        return rows, blocks, predict_seconds, unseen

    def _stage(self, out: BlobClient, msg: ChunkMessage, sub: int, data: bytes,
               container: str) -> None:
        if sub >= 100_000:
            raise PayloadTooLarge("a chunk would need more than 100,000 blocks; raise "
                                  "BATCH_CHUNK_ROWS", code="input_too_large")
        try:
            out.stage_block(block_id(msg.token, msg.index, sub), data)
        except ResourceNotFoundError:
            raise InvalidPayload(f"output container {container!r} does not exist",
                                 code="output_container_not_found") from None

    def _pinned_model(self, plan: dict[str, Any]) -> LoadedModel:
        """The job's pinned model, parsed from its job-scoped copy once per process (never the
        live model blob, which may have moved on)."""
        ref = plan["model"]
        key = ref["copy"]
        with self._lock:
            model = self._models.get(key)
            if model is not None:
                self._models.move_to_end(key)
                return model
            lock = self._model_locks.setdefault(key, threading.Lock())
        with lock:  # one download per process, however many chunks ask at once
            with self._lock:
                model = self._models.get(key)
            if model is not None:
                return model
            try:
                data = read_at_most(self.batch.get_blob_client(key),
                                    self.settings.max_model_mb * 1024 * 1024)
            except ResourceNotFoundError:
                raise InvalidPayload(f"the job's pinned model copy {key!r} is missing",
                                     code="pinned_model_missing") from None
            except BlobTooLarge as exc:
                raise InvalidModel(f"the job's pinned model copy: {exc}") from None
            model = parse_model(data, name=ref["name"], path=ref["path"], version=ref["version"],
                                last_modified=None)
            with self._lock:
                self._models[key] = model
                self._model_locks.pop(key, None)
                while len(self._models) > PINNED_MODELS:
                    self._models.popitem(last=False)
        return model

    def _write_marker(self, msg: ChunkMessage, rows: int, blocks: int, elapsed: float,
                      unseen: dict[int, int] | None = None) -> None:
        meta = {"token": msg.token, "rows": str(rows), "blocks": str(blocks),
                "elapsed_ms": f"{elapsed * 1000:.1f}"}
        extra: dict[str, Any] = {}
        if unseen:
            from shared.batch.runner import MAX_UNSEEN_METADATA, encode_unseen

            text = encode_unseen(unseen)
            meta["unseen"] = text if len(text) <= MAX_UNSEEN_METADATA else "body"
            extra["unseen"] = text
        body = orjson.dumps({"chunk": msg.index, "start": msg.start, "end": msg.end, **meta,
                             **extra})
        self.batch.upload_blob(marker_name(msg.job_id, msg.index), body, overwrite=True,
                               metadata=meta,
                               content_settings=ContentSettings(content_type="application/json"))

    def _record(self, plan: dict[str, Any], started: float, *, outcome: str = "ok",
                rows: int = 0, predict_seconds: float | None = None) -> None:
        """One chunk's duration (and rows, model time) in the job's metrics, by outcome."""
        telemetry = getattr(self.jobs.service, "telemetry", None)
        if telemetry is None:
            return
        attrs = {"trigger": "queue", "outcome": outcome, "endpoint": plan["endpoint"],
                 "variant": plan["variant"], "model.name": plan["model"]["name"],
                 "model.version": plan["model"]["version"]}
        try:
            telemetry.record(attrs, duration_ms=(time.perf_counter() - started) * 1000,
                             predict_ms=predict_seconds * 1000 if predict_seconds is not None
                             else None, rows=rows)
        except Exception:  # metrics never fail a job
            log.debug("chunk telemetry failed", exc_info=True)

    # -- completion ----------------------------------------------------------------------------

    def _all_done(self, msg: ChunkMessage) -> bool:
        """Whether every chunk has its marker. Two probes (the last chunk, the next one) rule
        most chunks out with one request each; only then the markers are listed. Sound: the
        chunk whose marker is written last lists after every other marker exists."""
        for probe in {msg.count - 1, (msg.index + 1) % msg.count} - {msg.index}:
            if not self.batch.get_blob_client(marker_name(msg.job_id, probe)).exists():
                return False
        return count_markers(self.batch, msg.job_id) >= msg.count

    def _finish(self, job_id: str, plan: dict[str, Any], message_id: str | None) -> bool:
        """Take the job's lease and complete it; False when another delivery holds it (it
        completes the job) or it is done."""
        claim, state = self.records.hold(job_id, message_id=message_id)
        if claim is None:
            log.info("job %s: complete; %s", job_id, "already finished" if state == "done"
                     else "another delivery holds it and finishes it")
            return False
        with claim:
            return self._finish_with(claim, plan)

    def _finish_with(self, claim: Claim, plan: dict[str, Any]) -> bool:
        """Holding the lease: commit the output and send the result once every chunk is done
        (or re-send a result committed before a crash). True when a result was sent here."""
        job_id = claim.job_id
        if claim.state == "done":
            return False
        if claim.state == "committed" and claim.result is not None:
            self.jobs._send(claim.result)
            claim.mark_done()
            return True
        markers = {i: m for i, m in list_markers(self.batch, job_id).items()
                   if m.token == plan["token"]}
        if len(markers) < plan["chunks"] or any(i not in markers for i in range(plan["chunks"])):
            return False
        output = plan["output"]
        out = self.blobs.get_blob_client(output["container"], output["blob"])
        rows = sum(m.rows for m in markers.values())
        elapsed = max(0.0, time.time() - float(plan["created_at"]))
        if not self._already_committed(out, plan):
            blocks = [BlobBlock(block_id=block_id(plan["token"], i, s))
                      for i in range(plan["chunks"]) for s in range(markers[i].blocks)]
            from shared.batch.runner import MAX_BLOCKS

            if len(blocks) > MAX_BLOCKS:
                result = self._result(plan, "failed", 0, elapsed, error={
                    "code": "input_too_large", "message": f"the output would need {len(blocks):,} "
                    f"blocks, over {MAX_BLOCKS:,}; raise BATCH_CHUNK_ROWS"})
                return self._conclude(claim, plan, result)
            claim.check()  # only the lease holder commits
            writer = writer_for(output["format"], plan["id_column"], plan["num_outputs"])
            out.commit_block_list(blocks, metadata={
                f"{_META}job_id": job_id, f"{_META}model": plan["model"]["name"],
                f"{_META}model_version": plan["model"]["version"], f"{_META}rows": str(rows),
                f"{_META}elapsed_ms": f"{elapsed * 1000:.1f}", f"{_META}plan": plan["token"],
                f"{_META}chunks": str(plan["chunks"])},
                content_settings=ContentSettings(content_type=writer.content_type))
        result = self._result(plan, "succeeded", rows, elapsed,
                              unseen=self._unseen(job_id, markers.values()))
        self._conclude(claim, plan, result)
        log.info("job %s succeeded: %d rows in %d chunks, %.1f s (%s rows/s)", job_id, rows,
                 plan["chunks"], elapsed, result["rows_per_second"])
        return True

    def _unseen(self, job_id: str, markers: Any) -> dict[int, int]:
        """The job's unseen category values by feature index, summed over its chunks."""
        from shared.batch.runner import decode_unseen

        total: dict[int, int] = {}
        for marker in markers:
            text = marker.unseen
            if text == "body":
                text = (read_json(self.batch, marker_name(job_id, marker.index)) or {}).get("unseen")
            for j, count in decode_unseen(text).items():
                total[j] = total.get(j, 0) + count
        return total

    @staticmethod
    def _already_committed(out: BlobClient, plan: dict[str, Any]) -> bool:
        try:
            meta = out.get_blob_properties().metadata or {}
        except ResourceNotFoundError:
            return False
        return meta.get(f"{_META}job_id") == plan["id"] and meta.get(f"{_META}plan") == plan["token"]

    def _fail(self, msg: ChunkMessage, plan: dict[str, Any], code: str, message: str,
              message_id: str | None) -> bool:
        """Fail the job because of chunk ``msg``: one ``failed`` result, nothing committed.
        False when the job had finished already (nothing to fail)."""
        claim, state = self.records.hold(msg.job_id, message_id=message_id)
        if claim is None:
            if state == "busy":  # someone else holds the job: try again later
                raise JobBusy(f"job {msg.job_id} is held by another delivery")
            return False
        with claim:
            if claim.state == "committed" and claim.result is not None:
                self.jobs._send(claim.result)
                claim.mark_done()
                return False
            where = "" if msg.index == 0 else " (line numbers count from the chunk's first line)"
            error = {"code": code, "message": f"{msg.describe()}: {message}{where}",
                     "chunk": {"index": msg.index, "count": msg.count,
                               "input_bytes": [msg.start, msg.end]}}
            elapsed = max(0.0, time.time() - float(plan["created_at"]))
            result = self._result(plan, "failed", 0, elapsed, error=error)
            result["output_blob"] = result["output_container"] = None
            self._conclude(claim, plan, result)
        log.warning("job %s failed: %s in chunk %d of %d", msg.job_id, code, msg.index, msg.count)
        return True

    def _conclude(self, claim: Claim, plan: dict[str, Any], result: dict[str, Any]) -> bool:
        claim.commit(result)
        self.jobs._send(result)
        claim.mark_done()
        prefix = f"{job_prefix(plan['id'])}model-"
        try:  # the pinned model copy is not needed any more; plan and markers stay
            for item in self.batch.list_blobs(name_starts_with=prefix):
                _delete_quietly(self.batch.get_blob_client(item.name))
        except Exception:
            log.debug("job %s: cleanup failed", plan["id"], exc_info=True)
        return True

    @staticmethod
    def _result(plan: dict[str, Any], status: str, rows: int, elapsed: float, *,
                error: dict[str, Any] | None = None,
                unseen: dict[int, int] | None = None) -> dict[str, Any]:
        result: dict[str, Any] = {
            "id": plan["id"], "status": status, "rows": rows,
            "output_blob": plan["output"]["blob"], "output_container": plan["output"]["container"],
            "model": {"name": plan["model"]["name"], "version": plan["model"]["version"]},
            "error": error, "elapsed_ms": round(elapsed * 1000, 1),
            "rows_per_second": round(rows / elapsed, 1) if elapsed > 0 and rows else None,
            "variant": plan["variant"], "chunks": plan["chunks"],
        }
        if plan.get("id_generated"):
            result["id_generated"] = True
        if unseen:
            names = plan.get("categorical") or {}
            summary = {names.get(str(j), f"feature {j}"): count
                       for j, count in sorted(unseen.items()) if count}
            if summary:
                result["unseen_categories"] = summary
        return result

    def status(self, job_id: str) -> dict[str, Any] | None:
        """The job's progress from storage (see :func:`shared.batch.chunks.read_status`)."""
        return read_status(self.batch, job_id)


def _range_reader(blob: BlobClient, etag: str, where: str) -> Callable[[int, int], bytes]:
    def read(offset: int, length: int) -> bytes:
        try:
            return blob.download_blob(offset=offset, length=length, etag=etag,
                                      match_condition=MatchConditions.IfNotModified,
                                      max_concurrency=1).readall()
        except (ResourceModifiedError, ResourceNotFoundError, HttpResponseError) as exc:
            raise _input_error(exc, where) from None
    return read


def _input_error(exc: Exception, where: str) -> Exception:
    """A permanent error for an input that changed or vanished; the original error otherwise."""
    status = getattr(exc, "status_code", None)
    if isinstance(exc, ResourceModifiedError) or status == 412:
        return InvalidPayload(f"input blob {where!r} changed while the job ran; submit the job "
                              f"again (with a new id)", code="input_changed")
    if isinstance(exc, ResourceNotFoundError) or status == 404:
        return InputNotFound(f"input blob {where!r} no longer exists")
    return exc


def _delete_quietly(blob: BlobClient) -> None:
    try:
        blob.delete_blob()
    except Exception:
        pass
