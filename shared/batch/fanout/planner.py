"""Planning a fanned-out job (the job message's delivery, holding the job record's lease; the
runner hands over a blob input over ``BATCH_FANOUT_BYTES``):

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
"""

from __future__ import annotations

import base64
import logging
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import orjson
from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import BlobServiceClient, ContainerClient, ContentSettings
from azure.storage.queue import QueueClient

from shared.batch.csv_layout import csv_layout
from shared.batch.fanout.chunk_messages import MAX_CHUNKS, ChunkMessage
from shared.batch.fanout.completion import Completion
from shared.batch.fanout.job_blobs import delete_quietly, model_copy_name, plan_name
from shared.batch.fanout.markers import list_markers
from shared.batch.fanout.pinned_input import pinned_reader
from shared.batch.fanout.plan import MAX_PLAN_BYTES, PinnedInput, PinnedModel, Plan, read_plan
from shared.batch.messages import BlobJob
from shared.batch.ranges import byte_ranges, read_first_line
from shared.batch.records import Claim
from shared.errors import InvalidPayload, PayloadTooLarge
from shared.models.model import LoadedModel, parse_model
from shared.models.store import ModelStore
from shared.settings import Settings

if TYPE_CHECKING:
    from azure.storage.blob import BlobProperties

log = logging.getLogger("scorefn.batch")

PLAN_THREADS = 8  # parallel window reads and message sends while planning
_META = "scorefn_"


@dataclass(frozen=True)
class PinnedText:
    """The model as its blob holds it now, and the model that text parses to."""

    model: LoadedModel
    text: bytes


class Planner:
    """Plans fanned-out jobs and sends their chunk messages."""

    def __init__(self, settings: Settings, blobs: BlobServiceClient, batch: ContainerClient,
                 chunk_queue: QueueClient, store: ModelStore, completion: Completion) -> None:
        self.settings = settings
        self.blobs = blobs
        self.batch = batch
        self.chunk_queue = chunk_queue
        self.store = store
        self.completion = completion

    def wants(self, size: int) -> bool:
        """Whether an input of ``size`` bytes is fanned out."""
        return 0 < self.settings.batch_fanout_bytes < size

    def plan(self, job: BlobJob, model: LoadedModel, variant: str, claim: Claim,
             props: BlobProperties) -> Plan:
        """Plan ``job`` (or reuse its plan), send its chunk messages, mark it ``fanned_out``;
        complete it at once if every chunk is already done. Raises permanent errors for
        inputs that cannot be planned (bad header, over the chunk limit)."""
        job_id = job.identity.job_id
        plan = read_plan(self.batch, job_id)
        if plan is None:
            plan = self._new_plan(job, model, variant, props, claim.accepted_at)
        else:
            log.info("job %s: reusing its plan (%d chunks)", job_id, plan.chunks)
        done = set(list_markers(self.batch, job_id))
        messages = [ChunkMessage(job_id, plan.token, i, plan.chunks, start, end)
                    for i, (start, end) in enumerate(plan.ranges) if i not in done]
        self._enqueue(messages)
        claim.fan_out(plan=plan_name(job_id), chunks=plan.chunks, token=plan.token)
        log.info("job %s: %s bytes fanned out in %d chunks (%d sent) to %s", job_id,
                 f"{plan.input.size:,}", plan.chunks, len(messages),
                 self.settings.chunk_queue_name)
        self.completion.finish_held(claim, plan)
        return plan

    def resume(self, claim: Claim) -> None:
        """A job message delivered again for a job already fanned out: complete the job if
        every chunk is done (its chunks do that otherwise), never plan or send again."""
        plan = read_plan(self.batch, claim.job_id)
        if plan is not None:
            self.completion.finish_held(claim, plan)

    def _new_plan(self, job: BlobJob, model: LoadedModel, variant: str,
                  props: BlobProperties, accepted_at: float) -> Plan:
        job_id, token = job.identity.job_id, uuid.uuid4().hex[:12]
        source = self.blobs.get_blob_client(job.input.container, job.input.blob)
        etag, size = props.etag, int(props.size)
        read = pinned_reader(source, etag, job.input.describe())
        pinned = self._pin_model(model)
        header: str | None = None
        if job.input.format == "csv":
            raw_header, data_start = read_first_line(read, size)
            csv_layout(raw_header, pinned.model.info.schema, job.id_column)  # fails early
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
        info = pinned.model.info
        now = time.time()
        plan = Plan(
            job_id=job_id, token=token,
            created=datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds"),
            created_at=now, endpoint=job.endpoint, variant=variant,
            id_generated=job.identity.generated,
            model=PinnedModel(info.name, info.version, info.path, copy),
            input=PinnedInput(job.input.container, job.input.blob, job.input.format, etag, size),
            output=job.output, id_column=job.id_column, raw_score=job.options.raw_score,
            header=header, num_outputs=info.num_outputs,
            categorical={c.index: info.feature_names[c.index] for c in info.schema.categorical},
            chunk_rows=self.settings.batch_chunk_rows,
            chunk_bytes=self.settings.batch_fanout_chunk_bytes, ranges=tuple(ranges),
            accepted_at=accepted_at)
        data = orjson.dumps(plan.to_json())
        if len(data) > MAX_PLAN_BYTES:  # chunks read at most this much of it
            raise PayloadTooLarge(f"the job's plan ({len(ranges):,} chunks) would take "
                                  f"{len(data):,} bytes, over {MAX_PLAN_BYTES:,}; raise "
                                  f"BATCH_FANOUT_CHUNK_BYTES", code="input_too_large")
        self.batch.upload_blob(copy, pinned.text, overwrite=True, metadata={
            f"{_META}job_id": job_id, f"{_META}model": info.name,
            f"{_META}model_version": info.version},
            content_settings=ContentSettings(content_type="text/plain"))
        try:
            self.batch.upload_blob(plan_name(job_id), data, overwrite=False,
                                   content_settings=ContentSettings(content_type="application/json"))
        except ResourceExistsError:  # an earlier delivery's plan wins: one plan per job
            delete_quietly(self.batch.get_blob_client(copy))
            existing = read_plan(self.batch, job_id)
            if existing is None:
                raise
            return existing
        log.info("job %s: planned %d chunks of ~%s bytes; model %s pinned at version %s",
                 job_id, len(ranges), f"{self.settings.batch_fanout_chunk_bytes:,}", info.name,
                 info.version)
        return plan

    def _pin_model(self, model: LoadedModel) -> PinnedText:
        """The model's blob text now, and the model it parses to (the cached one when the blob
        has not moved on since it was loaded)."""
        content = self.store.source.fetch(model.info.path)
        if content.etag == model.info.version:
            return PinnedText(model, content.data)
        pinned = parse_model(content.data, name=model.info.name, path=model.info.path,
                             version=content.etag, last_modified=content.last_modified)
        return PinnedText(pinned, content.data)

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
