"""The end of a fanned-out job: exactly one delivery commits the output and sends the result.

After its marker, a chunk checks whether every marker exists (two cheap probes first, then one
listing; the last chunk to finish always sees them all). If so it takes the job record's
lease (``JobRecords.hold``): one holder at a time, and whoever holds it re-reads the state, so
only one delivery commits the block list (in input order, CSV header once, from chunk 0) and
records and sends the one result; the others find ``committed``/``done``.

A permanent error in a chunk fails the job at once: one ``failed`` result naming the chunk and
its input byte range; no block list is ever committed, so no partial output appears (staged
blocks are discarded by Blob Storage after a week).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

from azure.storage.blob import BlobBlock, BlobServiceClient, ContainerClient, ContentSettings

from shared.batch.fanout.chunk_messages import ChunkMessage
from shared.batch.fanout.job_blobs import block_id, delete_quietly, marker_name, model_copy_prefix
from shared.batch.fanout.markers import Marker, count_markers, list_markers, marker_unseen
from shared.batch.fanout.plan import Plan
from shared.batch.output import content_type
from shared.batch.output_blob import MAX_BLOCKS, OutputMetadata, committed_by_plan
from shared.batch.records import Claim, JobRecords
from shared.batch.results import FailedChunk, JobError, JobResult, ResultQueue
from shared.batch.unseen import total_unseen, unseen_summary
from shared.errors import JobBusy

log = logging.getLogger("scorefn.batch")


class Completion:
    """Completes (or fails) fanned-out jobs whose output is in ``blobs`` and whose records
    and chunk markers are in ``batch``."""

    def __init__(self, blobs: BlobServiceClient, batch: ContainerClient, records: JobRecords,
                 results: ResultQueue) -> None:
        self.blobs = blobs
        self.batch = batch
        self.records = records
        self.results = results

    def all_chunks_done(self, msg: ChunkMessage) -> bool:
        """Whether every chunk has its marker. Two probes (the last chunk, the next one) rule
        most chunks out with one request each; only then the markers are listed. Sound: the
        chunk whose marker is written last lists after every other marker exists."""
        for probe in {msg.count - 1, (msg.index + 1) % msg.count} - {msg.index}:
            if not self.batch.get_blob_client(marker_name(msg.job_id, probe)).exists():
                return False
        return count_markers(self.batch, msg.job_id) >= msg.count

    def finish(self, job_id: str, plan: Plan | None, message_id: str | None) -> bool:
        """Take the job's lease and complete it; False when another delivery holds it (it
        completes the job) or it is done."""
        claim, state = self.records.hold(job_id, message_id=message_id)
        if claim is None:
            log.info("job %s: complete; %s", job_id, "already finished" if state == "done"
                     else "another delivery holds it and finishes it")
            return False
        with claim:
            return self.finish_held(claim, plan)

    def finish_held(self, claim: Claim, plan: Plan | None) -> bool:
        """Holding the lease: commit the output and send the result once every chunk is done
        (or re-send a result committed before a crash). True when a result was sent here."""
        job_id = claim.job_id
        if claim.state == "done":
            return False
        if claim.state == "committed" and claim.result is not None:
            self.results.send(claim.result)
            claim.mark_done()
            return True
        if plan is None:
            return False
        markers = {i: m for i, m in list_markers(self.batch, job_id).items()
                   if m.token == plan.token}
        if len(markers) < plan.chunks or any(i not in markers for i in range(plan.chunks)):
            return False
        out = self.blobs.get_blob_client(plan.output.container, plan.output.blob)
        rows = sum(m.rows for m in markers.values())
        elapsed = max(0.0, time.time() - float(plan.created_at))
        if not committed_by_plan(out, plan.job_id, plan.token):
            blocks = [BlobBlock(block_id=block_id(plan.token, i, s))
                      for i in range(plan.chunks) for s in range(markers[i].blocks)]
            if len(blocks) > MAX_BLOCKS:
                result = self._result(plan, "failed", 0, elapsed, error=JobError(
                    "input_too_large", f"the output would need {len(blocks):,} blocks, over "
                    f"{MAX_BLOCKS:,}; raise BATCH_CHUNK_ROWS"))
                return self._conclude(claim, plan, result)
            claim.check()  # only the lease holder commits
            metadata = OutputMetadata(job_id, plan.model.version_ref, rows, elapsed * 1000,
                                      plan=plan.token, chunks=plan.chunks)
            out.commit_block_list(blocks, metadata=metadata.to_metadata(),
                                  content_settings=ContentSettings(
                                      content_type=content_type(plan.output.format)))
        result = self._result(plan, "succeeded", rows, elapsed,
                              unseen=self._unseen(job_id, markers.values()))
        self._conclude(claim, plan, result)
        log.info("job %s succeeded: %d rows in %d chunks, %.1f s (%s rows/s)", job_id, rows,
                 plan.chunks, elapsed, result.rows_per_second)
        return True

    def fail(self, msg: ChunkMessage, plan: Plan, code: str, message: str,
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
                self.results.send(claim.result)
                claim.mark_done()
                return False
            where = "" if msg.index == 0 else " (line numbers count from the chunk's first line)"
            error = JobError(code, f"{msg.describe()}: {message}{where}",
                             FailedChunk(msg.index, msg.count, msg.start, msg.end))
            elapsed = max(0.0, time.time() - float(plan.created_at))
            result = self._result(plan, "failed", 0, elapsed, error=error, output=False)
            self._conclude(claim, plan, result)
        log.warning("job %s failed: %s in chunk %d of %d", msg.job_id, code, msg.index, msg.count)
        return True

    def _unseen(self, job_id: str, markers: Iterable[Marker]) -> dict[int, int]:
        """The job's unseen category values by feature index, summed over its chunks."""
        return total_unseen(marker_unseen(self.batch, job_id, m) for m in markers)

    def _conclude(self, claim: Claim, plan: Plan, result: JobResult) -> bool:
        message = result.to_json()
        claim.commit(message)
        self.results.send(message)
        claim.mark_done()
        try:  # the pinned model copy is not needed any more; plan and markers stay
            for item in self.batch.list_blobs(name_starts_with=model_copy_prefix(plan.job_id)):
                delete_quietly(self.batch.get_blob_client(item.name))
        except Exception:
            log.debug("job %s: cleanup failed", plan.job_id, exc_info=True)
        return True

    @staticmethod
    def _result(plan: Plan, status: str, rows: int, elapsed: float, *,
                error: JobError | None = None, unseen: dict[int, int] | None = None,
                output: bool = True) -> JobResult:
        """The job's result; ``output`` False: without the output blob (none was written)."""
        return JobResult.timed(
            plan.job_id, status, elapsed, rows=rows,
            output_container=plan.output.container if output else None,
            output_blob=plan.output.blob if output else None,
            model=plan.model.version_ref, error=error, variant=plan.variant, chunks=plan.chunks,
            id_generated=plan.id_generated,
            unseen_categories=unseen_summary(unseen or {}, plan.feature_name))
