"""A blob job in one invocation: stream the input blob in chunks of ``BATCH_CHUNK_ROWS`` lines,
each parsed and predicted in units (``shared.batch.units``), stage each chunk's output rows as
a block of the output blob, and commit the block list at the end, atomically, with the job id
and model version in the blob's metadata (``shared.batch.output_blob``).

An input larger than ``BATCH_FANOUT_BYTES`` is planned instead (``shared.batch.fanout``): chunk
deliveries on any number of instances score it. An output already committed for this job (a
crash came between the commit and the job record) is not scored again: its result is rebuilt
from the output's metadata.
"""

from __future__ import annotations

import base64
import logging
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import BlobBlock, BlobClient, BlobServiceClient, ContainerClient, ContentSettings

from shared.batch.csv_layout import csv_layout
from shared.batch.fanout.planner import Planner
from shared.batch.job_metrics import JobMetrics, JobRoute
from shared.batch.lines import split_first_line
from shared.batch.messages import BlobJob
from shared.batch.output import writer_for
from shared.batch.output_blob import MAX_BLOCKS, OutputMetadata, read_committed
from shared.batch.ranges import range_blocks
from shared.batch.records import Claim
from shared.batch.results import JobResult, ModelVersion, rate
from shared.batch.units import parse_units, score_units
from shared.batch.unseen import decode_unseen, encode_unseen, fits_metadata, unseen_summary
from shared.errors import InputNotFound, InvalidPayload, PayloadTooLarge
from shared.models.model import LoadedModel
from shared.monitoring.jobs import job_writer
from shared.settings import Settings

if TYPE_CHECKING:
    from shared.monitoring.collector import Collector

log = logging.getLogger("scorefn.batch")


@dataclass(frozen=True)
class BlobJobRun:
    """What running a blob job here did: its result (None: fanned out, chunk deliveries finish
    the job), and whether this delivery ran the model."""

    result: JobResult | None
    scored: bool


class BlobJobs:
    """Runs blob jobs in one invocation, or hands them to ``planner``."""

    def __init__(self, settings: Settings, blobs: BlobServiceClient, batch: ContainerClient,
                 planner: Planner, metrics: JobMetrics, monitor: Collector | None = None) -> None:
        self.settings = settings
        self.monitor = monitor
        self.blobs = blobs
        self.batch = batch
        self.planner = planner
        self.metrics = metrics

    def run(self, job: BlobJob, model: LoadedModel, variant: str, claim: Claim,
            started: float) -> BlobJobRun:
        """Score ``job`` here, or fan it out. The result has no variant yet."""
        info = model.info
        out = self.blobs.get_blob_client(job.output.container, job.output.blob)
        done = self._committed_result(out, job, model)
        if done is not None:
            log.info("job %s: output %s already committed; not scoring again",
                     job.identity.job_id, job.output.describe())
            return BlobJobRun(done, scored=False)
        source = self.blobs.get_blob_client(job.input.container, job.input.blob)
        try:
            props = source.get_blob_properties()
        except ResourceNotFoundError:
            raise InputNotFound(f"input blob {job.input.describe()!r} does not exist") from None
        self._check_input_size(props.size)
        if self.settings.batch_fanout_bytes and self.planner.wants(props.size):
            self.planner.plan(job, model, variant, claim, props)
            return BlobJobRun(None, scored=False)
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
        counts = (self.monitor.for_job(job.endpoint, variant, info, claim.accepted_at,
                                       job_writer(job.identity.job_id))
                  if self.monitor is not None else None)
        scored = score_units(
            units, model, job.options, writer, self.settings, header=writer.header,
            stage=lambda index, data: blocks.append(self._stage(out, job, token, index, data)),
            progress=claim.progress, observe=counts.observe if counts is not None else None)
        version = ModelVersion.of(model)
        result = JobResult.timed(
            job.identity.job_id, "succeeded", time.perf_counter() - started, rows=scored.rows,
            output_container=job.output.container, output_blob=job.output.blob, model=version,
            id_generated=job.identity.generated,
            unseen_categories=unseen_summary(unseen, lambda j: info.feature_names[j]))
        unseen_text = encode_unseen(unseen)
        metadata = OutputMetadata(job.identity.job_id, version, scored.rows, result.elapsed_ms,
                                  unseen=unseen_text if fits_metadata(unseen_text) else "")
        claim.check()  # only the lease holder commits
        out.commit_block_list(blocks, metadata=metadata.to_metadata(),
                              content_settings=ContentSettings(content_type=writer.content_type))
        self.metrics.record("ok", started, route=JobRoute(job.endpoint, variant, version),
                            rows=scored.rows, predict_ms=scored.predict_seconds * 1000)
        if counts is not None and self.monitor is not None:
            self.monitor.write_job(counts)
        return BlobJobRun(result, scored=True)

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

    @staticmethod
    def _committed_result(out: BlobClient, job: BlobJob, model: LoadedModel) -> JobResult | None:
        """The result of an earlier delivery whose output is committed, from its metadata."""
        meta = read_committed(out)
        if meta is None or meta.job_id != job.identity.job_id:
            return None
        return JobResult(
            job.identity.job_id, "succeeded", elapsed_ms=meta.elapsed_ms, rows=meta.rows,
            rows_per_second=rate(meta.rows, meta.elapsed_ms / 1000),
            output_container=job.output.container, output_blob=job.output.blob,
            model=meta.model, id_generated=job.identity.generated,
            unseen_categories=unseen_summary(decode_unseen(meta.unseen),
                                             lambda j: model.info.feature_names[j]))
